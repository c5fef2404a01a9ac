package pebblestore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// TestInboxTops: the lookups that the tops answer without reading agree
// with the index, as ids arrive above and below the top, after a second
// copy, after a reopen (tops learnt from the index) and after a reset.
func TestInboxTops(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	ctx := context.Background()
	entry := func(id domain.MessageID, off int64) store.InboxEntry {
		return store.InboxEntry{UserID: "u", Epoch: 1, Offset: off, Message: domain.InboxMessage{
			UserID: "u", ChannelID: "g", MessageID: id, SenderID: "s", SentAt: time.Unix(1, 0).UTC()}}
	}
	apply := func(es ...store.InboxEntry) {
		t.Helper()
		if err := s.Apply(ctx, store.Batch{Projection: "inbox", Inbox: es}); err != nil {
			t.Fatal(err)
		}
	}
	want := func(id domain.MessageID, off int64) {
		t.Helper()
		e, err := s.InboxByMessage(ctx, "u", 1, id)
		switch {
		case off < 0 && !errors.Is(err, domain.ErrNotFound):
			t.Fatalf("message %d: %+v, %v; want not found", id, e, err)
		case off >= 0 && (err != nil || e.Offset != off):
			t.Fatalf("message %d: %+v, %v; want the entry at %d", id, e, err, off)
		}
	}
	want(5, -1)
	apply(entry(5, 1))
	want(5, 1)
	want(9, -1)
	apply(entry(9, 2))
	want(9, 2)
	apply(entry(3, 3)) // below the top: looked up, and then raised nothing
	want(3, 3)
	want(4, -1)
	apply(entry(9, 4)) // a second copy: the index keeps the first
	want(9, 2)
	apply(entry(20, 5), entry(12, 6))
	want(20, 5)
	want(12, 6)
	want(21, -1)

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	want(20, 5) // the top learnt from the index, not from Applys
	want(9, 2)
	apply(entry(9, 7))
	want(9, 2)
	apply(entry(30, 8))
	want(30, 8)

	if err := s.ResetProjection(ctx, "inbox"); err != nil {
		t.Fatal(err)
	}
	want(30, -1)
	apply(entry(30, 9))
	want(30, 9)
	want(5, -1)
	apply(entry(5, 10))
	want(5, 10)
}

// TestInboxTopsReadBeforeCommit: a top read from the index before a commit
// that raised an unknown top is not kept (it would be too low).
func TestInboxTopsReadBeforeCommit(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := inboxMsgKey("u", 1, 7, 1)
	prefix, _, _ := splitInboxMsgKey(k)
	gen := s.tops.gen
	stale, err := s.readInboxTop(prefix) // a lookup's read, begun before the commit
	if err != nil || stale != 0 {
		t.Fatalf("top of an empty index: %d, %v", stale, err)
	}
	s.raiseInboxTop(k) // indexInbox, its top unknown
	if err := s.db.Set(k, nil, nil); err != nil {
		t.Fatal(err)
	}
	s.learnInboxTop(prefix, gen, stale) // the lookup keeps what it read
	if above, err := s.aboveInboxTop(k); err != nil || above {
		t.Fatalf("message 7 after its commit: above the top %v, %v", above, err)
	}
}
