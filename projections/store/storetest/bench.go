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
//     1000, as a client opening a channel reads;
//   - Channel: the state of a group of 10 among 100, its messages written
//     since, as every send reads it;
//   - WriteInbox: Apply of 330 inbox entries (33 messages into groups of
//     10, 500 users) and a position, as the inbox projection writes at
//     2,000 msg/s; WriteInbox4000: 4,000 entries, 8 for each user, as it
//     writes when it catches up.
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
	for _, c := range []struct {
		name      string
		perBatch  int  // messages into groups of 10
		unordered bool // message ids out of the log's order
	}{
		{"WriteInbox", 33, false},      // the inbox projection keeping up at 2,000 msg/s
		{"WriteInbox4000", 400, false}, // catching up: each user with 8 entries in a batch
		// Keeping up, with a user's entries in the log out of their
		// messages' id order, as channels' fan-outs interleave.
		{"WriteInboxUnordered", 33, true},
	} {
		b.Run(c.name, func(b *testing.B) { benchWriteInbox(b, open(b), c.perBatch, c.unordered) })
	}
	b.Run("Channel", func(b *testing.B) {
		s := open(b)
		g := newIDs(b)
		ctx := context.Background()
		var chs []domain.Channel
		for i := range 100 {
			c := domain.Channel{ID: g.channel(fmt.Sprint("bench", i)), Kind: domain.KindGroup, Name: "bench", CreatorID: g.user("a"), CreatedAt: at(i)}
			for j := range 10 {
				c.Members = append(c.Members, g.user(fmt.Sprint("m", j)))
			}
			chs = append(chs, c)
		}
		if err := s.Apply(ctx, store.Batch{Channels: chs}); err != nil {
			b.Fatal(err)
		}
		ms := messages(chs[7].ID, chs[7].Members[0], 1000, func(i int) int64 { return int64(i) })
		applyMessages(b, s, ms)
		b.ReportAllocs()
		for b.Loop() {
			if c, err := s.Channel(ctx, chs[7].ID); err != nil || len(c.Members) != 10 {
				b.Fatal(c, err)
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

// benchWriteInbox applies batches of perBatch messages into groups of 10
// among 500 users, their inbox entries and a position. Unordered, the ids
// of each 64 messages in a row come in reverse order.
func benchWriteInbox(b *testing.B, s store.Store, perBatch int, unordered bool) {
	g := newIDs(b)
	ctx := context.Background()
	const users, group = 500, 10
	us := make([]domain.UserID, users)
	for i := range us {
		us[i] = g.user(fmt.Sprint("u", i))
	}
	proj := g.projection("inbox")
	var offset, id int64
	b.ReportAllocs()
	for b.Loop() {
		in := store.Batch{Projection: proj, Inbox: make([]store.InboxEntry, 0, perBatch*group)}
		for range perBatch {
			id++
			msg := id
			if unordered {
				msg = id&^63 + 64 - id&63
			}
			first := int(id*7) % users // the group's first member
			for m := range group {
				offset++
				u := us[(first+m*(users/group))%users]
				in.Inbox = append(in.Inbox, store.InboxEntry{UserID: u, Epoch: 1, Offset: offset, Message: domain.InboxMessage{
					UserID: u, ChannelID: "gbench", MessageID: domain.MessageID(msg), SenderID: us[first],
					SentAt: at(int(id)), ChannelOffset: id,
				}})
			}
		}
		in.Positions = map[int32]int64{0: offset + 1}
		if err := s.Apply(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perBatch*group), "ns/entry")
}
