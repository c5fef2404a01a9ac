package inbox

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/firstcopy"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// BenchmarkHandle is the inbox projection's stage of the hot path on the
// embedded store: one op is one inbox entry decoded, looked up (is it a
// second copy?) and stored with its index, in batches of 100 entries of
// 10 messages to groups of 10, as the projector hands them over. In
// "store", the store answers every lookup (the first SkewMargin of a run);
// in "steady", the projection's memory does.
//
//	go test -run x -bench Handle -benchmem ./projections/inbox/
func BenchmarkHandle(b *testing.B) {
	b.Run("store", func(b *testing.B) { benchmarkHandle(b, false) })
	b.Run("steady", func(b *testing.B) { benchmarkHandle(b, true) })
}

func benchmarkHandle(b *testing.B, steady bool) {
	ctx := context.Background()
	st, err := pebblestore.Open(b.TempDir(), pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const batch = 100
	topic := eventlog.Epoched("chat.inbox", epoch)
	recs := make([]*kgo.Record, 0, b.N+batch)
	for i := range b.N + batch {
		u := domain.UserID(fmt.Sprint(1000 + i%500))
		m := domain.InboxMessage{UserID: u, ChannelID: "c", MessageID: domain.MessageID(i / 10), SenderID: "s", SentAt: t0,
			ChannelOffset: int64(i / 10)}
		r, err := eventlog.Record(topic, string(u), m, domain.Meta{EventID: fmt.Sprint(i), Time: t0})
		if err != nil {
			b.Fatal(err)
		}
		r.Partition, r.Offset = 0, int64(i)
		recs = append(recs, r)
	}
	p := New(st, epoch, NewDecoded(), nil)
	if steady {
		p.withClock(func() time.Time { return t0.Add(-2 * firstcopy.SkewMargin) }, firstcopy.Max)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		rs := recs[i : i+batch]
		bt := store.Batch{Projection: eventlog.Epoched(Name, epoch), Positions: map[int32]int64{0: rs[len(rs)-1].Offset + 1}}
		if err := p.Handle(ctx, 0, rs, &bt); err != nil {
			b.Fatal(err)
		}
		if err := st.Apply(ctx, bt); err != nil {
			b.Fatal(err)
		}
	}
}
