package eventlog

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
)

// BenchmarkEmbeddedAppend appends messages from many goroutines at once, as
// the gateways' sends do, to the embedded broker with its data on disk: the
// appends per second one process's log can take, its clients connected
// over TCP or in memory (Embedded.Dial, as the node's are).
func BenchmarkEmbeddedAppend(b *testing.B) {
	for _, fsync := range []bool{false, true} {
		for _, memory := range []bool{false, true} {
			b.Run(fmt.Sprintf("fsync=%v/memory=%v", fsync, memory), func(b *testing.B) { benchmarkEmbeddedAppend(b, fsync, memory) })
		}
	}
}

func benchmarkEmbeddedAppend(b *testing.B, fsync, memory bool) {
	emb, err := StartEmbedded(b.TempDir(), 0, fsync)
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Close()
	ctx := context.Background()
	cfg := Config{Brokers: emb.Addrs()}
	if memory {
		cfg.Dial = emb.Dial
	}
	if err := EnsureTopics(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	app, err := NewAppender(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer app.Close()
	topic := cfg.Topics().Channels
	var n atomic.Int64
	b.SetParallelism(200)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			key := fmt.Sprintf("g%d", i%50)
			ev := domain.MessageSent{ChannelID: domain.ChannelID(key), MessageID: domain.MessageID(i), SenderID: "u", DeviceID: "d", ClientMsgID: "c", Text: "hello there"}
			if _, err := app.Append(ctx, topic, key, ev, domain.Meta{EventID: fmt.Sprint(i), Time: time.UnixMilli(1).UTC()}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}
