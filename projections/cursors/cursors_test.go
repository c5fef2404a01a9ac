package cursors

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
	"github.com/evchat/evchat/projections/store/storetest"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func ack(u domain.UserID, d domain.DeviceID, epoch int32, pos int64) domain.DeviceAcked {
	return domain.DeviceAcked{UserID: u, DeviceID: d, Epoch: epoch, Position: pos}
}

func read(u domain.UserID, ch domain.ChannelID, seq int64) domain.ChannelRead {
	return domain.ChannelRead{UserID: u, DeviceID: "d", ChannelID: ch, MessageID: domain.MessageID(1000 + seq), Seq: seq}
}

// records builds session-topic records; event i is at offset i and second i.
func records(t *testing.T, evs []domain.Event) []*kgo.Record {
	t.Helper()
	recs := make([]*kgo.Record, len(evs))
	for i, ev := range evs {
		r, err := eventlog.Record("chat.sessions", "", ev, domain.Meta{EventID: fmt.Sprint(i), Time: t0.Add(time.Duration(i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		r.Offset = int64(i)
		recs[i] = r
	}
	return recs
}

// apply hands the records to p in batches of n and writes each batch.
func apply(t *testing.T, st *pebblestore.Store, p *Projection, recs []*kgo.Record, n int) {
	t.Helper()
	ctx := context.Background()
	for len(recs) > 0 {
		k := min(n, len(recs))
		b := store.Batch{Projection: Name, Positions: map[int32]int64{0: recs[k-1].Offset + 1}}
		if err := p.Handle(ctx, 0, recs[:k], &b); err != nil {
			t.Fatal(err)
		}
		if err := st.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
		recs = recs[k:]
	}
}

// state reads every device position of users a and b as
// "user/device e<epoch>:<position>@<second>", and every read mark of
// channel c as "user:<seq>@<second>".
func state(t *testing.T, st *pebblestore.Store) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, u := range []domain.UserID{"a", "b"} {
		cs, err := st.DeviceCursors(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			out = append(out, fmt.Sprintf("%s/%s e%d:%d@%v", c.UserID, c.DeviceID, c.Epoch, c.Position, c.UpdatedAt.Sub(t0).Seconds()))
		}
	}
	rs, err := st.ChannelReads(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s:%d@%v", r.UserID, r.Seq, r.UpdatedAt.Sub(t0).Seconds()))
	}
	return out
}

// TestHandle: device positions and read marks only move forward (a newer
// epoch is forward whatever its position), in one batch or across
// batches, with the cache warm or cold; the time is the event's.
func TestHandle(t *testing.T) {
	tests := []struct {
		name string
		evs  []domain.Event
		want []string
	}{{
		name: "positions per device, forward",
		evs:  []domain.Event{ack("a", "p", 1, 5), ack("a", "l", 1, 3), ack("a", "p", 1, 9), ack("b", "p", 1, 1)},
		want: []string{"a/l e1:3@1", "a/p e1:9@2", "b/p e1:1@3"},
	}, {
		name: "a late acknowledgement does not move a position back",
		evs:  []domain.Event{ack("a", "p", 1, 9), ack("a", "p", 1, 5), ack("a", "p", 1, 9)},
		want: []string{"a/p e1:9@0"},
	}, {
		name: "an older epoch does not move a position back; a newer one moves it on",
		evs:  []domain.Event{ack("a", "p", 2, 4), ack("a", "p", 1, 100), ack("a", "l", 1, 100), ack("a", "l", 2, 0)},
		want: []string{"a/l e2:0@3", "a/p e2:4@0"},
	}, {
		name: "read marks forward only",
		evs:  []domain.Event{read("a", "c", 4), read("b", "c", 2), read("a", "c", 3), read("a", "c", 4), read("b", "c", 7)},
		want: []string{"a:4@0", "b:7@4"},
	}, {
		name: "other events change nothing",
		evs:  []domain.Event{domain.DeviceLoggedIn{UserID: "a", DeviceID: "p"}, domain.DeviceHeartbeat{UserID: "a", DeviceID: "p"}, ack("a", "p", 1, 1)},
		want: []string{"a/p e1:1@2"},
	}}
	for _, tt := range tests {
		recs := records(t, tt.evs)
		for _, n := range []int{1, 2, len(recs)} {
			t.Run(fmt.Sprintf("%s/batches of %d", tt.name, n), func(t *testing.T) {
				st := storetest.OpenPebble(t)
				apply(t, st, New(st, nil), recs, n)
				got := state(t, st)
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("state %v, want %v", got, tt.want)
				}
				// Replays, with the cache warm and with a new projection
				// that reads the store, change nothing.
				p := New(st, nil)
				apply(t, st, p, recs, n)
				apply(t, st, p, recs, n)
				if again := state(t, st); !reflect.DeepEqual(again, got) {
					t.Fatalf("after replays %v, want %v", again, got)
				}
			})
		}
	}
}

// TestResetReadsStore: after Reset (what the runner does after a failed
// batch or a rebalance) the projection takes positions from the store, so
// an older acknowledgement in the next batch still cannot move one back.
func TestResetReadsStore(t *testing.T) {
	st := storetest.OpenPebble(t)
	p := New(st, nil)
	apply(t, st, p, records(t, []domain.Event{ack("a", "p", 1, 9), read("a", "c", 9)}), 2)
	p.Reset()
	var b store.Batch
	if err := p.Handle(context.Background(), 0, records(t, []domain.Event{ack("a", "p", 1, 5), read("a", "c", 3)}), &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Cursors) != 0 || len(b.Reads) != 0 {
		t.Fatalf("moved back: %+v", b)
	}
}

type failing struct{}

func (failing) DeviceCursors(context.Context, domain.UserID) ([]store.DeviceCursor, error) {
	return nil, fmt.Errorf("store down")
}

func (failing) ChannelReads(context.Context, domain.ChannelID) ([]store.ReadMark, error) {
	return nil, fmt.Errorf("store down")
}

// TestHandleStoreError: without the stored positions the projection cannot
// know whether an acknowledgement is forward, so it fails the batch.
func TestHandleStoreError(t *testing.T) {
	for _, ev := range []domain.Event{ack("a", "p", 1, 1), read("a", "c", 1)} {
		t.Run(ev.EventType(), func(t *testing.T) {
			var b store.Batch
			if err := New(failing{}, nil).Handle(context.Background(), 0, records(t, []domain.Event{ev}), &b); err == nil {
				t.Fatalf("no error; batch %+v", b)
			}
		})
	}
}
