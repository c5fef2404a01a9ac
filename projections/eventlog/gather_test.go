package eventlog

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestGather: a consumer with Gather asks the broker to hold each fetch
// for up to its wait, until a mebibyte has gathered; one without asks for
// the first byte. Both get what is produced.
func TestGather(t *testing.T) {
	const topic = "gather"
	c, cfg := newCluster(t, topic, 1, false)
	ctx := testCtx(t)
	type asked struct{ minBytes, maxWaitMillis int32 }
	var (
		mu  sync.Mutex
		got = map[asked]bool{} // by the one consumer running
	)
	c.ControlKey(int16(kmsg.Fetch), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.FetchRequest)
		mu.Lock()
		got[asked{req.MinBytes, req.MaxWaitMillis}] = true
		mu.Unlock()
		return nil, nil, false
	})
	if err := producer(t, cfg, "").ProduceSync(ctx, rec(topic, 0, "k", "v")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for _, cc := range []struct {
		name string
		opts []kgo.Opt
		want asked
	}{
		{"prompt", Gather(0), asked{1, 200}},
		{"gathering", Gather(150 * time.Millisecond), asked{1 << 20, 150}},
	} {
		opts := append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, cc.opts...)
		cl, err := kgo.NewClient(cfg.ClientOpts(opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		fs := cl.PollRecords(ctx, 1)
		cl.Close()
		if err := fs.Err0(); err != nil || len(fs.Records()) != 1 {
			t.Fatalf("%s: %d records, %v", cc.name, len(fs.Records()), err)
		}
		mu.Lock()
		// (franz-go's first fetch of a partition asks for 1 ms.)
		delete(got, asked{1, 1})
		if len(got) != 1 || !got[cc.want] {
			t.Errorf("%s's fetches asked for %+v, want %+v", cc.name, got, cc.want)
		}
		clear(got)
		mu.Unlock()
	}
}

// BenchmarkGather appends records one at a time (a session topic's acks)
// while a consumer reads them, prompt or gathering: fetches/op is how many
// fetch requests the consumer made per record.
func BenchmarkGather(b *testing.B) {
	for _, cc := range []struct {
		name string
		opts []kgo.Opt
	}{{"prompt", Gather(0)}, {"gathering", Gather(GatherWait)}} {
		b.Run(cc.name, func(b *testing.B) {
			const topic = "gather"
			c, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.CreateTopic(topic, 1, nil); err != nil {
				b.Fatal(err)
			}
			cfg := Config{Brokers: c.ListenAddrs()}
			var fetches atomic.Int64
			c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				fetches.Add(1)
				return nil, nil, false
			})
			ctx := context.Background()
			prod, err := kgo.NewClient(cfg.ClientOpts(kgo.DefaultProduceTopic(topic))...)
			if err != nil {
				b.Fatal(err)
			}
			defer prod.Close()
			opts := append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, cc.opts...)
			cons, err := kgo.NewClient(cfg.ClientOpts(opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			defer cons.Close()
			read := make(chan int, 1)
			go func() {
				n := 0
				for n < b.N {
					n += len(cons.PollFetches(ctx).Records())
				}
				read <- n
			}()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(`{"type":"device.acked"}`)}).FirstErr(); err != nil {
					b.Fatal(err)
				}
			}
			<-read
			b.ReportMetric(float64(fetches.Load())/float64(b.N), "fetches/op")
		})
	}
}
