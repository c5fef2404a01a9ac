package history

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

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// records builds the records of a channel-topic partition: event i at
// offset i, at t0 + i s; a message at t0 + its id s, as every copy of a
// message carries the time its first attempt was reserved.
func records(t *testing.T, evs ...domain.Event) []*kgo.Record {
	t.Helper()
	recs := make([]*kgo.Record, len(evs))
	for i, ev := range evs {
		at := t0.Add(time.Duration(i) * time.Second)
		if m, ok := ev.(domain.MessageSent); ok {
			at = t0.Add(time.Duration(m.MessageID) * time.Second)
		}
		r, err := eventlog.Record("chat.channels", string(domain.ChannelOf(ev)), ev,
			domain.Meta{EventID: fmt.Sprint(i), Time: at})
		if err != nil {
			t.Fatal(err)
		}
		r.Offset = int64(i)
		recs[i] = r
	}
	return recs
}

// apply hands each batch to p and writes what it adds, with positions, as
// the projector does.
func apply(t *testing.T, st *pebblestore.Store, p *Projection, batches ...[]*kgo.Record) {
	t.Helper()
	ctx := context.Background()
	for _, recs := range batches {
		b := store.Batch{Projection: Name, Positions: map[int32]int64{0: recs[len(recs)-1].Offset + 1}}
		if err := p.Handle(ctx, 0, recs, &b); err != nil {
			t.Fatal(err)
		}
		if !b.Replayable {
			t.Fatal("a history batch is not marked replayable: the embedded store fsyncs each")
		}
		if err := st.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
}

// split cuts recs into batches of n (the last may be shorter).
func split(recs []*kgo.Record, n int) [][]*kgo.Record {
	var out [][]*kgo.Record
	for len(recs) > n {
		out = append(out, recs[:n])
		recs = recs[n:]
	}
	return append(out, recs)
}

// state is what history keeps of some channels and users.
type state struct {
	Channels map[domain.ChannelID]domain.Channel
	Of       map[domain.UserID][]domain.ChannelID
	Messages map[domain.ChannelID][]string // "offset:message id"
}

func read(t *testing.T, st *pebblestore.Store, chans []domain.ChannelID, users []domain.UserID) state {
	t.Helper()
	ctx := context.Background()
	s := state{Channels: map[domain.ChannelID]domain.Channel{}, Of: map[domain.UserID][]domain.ChannelID{},
		Messages: map[domain.ChannelID][]string{}}
	for _, id := range chans {
		c, err := st.Channel(ctx, id)
		if err == nil {
			s.Channels[id] = c
		}
		ms, err := st.MessagesAfter(ctx, id, -1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			s.Messages[id] = append(s.Messages[id], fmt.Sprintf("%d:%d", m.Offset, m.MessageID))
		}
	}
	for _, u := range users {
		cs, err := st.ChannelsOf(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) > 0 {
			s.Of[u] = cs
		}
	}
	return s
}

func created(ch domain.ChannelID, kind domain.ChannelKind, members ...domain.UserID) domain.ChannelCreated {
	return domain.ChannelCreated{ChannelID: ch, Kind: kind, CreatorID: members[0], Members: members}
}

func msg(ch domain.ChannelID, id domain.MessageID, from domain.UserID) domain.MessageSent {
	return domain.MessageSent{ChannelID: ch, MessageID: id, SenderID: from, DeviceID: "d", ClientMsgID: fmt.Sprint("c", id), Text: "hi"}
}

// decided returns m as decided on channel version v.
func decided(m domain.MessageSent, v int64) domain.MessageSent {
	m.DecidedAt = v
	return m
}

// TestHandle applies logs in batches and reads back channels, the
// user → channels index and messages by (channel, offset).
func TestHandle(t *testing.T) {
	const g, d = domain.ChannelID("g"), domain.ChannelID("d")
	tests := []struct {
		name    string
		evs     []domain.Event
		batch   int // records per batch
		members map[domain.UserID][]domain.ChannelID
		msgs    map[domain.ChannelID][]string
	}{{
		name:    "messages keyed by offset in log order",
		evs:     []domain.Event{created(g, domain.KindGroup, "a", "b"), msg(g, 30, "a"), msg(g, 10, "b"), msg(g, 20, "a")},
		batch:   10,
		members: map[domain.UserID][]domain.ChannelID{"a": {g}, "b": {g}},
		msgs:    map[domain.ChannelID][]string{g: {"1:30", "2:10", "3:20"}},
	}, {
		name:    "a non-member's message and a message to no channel are dropped",
		evs:     []domain.Event{msg(d, 1, "a"), created(d, domain.KindDirect, "a", "b"), msg(d, 2, "c"), msg(d, 3, "b")},
		batch:   1,
		members: map[domain.UserID][]domain.ChannelID{"a": {d}, "b": {d}},
		msgs:    map[domain.ChannelID][]string{d: {"3:3"}},
	}, {
		name: "membership at the message's own position",
		evs: []domain.Event{created(g, domain.KindGroup, "a"), msg(g, 1, "b"),
			domain.MemberAdded{ChannelID: g, UserID: "b", ByID: "a"}, msg(g, 3, "b"),
			domain.MemberRemoved{ChannelID: g, UserID: "b", ByID: "b"}, msg(g, 5, "b")},
		batch:   2,
		members: map[domain.UserID][]domain.ChannelID{"a": {g}},
		msgs:    map[domain.ChannelID][]string{g: {"3:3"}},
	}, {
		name:    "second copy of a message id in the same batch",
		evs:     []domain.Event{created(g, domain.KindGroup, "a"), msg(g, 7, "a"), msg(g, 8, "a"), msg(g, 7, "a")},
		batch:   10,
		members: map[domain.UserID][]domain.ChannelID{"a": {g}},
		msgs:    map[domain.ChannelID][]string{g: {"1:7", "2:8"}},
	}, {
		name:    "second copy of a message id in a later batch",
		evs:     []domain.Event{created(g, domain.KindGroup, "a"), msg(g, 7, "a"), msg(g, 8, "a"), msg(g, 7, "a")},
		batch:   2,
		members: map[domain.UserID][]domain.ChannelID{"a": {g}},
		msgs:    map[domain.ChannelID][]string{g: {"1:7", "2:8"}},
	}, {
		// A send decided on version 1 (b a member), appended after b's
		// removal (version 2), was acknowledged: it stands. One decided on
		// version 2 (b gone) could not have been, and is dropped.
		name: "a send that raced its sender's removal stands",
		evs: []domain.Event{created(g, domain.KindGroup, "a", "b"),
			domain.MemberRemoved{ChannelID: g, UserID: "b", ByID: "a"},
			decided(msg(g, 7, "b"), 1), decided(msg(g, 8, "b"), 2), msg(g, 9, "b")},
		batch:   2,
		members: map[domain.UserID][]domain.ChannelID{"a": {g}},
		msgs:    map[domain.ChannelID][]string{g: {"2:7"}},
	}, {
		name:    "a second channel.created changes nothing",
		evs:     []domain.Event{created(g, domain.KindGroup, "a"), created(g, domain.KindGroup, "b")},
		batch:   1,
		members: map[domain.UserID][]domain.ChannelID{"a": {g}},
		msgs:    map[domain.ChannelID][]string{},
	}}
	for _, tt := range tests {
		for _, mode := range []string{"store", "memory"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				st := storetest.OpenPebble(t)
				cs := &counting{Store: st}
				recs := records(t, tt.evs...)
				p := New(cs, domain.DefaultLimits(), nil)
				if mode == "memory" {
					// Begun more than SkewMargin before the messages were
					// sent: the projection's memory answers them all.
					p.withClock(func() time.Time { return t0.Add(-firstcopy.SkewMargin) })
				}
				apply(t, st, p, split(recs, tt.batch)...)
				switch n := cs.lookups.Load(); {
				case mode == "memory" && n != 0:
					t.Fatalf("the store was asked %d times", n)
				case mode == "store" && n == 0 && len(tt.msgs) > 0:
					t.Fatal("the store was never asked")
				}
				check(t, st, tt.members, tt.msgs, recs, tt.batch)
			})
		}
	}
}

// check fails unless st holds members and msgs, with channel versions
// within the log; and unless applying the whole log again in batches of
// batch, as after a crash between the state and the positions (a fresh
// projection: the store is the truth), changes nothing.
func check(t *testing.T, st *pebblestore.Store, members map[domain.UserID][]domain.ChannelID, msgs map[domain.ChannelID][]string, recs []*kgo.Record, batch int) {
	t.Helper()
	chans, users := []domain.ChannelID{"g", "d"}, []domain.UserID{"a", "b", "c"}
	got := read(t, st, chans, users)
	if !reflect.DeepEqual(got.Of, members) {
		t.Errorf("channels of users: %v, want %v", got.Of, members)
	}
	if !reflect.DeepEqual(got.Messages, msgs) {
		t.Errorf("messages: %v, want %v", got.Messages, msgs)
	}
	for id, c := range got.Channels {
		if want := recs[len(recs)-1].Offset + 1; c.Version > want || c.Version == 0 {
			t.Errorf("channel %s version %d, want in (0, %d]", id, c.Version, want)
		}
	}
	apply(t, st, New(st, domain.DefaultLimits(), nil), split(recs, batch)...)
	if again := read(t, st, chans, users); !reflect.DeepEqual(again, got) {
		t.Errorf("applied twice:\n%+v\nonce:\n%+v", again, got)
	}
}

// withClock sets the projection's clock, and begins its run now by it.
func (p *Projection) withClock(now func() time.Time) {
	p.now, p.began = now, now()
}

// counting is the store, counting the message lookups the projection makes.
type counting struct {
	*pebblestore.Store
	lookups atomic.Int64
}

func (c *counting) MessageByID(ctx context.Context, ch domain.ChannelID, id domain.MessageID) (store.Message, error) {
	c.lookups.Add(1)
	return c.Store.MessageByID(ctx, ch, id)
}

// TestHandleAgainAfterFailedApply: a batch handled but not stored (its
// Apply failed) is handed to the projection again; the messages it
// remembers storing are at their own offsets, so it keeps them.
func TestHandleAgainAfterFailedApply(t *testing.T) {
	const g = domain.ChannelID("g")
	st := storetest.OpenPebble(t)
	recs := records(t, created(g, domain.KindGroup, "a"), msg(g, 7, "a"), msg(g, 8, "a"))
	p := New(st, domain.DefaultLimits(), nil)
	p.withClock(func() time.Time { return t0.Add(-firstcopy.SkewMargin) })
	lost := store.Batch{Projection: Name}
	if err := p.Handle(context.Background(), 0, recs, &lost); err != nil {
		t.Fatal(err)
	}
	apply(t, st, p, recs)
	got := read(t, st, []domain.ChannelID{g}, nil)
	if want := []string{"1:7", "2:8"}; !reflect.DeepEqual(got.Messages[g], want) {
		t.Fatalf("messages %v, want %v", got.Messages[g], want)
	}
}

// TestHandleMemoryBounds: a message sent within SkewMargin of the run's
// start may have a copy from before the run, and one sent no later than a
// message the memory forgot may have a forgotten copy: the store answers
// both, and their second copies are dropped.
func TestHandleMemoryBounds(t *testing.T) {
	const g = domain.ChannelID("g")
	st := storetest.OpenPebble(t)
	cs := &counting{Store: st}
	// Message i is sent at t0 + i s; 1 and 2 stored by an earlier run.
	recs := records(t, created(g, domain.KindGroup, "a"), msg(g, 1, "a"), msg(g, 2, "a"),
		msg(g, 1, "a"), msg(g, 4, "a"), msg(g, 5, "a"), msg(g, 6, "a"), msg(g, 4, "a"), msg(g, 6, "a"), msg(g, 9, "a"))
	apply(t, st, New(cs, domain.DefaultLimits(), nil), recs[:3])
	// This run began at t0 - 8 s: 1 (sent at t0 + 1 s) is within the
	// margin, 4 (t0 + 4 s) is not; it remembers two messages.
	p := New(cs, domain.DefaultLimits(), nil)
	p.withClock(func() time.Time { return t0.Add(-8 * time.Second) })
	p.maxStored = 2
	step := func(want int64, recs ...*kgo.Record) {
		t.Helper()
		before := cs.lookups.Load()
		apply(t, st, p, recs)
		if n := cs.lookups.Load() - before; n != want {
			t.Fatalf("offsets %d to %d: the store was asked %d times, want %d", recs[0].Offset, recs[len(recs)-1].Offset, n, want)
		}
	}
	step(1, recs[3])          // 1 again, within the margin
	step(0, recs[4], recs[5]) // 4 and 5, after it: remembered
	step(0, recs[6])          // 6: 4 is forgotten
	step(1, recs[7])          // 4 again, as old as one forgotten
	step(0, recs[8], recs[9]) // 6 again, remembered; 9 is new
	got := read(t, st, []domain.ChannelID{g}, nil)
	if want := []string{"1:1", "2:2", "4:4", "5:5", "6:6", "9:9"}; !reflect.DeepEqual(got.Messages[g], want) {
		t.Fatalf("messages %v, want %v", got.Messages[g], want)
	}
}

// TestRebuild builds history, resets the projection as the operator's
// replay does (messages and positions go, channels and memberships stay
// with the versions of the end of the log) and builds it again from the
// start: the same state, whatever the batches. The log removes a member
// whose earlier messages must stay, and re-adds one.
func TestRebuild(t *testing.T) {
	const g, d, h = domain.ChannelID("g"), domain.ChannelID("d"), domain.ChannelID("h")
	recs := records(t,
		created(g, domain.KindGroup, "a", "b"),
		created(d, domain.KindDirect, "a", "c"),
		msg(g, 100, "b"),
		msg(d, 101, "c"),
		domain.MemberAdded{ChannelID: g, UserID: "c", ByID: "a"},
		msg(g, 102, "c"),
		domain.MemberRemoved{ChannelID: g, UserID: "b", ByID: "b"},
		msg(g, 103, "b"), // no longer a member: dropped
		msg(g, 102, "c"), // a second copy: dropped
		domain.MemberAdded{ChannelID: g, UserID: "b", ByID: "a"},
		msg(g, 104, "b"),
		// In h, the state at the end of the log has e gone and f in:
		// a rebuild that judged by it would drop e's message and keep f's.
		created(h, domain.KindGroup, "a", "e"),
		msg(h, 200, "e"),
		msg(h, 201, "f"), // not yet a member: dropped
		domain.MemberAdded{ChannelID: h, UserID: "f", ByID: "a"},
		domain.MemberRemoved{ChannelID: h, UserID: "e", ByID: "e"},
	)
	chans, users := []domain.ChannelID{g, d, h}, []domain.UserID{"a", "b", "c", "e", "f"}
	want := state{
		Of: map[domain.UserID][]domain.ChannelID{"a": {d, g, h}, "b": {g}, "c": {d, g}, "f": {h}},
		Messages: map[domain.ChannelID][]string{
			g: {"2:100", "5:102", "10:104"},
			d: {"3:101"},
			h: {"12:200"},
		},
	}
	for _, n := range []int{1, 3, len(recs)} {
		t.Run(fmt.Sprintf("batches of %d", n), func(t *testing.T) {
			st := storetest.OpenPebble(t)
			apply(t, st, New(st, domain.DefaultLimits(), nil), split(recs, 4)...)
			first := read(t, st, chans, users)
			if !reflect.DeepEqual(first.Of, want.Of) || !reflect.DeepEqual(first.Messages, want.Messages) {
				t.Fatalf("first build:\n%+v\nwant\n%+v", first, want)
			}
			if err := st.ResetProjection(context.Background(), Name); err != nil {
				t.Fatal(err)
			}
			if pos, err := st.Positions(context.Background(), Name); err != nil || len(pos) != 0 {
				t.Fatalf("positions after reset: %v, %v", pos, err)
			}
			apply(t, st, New(st, domain.DefaultLimits(), nil), split(recs, n)...)
			if again := read(t, st, chans, users); !reflect.DeepEqual(again, first) {
				t.Fatalf("rebuild:\n%+v\nfirst build:\n%+v", again, first)
			}
		})
	}
}

// failing is a store whose lookups fail: a store that does not answer.
type failing struct{ Store }

func (failing) Channel(context.Context, domain.ChannelID) (domain.Channel, error) {
	return domain.Channel{}, fmt.Errorf("store down")
}

func (failing) MessageByID(context.Context, domain.ChannelID, domain.MessageID) (store.Message, error) {
	return store.Message{}, fmt.Errorf("store down")
}

// TestHandleStoreError: a failed lookup is an error of Handle (so the
// runner retries the fetch), not an event silently dropped.
func TestHandleStoreError(t *testing.T) {
	tests := []struct {
		name string
		evs  []domain.Event
	}{
		{"channel lookup", []domain.Event{created("g", domain.KindGroup, "a")}},
		{"message lookup", []domain.Event{msg("g", 1, "a")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b store.Batch
			if err := New(failing{}, domain.DefaultLimits(), nil).Handle(context.Background(), 0, records(t, tt.evs...), &b); err == nil {
				t.Fatalf("no error; batch %+v", b)
			}
		})
	}
}

// TestHandleRunBegins: the projection's run begins when it is made or
// reset, not when a partition's first batch comes: a partition first
// handled long after the run began is answered from memory, and after a
// Reset a message sent within SkewMargin of it is asked of the store.
func TestHandleRunBegins(t *testing.T) {
	const g = domain.ChannelID("g")
	st := storetest.OpenPebble(t)
	cs := &counting{Store: st}
	clock := t0.Add(-2 * firstcopy.SkewMargin)
	p := New(cs, domain.DefaultLimits(), nil)
	p.withClock(func() time.Time { return clock })
	clock = t0.Add(time.Hour) // the first batch comes an hour later
	recs := records(t, created(g, domain.KindGroup, "a"), msg(g, 1, "a"), msg(g, 2, "a"))
	apply(t, st, p, recs)
	if n := cs.lookups.Load(); n != 0 {
		t.Fatalf("the store was asked %d times for messages sent after the run began", n)
	}
	p.Reset() // at t0 + 1 h: message 3600 + 5 is sent within the margin
	more := records(t, created(g, domain.KindGroup, "a"), msg(g, 1, "a"), msg(g, 2, "a"), msg(g, 3605, "a"))[3:]
	apply(t, st, p, more)
	if n := cs.lookups.Load(); n != 1 {
		t.Fatalf("the store was asked %d times after the reset, want 1", n)
	}
}
