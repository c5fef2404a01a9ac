package inbox

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

// apply hands each batch to a new projection (the runner's Reset) and
// writes what it adds with its positions, as the projector does.
func apply(t *testing.T, st *pebblestore.Store, batches [][]entry) {
	t.Helper()
	ctx := context.Background()
	for _, es := range batches {
		recs := make([]*kgo.Record, len(es))
		for i, e := range es {
			recs[i] = record(t, e)
		}
		b := store.Batch{Projection: eventlog.Epoched(Name, epoch), Positions: map[int32]int64{3: es[len(es)-1].offset + 1}}
		if err := New(st, epoch, nil, nil).Handle(ctx, 3, recs, &b); err != nil {
			t.Fatal(err)
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
		t.Run(tt.name, func(t *testing.T) {
			st := storetest.OpenPebble(t)
			apply(t, st, tt.batches)
			if got := inboxes(t, st, "a", "b"); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("inboxes %v, want %v", got, tt.want)
			}
			// The message index points at the first copy.
			for u, es := range tt.want {
				var off int64
				var id domain.MessageID
				fmt.Sscanf(es[0], "%d:%d", &off, &id)
				e, err := st.InboxByMessage(context.Background(), u, epoch, id)
				if err != nil || e.Offset != off {
					t.Errorf("InboxByMessage(%s, %d) = offset %d, %v; want %d", u, id, e.Offset, err, off)
				}
			}
		})
	}
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
