package eventlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
)

// TestKeyEnd appends to many keys and checks that KeyEnd names the
// partition each append went to and the offset just past it: a gateway's
// replies reader starts its address's partition there.
func TestKeyEnd(t *testing.T) {
	emb, err := StartEmbedded("", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := Config{Brokers: emb.Addrs(), Partitions: 5}
	if err := EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	app, err := NewAppender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	cl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := cfg.Topics().Channels
	seen := map[int32]bool{}
	for i := range 20 {
		key := fmt.Sprintf("g%d", i)
		ev := domain.MessageSent{ChannelID: domain.ChannelID(key), MessageID: domain.MessageID(i + 1), SenderID: "u", DeviceID: "d", ClientMsgID: "c", Text: "hi"}
		pos, err := app.Append(ctx, topic, key, ev, domain.Meta{EventID: fmt.Sprint(i + 1), Time: time.UnixMilli(1).UTC()})
		if err != nil {
			t.Fatal(err)
		}
		end, err := KeyEnd(ctx, adm, topic, key)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Position{Partition: pos.Partition, Offset: pos.Offset + 1}); end != want {
			t.Fatalf("End(%s) = %+v after an append at %+v, want %+v", key, end, pos, want)
		}
		seen[pos.Partition] = true
	}
	if len(seen) < 2 {
		t.Fatalf("20 keys went to %d partition(s): the test compared one partition only", len(seen))
	}
}

// TestRecordHeaders: every record carries its own event's type as a
// header, though records of one type share their headers, and a record
// given one more header does not give it to the others.
func TestRecordHeaders(t *testing.T) {
	rec := func(ev domain.Event) *kgo.Record {
		t.Helper()
		r, err := Record("t", "k", ev, domain.Meta{EventID: "e", Time: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	one := func(r *kgo.Record, typ string) {
		t.Helper()
		if len(r.Headers) != 1 || r.Headers[0].Key != "type" || string(r.Headers[0].Value) != typ {
			t.Fatalf("headers %+v, want only type=%s", r.Headers, typ)
		}
	}
	in := domain.InboxMessage{UserID: "u", ChannelID: "c", MessageID: 1, SenderID: "s", SentAt: time.Now().UTC()}
	a := rec(in)
	one(a, domain.TypeInboxMessage)
	a.Headers = append(a.Headers, kgo.RecordHeader{Key: "extra", Value: []byte("x")})
	one(rec(in), domain.TypeInboxMessage)
	one(rec(domain.ChannelCreated{ChannelID: "c", Kind: domain.KindGroup, CreatorID: "u", Members: []domain.UserID{"u"}}), domain.TypeChannelCreated)
}
