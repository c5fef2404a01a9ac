package pebblestore_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
	"github.com/evchat/evchat/projections/store/storetest"
)

func open(t testing.TB, dir string) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := open(t, t.TempDir())
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
		return s
	})
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	u := store.User{ID: "1", Name: "alice", PasswordHash: "h", CreatedAt: time.UnixMilli(1).UTC()}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	d := store.SendDecision{SendKey: store.SendKey{SenderID: "1", ClientMsgID: "c"}, ChannelID: "gx", MessageID: 7, TextHash: "h", Partition: 1, Offset: 2}
	if err := s.Apply(ctx, store.Batch{Decisions: []store.SendDecision{d}}); err != nil {
		t.Fatal(err)
	}
	msg := store.Message{ChannelID: "gx", Offset: 3, MessageID: 7, SenderID: "1", Text: "hi", SentAt: time.UnixMilli(3).UTC()}
	err := s.Apply(ctx, store.Batch{
		Projection: "history",
		Positions:  map[int32]int64{0: 4},
		Channels:   []domain.Channel{{ID: "gx", Kind: domain.KindGroup, CreatorID: "1", Members: []domain.UserID{"1"}}},
		Messages:   []store.Message{msg},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created, err := s.ReservePush(ctx, "1", 7, time.UnixMilli(4).UTC()); err != nil || !created {
		t.Fatalf("ReservePush: created=%v, %v", created, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.User(ctx, "1"); err == nil {
		t.Fatal("User after Close: no error")
	}

	s = open(t, dir)
	defer s.Close()
	if got, err := s.UserByName(ctx, "alice"); err != nil || got.ID != "1" {
		t.Fatalf("UserByName after reopen: %+v, %v", got, err)
	}
	if got, err := s.SendDecisions(ctx, []store.SendKey{d.SendKey}); err != nil || len(got) != 1 || got[d.SendKey] != d {
		t.Fatalf("SendDecisions after reopen: %+v, %v", got, err)
	}
	if pos, err := s.Positions(ctx, "history"); err != nil || len(pos) != 1 || pos[0] != 4 {
		t.Fatalf("Positions after reopen: %v, %v", pos, err)
	}
	if c, err := s.Channel(ctx, "gx"); err != nil || c.CreatorID != "1" {
		t.Fatalf("Channel after reopen: %+v, %v", c, err)
	}
	if ms, err := s.MessagesBefore(ctx, "gx", math.MaxInt64, 10); err != nil || len(ms) != 1 || ms[0].Text != "hi" {
		t.Fatalf("MessagesBefore after reopen: %+v, %v", ms, err)
	}
	if created, err := s.ReservePush(ctx, "1", 7, time.UnixMilli(5).UTC()); err != nil || created {
		t.Fatalf("ReservePush after reopen: created=%v, %v", created, err)
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	if s2, err := pebblestore.Open(dir, pebblestore.Options{}); err == nil {
		s2.Close()
		t.Fatal("second Open of one directory: no error")
	}
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		s := open(b, b.TempDir())
		b.Cleanup(func() { s.Close() })
		return s
	})
}
