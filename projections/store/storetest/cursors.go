package storetest

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

func normCursors(cs []store.DeviceCursor) []store.DeviceCursor {
	out := make([]store.DeviceCursor, len(cs))
	for i, c := range cs {
		c.UpdatedAt = utc(c.UpdatedAt)
		out[i] = c
	}
	return out
}

func normReads(rs []store.ReadMark) []store.ReadMark {
	out := make([]store.ReadMark, len(rs))
	for i, r := range rs {
		r.UpdatedAt = utc(r.UpdatedAt)
		out[i] = r
	}
	return out
}

func testDeviceCursors(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	u, v := g.user("u"), g.user("v")
	ux := u + "x" // u's id is a prefix of ux's
	proj := g.projection("cursors")
	cursor := func(user domain.UserID, device domain.DeviceID, epoch int32, pos int64, i int) store.DeviceCursor {
		return store.DeviceCursor{UserID: user, DeviceID: device, Epoch: epoch, Position: pos, UpdatedAt: at(i)}
	}
	cursors := func(t *testing.T, user domain.UserID, want []store.DeviceCursor) {
		t.Helper()
		got, err := s.DeviceCursors(ctx, user)
		must(t, err)
		if len(got) != len(want) || (len(got) > 0 && !reflect.DeepEqual(normCursors(got), want)) {
			t.Fatalf("DeviceCursors(%s):\n got %+v\nwant %+v", user, got, want)
		}
	}

	cursors(t, u, nil)
	first := store.Batch{
		Projection: proj,
		Positions:  map[int32]int64{0: 12},
		Cursors: []store.DeviceCursor{
			cursor(u, "web", 1, 10, 1),
			cursor(u, "phone", 1, 5, 2),
			cursor(v, "phone", 1, 3, 3),
			cursor(ux, "phone", 1, 4, 4),
			cursor(u, "ipad", 2, 0, 5),
			cursor(u, "phone", 1, 7, 6), // later wins
		},
	}
	for i := range 2 { // applying again changes nothing
		t.Run(fmt.Sprint("Apply", i+1), func(t *testing.T) {
			apply(t, s, first)
			cursors(t, u, []store.DeviceCursor{cursor(u, "ipad", 2, 0, 5), cursor(u, "phone", 1, 7, 6), cursor(u, "web", 1, 10, 1)})
			cursors(t, v, []store.DeviceCursor{cursor(v, "phone", 1, 3, 3)})
			cursors(t, ux, []store.DeviceCursor{cursor(ux, "phone", 1, 4, 4)})
			pos, err := s.Positions(ctx, proj)
			must(t, err)
			check(t, "positions", pos, first.Positions)
		})
	}

	// The store writes what it is given, also a lower position (in a new
	// epoch): the projection decides.
	apply(t, s, store.Batch{Cursors: []store.DeviceCursor{cursor(u, "web", 2, 1, 7), cursor(u, "desktop", 2, 3, 8)}})
	cursors(t, u, []store.DeviceCursor{
		cursor(u, "desktop", 2, 3, 8), cursor(u, "ipad", 2, 0, 5), cursor(u, "phone", 1, 7, 6), cursor(u, "web", 2, 1, 7),
	})
	cursors(t, v, []store.DeviceCursor{cursor(v, "phone", 1, 3, 3)})
	cursors(t, ux, []store.DeviceCursor{cursor(ux, "phone", 1, 4, 4)})
	cursors(t, g.user("nobody"), nil)
	cursors(t, u[:len(u)-1], nil) // a prefix of u's id
}

func testChannelReads(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	ch, other := g.channel("x"), g.channel("y")
	chx := ch + "x" // ch's id is a prefix of chx's
	a, b, c := g.user("a"), g.user("b"), g.user("c")
	const big = domain.MessageID(1<<63 + 7) // above MaxInt64: ids are unsigned
	mark := func(channel domain.ChannelID, user domain.UserID, seq int64, id domain.MessageID, i int) store.ReadMark {
		return store.ReadMark{ChannelID: channel, UserID: user, Seq: seq, MessageID: id, UpdatedAt: at(i)}
	}
	reads := func(t *testing.T, channel domain.ChannelID, want []store.ReadMark) {
		t.Helper()
		got, err := s.ChannelReads(ctx, channel)
		must(t, err)
		if len(got) != len(want) || (len(got) > 0 && !reflect.DeepEqual(normReads(got), want)) {
			t.Fatalf("ChannelReads(%s):\n got %+v\nwant %+v", channel, got, want)
		}
	}

	reads(t, ch, nil)
	first := store.Batch{Reads: []store.ReadMark{
		mark(ch, c, 30, 300, 1),
		mark(ch, a, 10, 100, 2),
		mark(other, a, 11, 110, 3),
		mark(chx, a, 12, 120, 4),
		mark(ch, b, 20, big, 5),
		mark(ch, a, 15, 150, 6), // later wins
	}}
	for i := range 2 { // applying again changes nothing
		t.Run(fmt.Sprint("Apply", i+1), func(t *testing.T) {
			apply(t, s, first)
			reads(t, ch, []store.ReadMark{mark(ch, a, 15, 150, 6), mark(ch, b, 20, big, 5), mark(ch, c, 30, 300, 1)})
			reads(t, other, []store.ReadMark{mark(other, a, 11, 110, 3)})
			reads(t, chx, []store.ReadMark{mark(chx, a, 12, 120, 4)})
		})
	}

	// Overwrites: the store writes what it is given, also a lower mark.
	apply(t, s, store.Batch{Reads: []store.ReadMark{mark(ch, b, 25, 250, 7), mark(ch, c, 29, 290, 8)}})
	reads(t, ch, []store.ReadMark{mark(ch, a, 15, 150, 6), mark(ch, b, 25, 250, 7), mark(ch, c, 29, 290, 8)})
	reads(t, other, []store.ReadMark{mark(other, a, 11, 110, 3)})
	reads(t, chx, []store.ReadMark{mark(chx, a, 12, 120, 4)})
	reads(t, g.channel("z"), nil)
	reads(t, ch[:len(ch)-1], nil) // a prefix of ch's id
}

func testReservePush(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	u, v := g.user("u"), g.user("v")
	const id = domain.MessageID(1<<63 + 42) // above MaxInt64: ids are unsigned
	reserve := func(t *testing.T, user domain.UserID, id domain.MessageID, i int, want bool) {
		t.Helper()
		created, err := s.ReservePush(ctx, user, id, at(i))
		must(t, err)
		if created != want {
			t.Fatalf("ReservePush(%s, %d): created=%v, want %v", user, id, created, want)
		}
	}
	reserve(t, u, id, 1, true)
	reserve(t, u, id, 2, false)
	reserve(t, u, id, 1, false) // the same call again
	// (user, message) is the key: other pairs are independent.
	reserve(t, u, id+1, 3, true)
	reserve(t, u, 7, 4, true)
	reserve(t, v, id, 5, true)
	reserve(t, u+"x", id, 6, true)
	reserve(t, u, id+1, 7, false)
	reserve(t, v, id, 8, false)
	reserve(t, u, id, 9, false)
}

func testReservePushConcurrently(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	const n = 10
	u := g.user("u")
	const id = domain.MessageID(4242)
	created := make([]bool, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			created[i], errs[i] = s.ReservePush(ctx, u, id, at(i))
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i := range n {
		must(t, errs[i])
		if created[i] {
			if winner >= 0 {
				t.Fatalf("both %d and %d created the reservation", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("no ReservePush created the reservation")
	}
	if again, err := s.ReservePush(ctx, u, id, at(n)); err != nil || again {
		t.Fatalf("ReservePush after the race: created=%v, %v; want false", again, err)
	}
}
