package inbox

import (
	"context"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/firstcopy"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
	"github.com/evchat/evchat/projections/store/storetest"
)

const epoch = 2

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// entry is an inbox.message for user u copying message id, at an offset.
type entry struct {
	offset int64
	u      domain.UserID
	id     domain.MessageID
}

func record(t *testing.T, e entry) *kgo.Record {
	t.Helper()
	ev := domain.InboxMessage{UserID: e.u, ChannelID: "c", MessageID: e.id, SenderID: "s", SentAt: t0,
		ChannelOffset: int64(e.id)}
	r, err := eventlog.Record(eventlog.Epoched("chat.inbox", epoch), string(e.u), ev, domain.Meta{EventID: fmt.Sprint(e.offset), Time: t0})
	if err != nil {
		t.Fatal(err)
	}
	r.Partition, r.Offset = 3, e.offset
	return r
}

// apply hands each batch to a new projection on lookups (the runner's
// Reset), or with p to p (no Reset between them), and writes what it adds
// with its positions, as the projector does.
func apply(t *testing.T, st *pebblestore.Store, lookups Store, batches [][]entry, p *Projection) {
	t.Helper()
	ctx := context.Background()
	for _, es := range batches {
		recs := make([]*kgo.Record, len(es))
		for i, e := range es {
			recs[i] = record(t, e)
		}
		b := store.Batch{Projection: eventlog.Epoched(Name, epoch), Positions: map[int32]int64{3: es[len(es)-1].offset + 1}}
		h := p
		if h == nil {
			h = New(lookups, epoch, nil, nil)
		}
		if err := h.Handle(ctx, 3, recs, &b); err != nil {
			t.Fatal(err)
		}
		if !b.Replayable {
			t.Fatal("an inbox batch is not marked replayable: the embedded store fsyncs each")
		}
		for _, e := range b.Inbox {
			if e.Epoch != epoch || e.Partition != 3 {
				t.Fatalf("entry at epoch %d partition %d, want %d and 3", e.Epoch, e.Partition, epoch)
			}
		}
		if err := st.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
}

// inboxes reads each user's inbox as "offset:message id".
func inboxes(t *testing.T, st *pebblestore.Store, users ...domain.UserID) map[domain.UserID][]string {
	t.Helper()
	got := map[domain.UserID][]string{}
	for _, u := range users {
		es, err := st.Inbox(context.Background(), u, epoch, -1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.UserID != u || e.Message.UserID != u {
				t.Fatalf("entry of %s in the inbox of %s", e.UserID, u)
			}
			got[u] = append(got[u], fmt.Sprintf("%d:%d", e.Offset, e.Message.MessageID))
		}
	}
	return got
}

// TestHandle: one entry per (user, message), keyed by (user, epoch,
// offset); the first copy is kept whether the second comes in the same
// batch or a later one; a batch applied again changes nothing.
func TestHandle(t *testing.T) {
	tests := []struct {
		name    string
		batches [][]entry
		want    map[domain.UserID][]string
	}{{
		name:    "entries of several users by offset",
		batches: [][]entry{{{0, "a", 10}, {1, "b", 10}, {2, "a", 11}}, {{3, "b", 12}}},
		want:    map[domain.UserID][]string{"a": {"0:10", "2:11"}, "b": {"1:10", "3:12"}},
	}, {
		name:    "second copy in the same batch",
		batches: [][]entry{{{0, "a", 10}, {1, "b", 10}, {2, "a", 10}, {3, "a", 11}}},
		want:    map[domain.UserID][]string{"a": {"0:10", "3:11"}, "b": {"1:10"}},
	}, {
		name:    "second copy in a later batch",
		batches: [][]entry{{{0, "a", 10}}, {{1, "a", 11}, {2, "a", 10}}, {{3, "a", 10}}},
		want:    map[domain.UserID][]string{"a": {"0:10", "1:11"}},
	}, {
		name:    "a batch applied twice",
		batches: [][]entry{{{0, "a", 10}, {1, "a", 11}}, {{0, "a", 10}, {1, "a", 11}}, {{2, "a", 12}}},
		want:    map[domain.UserID][]string{"a": {"0:10", "1:11", "2:12"}},
	}, {
		name: "a batch applied again after a later one",
		batches: [][]entry{{{0, "a", 10}, {1, "a", 11}}, {{2, "a", 12}, {3, "a", 10}},
			{{0, "a", 10}, {1, "a", 11}}, {{2, "a", 12}, {3, "a", 10}}},
		want: map[domain.UserID][]string{"a": {"0:10", "1:11", "2:12"}},
	}}
	for _, tt := range tests {
		for _, mode := range []string{"store", "memory"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				st := storetest.OpenPebble(t)
				cs := &counting{Store: st}
				if mode == "store" {
					// A projection per batch, begun after the messages were
					// sent: the store answers every lookup.
					apply(t, st, cs, tt.batches, nil)
					if cs.lookups.Load() == 0 {
						t.Fatal("the store was never asked")
					}
				} else {
					// One projection, begun more than SkewMargin before the
					// messages were sent: its memory answers them all.
					p := New(cs, epoch, nil, nil).withClock(func() time.Time { return t0.Add(-firstcopy.SkewMargin) }, firstcopy.Max)
					apply(t, st, cs, tt.batches, p)
					if n := cs.lookups.Load(); n != 0 {
						t.Fatalf("the store was asked %d times", n)
					}
				}
				check(t, st, tt.want)
			})
		}
	}
}

// check fails unless the inboxes of a and b hold want, and the message
// index points at the first copy of each.
func check(t *testing.T, st *pebblestore.Store, want map[domain.UserID][]string) {
	t.Helper()
	if got := inboxes(t, st, "a", "b"); !reflect.DeepEqual(got, want) {
		t.Fatalf("inboxes %v, want %v", got, want)
	}
	for u, es := range want {
		var off int64
		var id domain.MessageID
		fmt.Sscanf(es[0], "%d:%d", &off, &id)
		e, err := st.InboxByMessage(context.Background(), u, epoch, id)
		if err != nil || e.Offset != off {
			t.Errorf("InboxByMessage(%s, %d) = offset %d, %v; want %d", u, id, e.Offset, err, off)
		}
	}
}

// counting is the store, counting the lookups the projection makes.
type counting struct {
	*pebblestore.Store
	lookups atomic.Int64
}

func (c *counting) InboxByMessage(ctx context.Context, u domain.UserID, epoch int32, id domain.MessageID) (store.InboxEntry, error) {
	c.lookups.Add(1)
	return c.Store.InboxByMessage(ctx, u, epoch, id)
}

// withClock sets the projection's clock and how many entries it remembers
// per partition.
func (p *Projection) withClock(now func() time.Time, maxRecent int) *Projection {
	p.now, p.began, p.maxRecent = now, now(), maxRecent
	return p
}

// TestHandleMemoryBounds: the projection's memory answers only what it can
// know. A message sent within SkewMargin of the run's start may have a
// copy from before the run; a message sent no later than one it forgot
// may have a forgotten copy. The store answers both, and their second
// copies are dropped.
func TestHandleMemoryBounds(t *testing.T) {
	ctx := context.Background()
	sent := func(e entry, at time.Time) *kgo.Record {
		r := record(t, e)
		ev := domain.InboxMessage{UserID: e.u, ChannelID: "c", MessageID: e.id, SenderID: "s", SentAt: at, ChannelOffset: int64(e.id)}
		v, err := domain.Encode(ev, domain.Meta{EventID: fmt.Sprint(e.offset), Time: at})
		if err != nil {
			t.Fatal(err)
		}
		r.Value = v
		return r
	}
	st := storetest.OpenPebble(t)
	cs := &counting{Store: st}
	handle := func(p *Projection, recs ...*kgo.Record) {
		t.Helper()
		b := store.Batch{Projection: eventlog.Epoched(Name, epoch), Positions: map[int32]int64{3: recs[len(recs)-1].Offset + 1}}
		if err := p.Handle(ctx, 3, recs, &b); err != nil {
			t.Fatal(err)
		}
		if err := st.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// An earlier run stored message 10 at offset 0.
	handle(New(cs, epoch, nil, nil), sent(entry{0, "a", 10}, t0))
	// This run began at t0: message 10 was sent within the margin.
	p := New(cs, epoch, nil, nil).withClock(func() time.Time { return t0 }, 2)
	before := cs.lookups.Load()
	handle(p, sent(entry{1, "a", 10}, t0))
	if cs.lookups.Load() == before {
		t.Fatal("a message sent within the margin of the run's start: the store was not asked")
	}
	// Messages sent well after the start; with room for two, 11 is
	// forgotten when 13 comes.
	late := t0.Add(2 * firstcopy.SkewMargin)
	handle(p, sent(entry{2, "a", 11}, late), sent(entry{3, "a", 12}, late.Add(time.Second)), sent(entry{4, "a", 13}, late.Add(2*time.Second)))
	before = cs.lookups.Load()
	handle(p, sent(entry{5, "a", 11}, late)) // a copy of the forgotten 11
	if cs.lookups.Load() == before {
		t.Fatal("a message as old as a forgotten one: the store was not asked")
	}
	before = cs.lookups.Load()
	handle(p, sent(entry{6, "a", 13}, late.Add(2*time.Second)), sent(entry{7, "a", 14}, late.Add(3*time.Second)))
	if n := cs.lookups.Load() - before; n != 0 {
		t.Fatalf("remembered and new messages: the store was asked %d times", n)
	}
	check(t, st, map[domain.UserID][]string{"a": {"0:10", "2:11", "3:12", "4:13", "7:14"}})
}

// TestHandleOtherEvents: records that are not inbox entries, or cannot be
// decoded, add nothing.
func TestHandleOtherEvents(t *testing.T) {
	st := storetest.OpenPebble(t)
	other, err := eventlog.Record("chat.inbox.e2", "a", domain.DeviceAcked{UserID: "a", DeviceID: "d", Epoch: 2, Position: 1}, domain.Meta{Time: t0})
	if err != nil {
		t.Fatal(err)
	}
	recs := []*kgo.Record{other, {Offset: 1, Value: []byte("not json")}, record(t, entry{2, "a", 10})}
	var b store.Batch
	if err := New(st, epoch, nil, nil).Handle(context.Background(), 3, recs, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Inbox) != 1 || b.Inbox[0].Offset != 2 {
		t.Fatalf("entries %+v, want the one at offset 2", b.Inbox)
	}
}

type failing struct{}

func (failing) InboxByMessage(context.Context, domain.UserID, int32, domain.MessageID) (store.InboxEntry, error) {
	return store.InboxEntry{}, fmt.Errorf("store down")
}

// TestHandleStoreError: a failed lookup fails the batch rather than
// writing an entry that may be a second copy.
func TestHandleStoreError(t *testing.T) {
	var b store.Batch
	err := New(failing{}, epoch, nil, nil).Handle(context.Background(), 3, []*kgo.Record{record(t, entry{0, "a", 10})}, &b)
	if err == nil {
		t.Fatalf("no error; batch %+v", b)
	}
}

// TestHandleRunBegins: the run begins when the projection is made or
// reset, not when a partition's first batch comes: a partition first
// handled long after the run began is answered from memory, and after a
// Reset an entry of a message sent within SkewMargin of it is asked of
// the store.
func TestHandleRunBegins(t *testing.T) {
	st := storetest.OpenPebble(t)
	cs := &counting{Store: st}
	clock := t0.Add(-2 * firstcopy.SkewMargin)
	p := New(cs, epoch, nil, nil).withClock(func() time.Time { return clock }, firstcopy.Max)
	clock = t0.Add(time.Hour) // the first batch comes an hour later
	apply(t, st, cs, [][]entry{{{0, "a", 10}, {1, "b", 10}}}, p)
	if n := cs.lookups.Load(); n != 0 {
		t.Fatalf("the store was asked %d times for messages sent after the run began", n)
	}
	clock = t0
	p.Reset() // at t0, when every message here was sent
	apply(t, st, cs, [][]entry{{{2, "a", 11}}}, p)
	if n := cs.lookups.Load(); n != 1 {
		t.Fatalf("the store was asked %d times after the reset, want 1", n)
	}
	check(t, st, map[domain.UserID][]string{"a": {"0:10", "2:11"}, "b": {"1:10"}})
}
