package storetest

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// Bench runs the store's benchmarks of the hot paths:
//
//   - WriteMessage: Apply of a batch of one message and a position, as the
//     history projection writes when it keeps up with the log;
//   - ReadPage50: MessagesBefore of the newest 50 messages of a channel of
//     1000, as a client opening a channel reads.
//
// open is as for Run.
func Bench(b *testing.B, open func(b *testing.B) store.Store) {
	text := strings.Repeat("lorem ipsum ", 10)
	b.Run("WriteMessage", func(b *testing.B) {
		s := open(b)
		g := newIDs(b)
		ch, sender, proj := g.channel("bench"), g.user("a"), g.projection("history")
		ctx := context.Background()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			err := s.Apply(ctx, store.Batch{
				Projection: proj,
				Positions:  map[int32]int64{0: int64(i) + 1},
				Messages: []store.Message{{
					ChannelID: ch, Offset: int64(i), MessageID: domain.MessageID(i + 1),
					SenderID: sender, DeviceID: "d", ClientMsgID: fmt.Sprint("c", i),
					Text: text, SentAt: at(i),
				}},
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ReadPage50", func(b *testing.B) {
		s := open(b)
		g := newIDs(b)
		ch := g.channel("bench")
		ms := messages(ch, g.user("a"), 1000, func(i int) int64 { return int64(i) })
		for i := range ms {
			ms[i].Text = text
		}
		applyMessages(b, s, ms)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			page, err := s.MessagesBefore(ctx, ch, math.MaxInt64, 50)
			if err != nil {
				b.Fatal(err)
			}
			if len(page) != 50 {
				b.Fatalf("page of %d messages, want 50", len(page))
			}
		}
	})
}
