package pebblestore

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// TestLazyBatchesAfterACrash: a crash (the file system forgets every
// write not synced) takes a projection's lazy batch whole, its position
// with it, so the projection reads its records again; it never takes a
// batch that was not lazy, nor a lazy one that changes memberships, nor a
// lazy one a later synced write covers.
func TestLazyBatchesAfterACrash(t *testing.T) {
	ctx := context.Background()
	fs := vfs.NewStrictMem()
	open := func() *Store {
		t.Helper()
		s, err := Open("", Options{fs: fs}) // the root: a new directory would need its parent synced
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	crash := func(s *Store) *Store {
		t.Helper()
		fs.SetIgnoreSyncs(true) // Close's own syncs do not count
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		fs.ResetToSyncedState()
		fs.SetIgnoreSyncs(false)
		return open()
	}
	msg := func(off int64) store.Message {
		return store.Message{ChannelID: "c1", Offset: off, MessageID: domain.MessageID(100 + off), SenderID: "u1", DeviceID: "d1", ClientMsgID: "m", Text: "hi", SentAt: time.Unix(1, 0)}
	}
	apply := func(s *Store, b store.Batch) {
		t.Helper()
		if err := s.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	pos := func(s *Store, projection string) int64 {
		t.Helper()
		p, err := s.Positions(ctx, projection)
		if err != nil {
			t.Fatal(err)
		}
		return p[0]
	}
	has := func(s *Store, off int64) bool {
		t.Helper()
		ms, err := s.MessagesAfter(ctx, "c1", off-1, 1)
		if err != nil {
			t.Fatal(err)
		}
		return len(ms) == 1 && ms[0].Offset == off
	}

	s := open()
	// Synced, then lazy: the crash takes the lazy batch and its position.
	apply(s, store.Batch{Projection: "history", Positions: map[int32]int64{0: 1}, Messages: []store.Message{msg(0)}})
	apply(s, store.Batch{Projection: "history", Positions: map[int32]int64{0: 2}, Messages: []store.Message{msg(1)}, Lazy: true})
	s = crash(s)
	if p := pos(s, "history"); p != 1 || !has(s, 0) || has(s, 1) {
		t.Fatalf("after a crash: position %d, message 0 kept %v, message 1 kept %v; want 1, true, false (the lazy batch gone whole)", p, has(s, 0), has(s, 1))
	}

	// A lazy batch that changes memberships is synced all the same.
	apply(s, store.Batch{Projection: "history", Positions: map[int32]int64{0: 2}, Memberships: []store.Membership{{ChannelID: "c1", UserID: "u2", Member: true}}, Lazy: true})
	s = crash(s)
	if ch, err := s.ChannelsOf(ctx, "u2"); err != nil || len(ch) != 1 || pos(s, "history") != 2 {
		t.Fatalf("after a crash: u2 in %v (%v), position %d; want the lazy membership batch kept", ch, err, pos(s, "history"))
	}

	// A lazy batch, then another projection's synced one: the sync
	// covers the lazy batch written before it.
	apply(s, store.Batch{Projection: "history", Positions: map[int32]int64{0: 3}, Messages: []store.Message{msg(2)}, Lazy: true})
	apply(s, store.Batch{Projection: "cursors", Positions: map[int32]int64{0: 7}})
	s = crash(s)
	if p := pos(s, "history"); p != 3 || !has(s, 2) || pos(s, "cursors") != 7 {
		t.Fatalf("after a crash: history at %d (message 2 kept %v), cursors at %d; want 3, true, 7", p, has(s, 2), pos(s, "cursors"))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
