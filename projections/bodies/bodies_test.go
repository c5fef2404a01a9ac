package bodies_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/bodies"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/storetest"
)

// counting counts the store calls a Resolver makes: reads of history's
// positions, and reads of messages (a range or one).
type counting struct {
	bodies.Store
	positions, lookups atomic.Int64
}

func (c *counting) MessagesAfter(ctx context.Context, ch domain.ChannelID, after int64, limit int) ([]store.Message, error) {
	c.lookups.Add(1)
	return c.Store.MessagesAfter(ctx, ch, after, limit)
}

func (c *counting) Positions(ctx context.Context, p string) (map[int32]int64, error) {
	c.positions.Add(1)
	return c.Store.Positions(ctx, p)
}

func (c *counting) MessageByID(ctx context.Context, ch domain.ChannelID, id domain.MessageID) (store.Message, error) {
	c.lookups.Add(1)
	return c.Store.MessageByID(ctx, ch, id)
}

var sentAt = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// storeMessage has history store a message at offset of partition 2 and
// move its position past it.
func storeMessage(t *testing.T, st store.Store, id domain.MessageID, offset int64, text string) {
	t.Helper()
	err := st.Apply(context.Background(), store.Batch{
		Projection: history.Name, Positions: map[int32]int64{2: offset + 1},
		Messages: []store.Message{{ChannelID: "g1", Offset: offset, MessageID: id, SenderID: "1", DeviceID: "d",
			ClientMsgID: id.String(), Text: text, SentAt: sentAt}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// entries returns one pointer entry of message id at offset for each user.
func entries(id domain.MessageID, offset int64, users ...domain.UserID) []domain.InboxMessage {
	var ms []domain.InboxMessage
	for _, u := range users {
		ms = append(ms, domain.InboxMessage{UserID: u, ChannelID: "g1", MessageID: id, SenderID: "1",
			SentAt: sentAt, ChannelPartition: 2, ChannelOffset: offset})
	}
	return ms
}

func newResolver(t *testing.T, cfg bodies.Config) (*bodies.Resolver, *counting, store.Store) {
	t.Helper()
	st := storetest.OpenPebble(t)
	c := &counting{Store: st}
	r, err := bodies.New(cfg, c)
	if err != nil {
		t.Fatal(err)
	}
	return r, c, st
}

func TestResolveFromHistoryOncePerMessage(t *testing.T) {
	r, c, st := newResolver(t, bodies.Config{})
	storeMessage(t, st, 10, 0, "ten")
	storeMessage(t, st, 11, 1, "eleven")
	ms := append(entries(11, 1, "a", "b"), entries(10, 0, "a", "b", "c")...)
	if err := r.Resolve(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		want := map[domain.MessageID]string{10: "ten", 11: "eleven"}[m.MessageID]
		if m.Text != want {
			t.Errorf("entry of %s for %s: text %q, want %q", m.MessageID, m.UserID, m.Text, want)
		}
	}
	if n := c.lookups.Load(); n != 1 {
		t.Errorf("%d reads for 2 messages of a channel; want 1 (a range)", n)
	}
	// Now cached: no more lookups.
	ms = entries(10, 0, "d")
	if err := r.Resolve(context.Background(), ms); err != nil || ms[0].Text != "ten" {
		t.Fatalf("second Resolve: %q, %v", ms[0].Text, err)
	}
	if n := c.lookups.Load(); n != 1 {
		t.Errorf("%d reads after a cached resolve, want still 1", n)
	}
	if hits, lookups := r.Stats(); hits != 1 || lookups != 1 {
		t.Errorf("Stats = %d hits, %d reads; want 1, 1", hits, lookups)
	}
}

// TestResolveBurst: a burst of one channel's messages is read in ranges,
// not message by message; the channel's other messages in between come
// along; an entry whose message history kept at another offset (the first
// copy of its id) is looked up by id.
func TestResolveBurst(t *testing.T) {
	r, c, st := newResolver(t, bodies.Config{})
	const n = 1200
	var ms []domain.InboxMessage
	for i := range int64(n) {
		storeMessage(t, st, domain.MessageID(1000+i), i, fmt.Sprint("burst ", i))
		if i%3 != 1 { // every third is not asked for
			ms = append(ms, entries(domain.MessageID(1000+i), i, "a")...)
		}
	}
	dup := entries(1000, n+5, "b")[0] // points past where history kept it
	storeMessage(t, st, 9999, n+5, "another message at the dup's offset")
	ms = append(ms, dup)
	if err := r.Resolve(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if want := fmt.Sprint("burst ", int64(m.MessageID)-1000); m.Text != want {
			t.Fatalf("entry of %s: %q, want %q", m.MessageID, m.Text, want)
		}
	}
	// Offsets 0 to 1205, 500 a range: 3 ranges (the dup's id is in the
	// first).
	if got := c.lookups.Load(); got != 3 {
		t.Errorf("%d reads for a burst of %d entries", got, len(ms))
	}

	// Alone with a neighbour, the dup is not in the range read: by id.
	r2, err := bodies.New(bodies.Config{}, c)
	if err != nil {
		t.Fatal(err)
	}
	c.lookups.Store(0)
	ms = []domain.InboxMessage{entries(1000+n-1, n-1, "a")[0], dup}
	if err := r2.Resolve(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	if ms[0].Text != fmt.Sprint("burst ", n-1) || ms[1].Text != "burst 0" {
		t.Errorf("texts %q, %q", ms[0].Text, ms[1].Text)
	}
	if got := c.lookups.Load(); got != 2 {
		t.Errorf("%d reads; want a range and a lookup by id", got)
	}
}

func TestResolvePutAndVersionOne(t *testing.T) {
	r, c, _ := newResolver(t, bodies.Config{Wait: time.Minute})
	r.Put(20, "sent here")
	ms := entries(20, 5, "a", "b")
	old := domain.InboxMessage{UserID: "a", ChannelID: "g1", MessageID: 21, Text: "copied", ChannelPartition: 2, ChannelOffset: 6}
	ms = append(ms, old)
	if err := r.Resolve(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	if ms[0].Text != "sent here" || ms[1].Text != "sent here" || ms[2].Text != "copied" {
		t.Errorf("texts %q %q %q", ms[0].Text, ms[1].Text, ms[2].Text)
	}
	if n := c.positions.Load() + c.lookups.Load(); n != 0 {
		t.Errorf("%d store calls; the cache and a version-1 entry need none", n)
	}
}

// TestResolveWaitsForHistory: the entry is there before history has stored
// its message; Resolve waits for history, then answers.
func TestResolveWaitsForHistory(t *testing.T) {
	r, c, st := newResolver(t, bodies.Config{Wait: time.Minute})
	ms := entries(30, 7, "a", "b")
	done := make(chan error, 1)
	go func() { done <- r.Resolve(context.Background(), ms) }()
	// Resolve has read history's positions twice (it is waiting) before
	// history stores the message.
	deadline := time.Now().Add(30 * time.Second)
	for c.positions.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("Resolve never read history's positions twice")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("Resolve returned (%v) before history stored the message", err)
	default:
	}
	storeMessage(t, st, 30, 7, "late")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Resolve did not return after history stored the message")
	}
	if ms[0].Text != "late" || ms[1].Text != "late" {
		t.Errorf("texts %q %q", ms[0].Text, ms[1].Text)
	}
}

// TestResolveBounded: a history that never stores the message makes
// Resolve fail with unavailable after Wait, leaving the entry without text
// and resolving the others.
func TestResolveBounded(t *testing.T) {
	r, _, st := newResolver(t, bodies.Config{Wait: 100 * time.Millisecond})
	storeMessage(t, st, 40, 0, "there")
	ms := append(entries(40, 0, "a"), entries(41, 9, "a")...)
	err := r.Resolve(context.Background(), ms)
	if domain.CodeOf(err) != domain.CodeUnavailable || !strings.Contains(err.Error(), "41") {
		t.Fatalf("Resolve = %v; want unavailable naming message 41", err)
	}
	if ms[0].Text != "there" || ms[1].Resolved() {
		t.Errorf("texts %q, %q; want the stored one resolved and the other not", ms[0].Text, ms[1].Text)
	}
}

func TestCacheBounded(t *testing.T) {
	r, c, st := newResolver(t, bodies.Config{CacheBytes: 3 * (1000 + 64)})
	text := strings.Repeat("x", 1000)
	for id := domain.MessageID(1); id <= 4; id++ {
		r.Put(id, text)
	}
	storeMessage(t, st, 1, 0, text)
	// 1 was evicted (the oldest); 2 to 4 are cached.
	ms := append(entries(1, 0, "a"), entries(4, 3, "a")...)
	if err := r.Resolve(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	if n := c.lookups.Load(); n != 1 {
		t.Errorf("%d reads; want 1 (message 1, evicted)", n)
	}
	if hits, _ := r.Stats(); hits != 1 {
		t.Errorf("%d cache hits; want 1 (message 4)", hits)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []bodies.Config{{CacheBytes: -1}, {Wait: -time.Second}} {
		if _, err := bodies.New(cfg, nil); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// TestResolveWaitsWhileHistoryMoves: the wait is bounded by history's
// progress, not by wall time: while history's position moves on (other
// messages of the partition), Resolve waits past Config.Wait, and answers
// once the message is stored.
func TestResolveWaitsWhileHistoryMoves(t *testing.T) {
	const wait = 300 * time.Millisecond
	r, _, st := newResolver(t, bodies.Config{Wait: wait})
	ms := entries(50, 40, "a")
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- r.Resolve(context.Background(), ms) }()
	// History applies other messages, one every wait/3, for 4 waits.
	tick := time.NewTicker(wait / 3)
	defer tick.Stop()
	for off := int64(0); time.Since(start) < 4*wait; off++ {
		<-tick.C
		select {
		case err := <-done:
			t.Fatalf("Resolve returned (%v) after %s while history moved", err, time.Since(start))
		default:
		}
		storeMessage(t, st, domain.MessageID(100+off), off, "another")
	}
	storeMessage(t, st, 50, 40, "at last")
	select {
	case err := <-done:
		if err != nil || ms[0].Text != "at last" {
			t.Fatalf("Resolve = %v, text %q", err, ms[0].Text)
		}
	case <-time.After(time.Minute):
		t.Fatal("Resolve did not return after history stored the message")
	}
}
