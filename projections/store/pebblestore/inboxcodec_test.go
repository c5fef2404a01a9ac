package pebblestore

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

func TestInboxCodec(t *testing.T) {
	at := time.Date(2026, 11, 30, 14, 0, 0, 123456789, time.UTC)
	for _, e := range []store.InboxEntry{
		{UserID: "7", Epoch: 2, Partition: 3, Offset: 1 << 40, Message: domain.InboxMessage{
			UserID: "7", ChannelID: "g1", MessageID: 1<<64 - 1, SenderID: "8", SentAt: at, ChannelPartition: 5, ChannelOffset: 99}},
		{UserID: "7", Epoch: 1, Partition: 0, Offset: 0, Message: domain.InboxMessage{
			UserID: "other", ChannelID: "d7-8", MessageID: 1, SenderID: "7", Text: "a version-1 copy, é", SentAt: time.Unix(-5, 1).UTC()}},
	} {
		v := encodeInbox(e)
		got, err := decodeInbox(e.UserID, e.Epoch, e.Offset, v)
		if err != nil || !reflect.DeepEqual(got, e) {
			t.Errorf("round trip of %+v: %+v, %v", e, got, err)
		}
		if e.Message.Text == "" && len(v) > 64 {
			t.Errorf("a pointer entry takes %d bytes", len(v))
		}
		for n := range len(v) - 1 {
			if _, err := decodeInbox(e.UserID, e.Epoch, e.Offset, v[:n]); err == nil {
				t.Errorf("%d of %d bytes decoded", n, len(v))
			}
		}
	}
}

// TestInboxReadsJSONForm: entries stored in the JSON form, before the
// compact one, are still read, by Inbox and by InboxByMessage.
func TestInboxReadsJSONForm(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := store.InboxEntry{UserID: "7", Epoch: 1, Partition: 2, Offset: 4, Message: domain.InboxMessage{
		UserID: "7", ChannelID: "g1", MessageID: 40, SenderID: "8", Text: "copied", SentAt: time.Unix(1, 0).UTC(), ChannelOffset: 3}}
	v, err := json.Marshal(inboxRecord(old))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Set(inboxKey(old.UserID, 1, 4), v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	// The index key of the time: the message's prefix, the offset its value.
	if err := s.db.Set(inboxMsgPrefix(old.UserID, 1, 40), []byte{0, 0, 0, 0, 0, 0, 0, 4}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	next := store.InboxEntry{UserID: "7", Epoch: 1, Partition: 2, Offset: 6, Message: domain.InboxMessage{
		UserID: "7", ChannelID: "g1", MessageID: 41, SenderID: "8", SentAt: time.Unix(2, 0).UTC(), ChannelOffset: 5}}
	if err := s.Apply(ctx, store.Batch{Projection: "inbox", Inbox: []store.InboxEntry{next}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Inbox(ctx, "7", 1, -1, 10)
	if err != nil || !reflect.DeepEqual(got, []store.InboxEntry{old, next}) {
		t.Fatalf("Inbox = %+v, %v", got, err)
	}
	e, err := s.InboxByMessage(ctx, "7", 1, 40)
	if err != nil || !reflect.DeepEqual(e, old) {
		t.Fatalf("InboxByMessage = %+v, %v", e, err)
	}
	if err := s.db.Set(inboxKey(old.UserID, 1, 8), []byte{9, 9}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Inbox(ctx, "7", 1, -1, 10); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("a malformed value: %v", err)
	}
}

// TestInboxIndexBothForms: a message indexed the way a directory written
// before blind index keys holds it (one key, its value the lowest offset)
// is found by that key, and a copy indexed later under its own key is
// found instead when, and only when, its offset is lower.
func TestInboxIndexBothForms(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	entry := func(off int64) store.InboxEntry {
		return store.InboxEntry{UserID: "7", Epoch: 1, Partition: 2, Offset: off, Message: domain.InboxMessage{
			UserID: "7", ChannelID: "g1", MessageID: 40, SenderID: "8", SentAt: time.Unix(1, 0).UTC(), ChannelOffset: 3}}
	}
	old := entry(4)
	if err := s.db.Set(inboxKey(old.UserID, 1, old.Offset), encodeInbox(old), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Set(inboxMsgPrefix(old.UserID, 1, 40), []byte{0, 0, 0, 0, 0, 0, 0, 4}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	want := func(off int64) {
		t.Helper()
		e, err := s.InboxByMessage(ctx, "7", 1, 40)
		if err != nil || !reflect.DeepEqual(e, entry(off)) {
			t.Fatalf("InboxByMessage = %+v, %v; want the copy at %d", e, err, off)
		}
	}
	want(4)
	for _, c := range []struct{ apply, want int64 }{{9, 4}, {2, 2}, {3, 2}} {
		if err := s.Apply(ctx, store.Batch{Projection: "inbox", Inbox: []store.InboxEntry{entry(c.apply)}}); err != nil {
			t.Fatal(err)
		}
		want(c.want)
	}
}
