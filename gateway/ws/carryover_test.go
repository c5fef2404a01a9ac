package ws_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/ws"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/inbox"
	"github.com/evchat/evchat/projections/store"
)

// epochStore holds user u1's inbox in partition 0 of each epoch, and the
// inbox projection's position there: every entry below is stored.
type epochStore struct {
	entries map[int32][]store.InboxEntry
	applied map[int32]int64
}

func (s *epochStore) Inbox(_ context.Context, _ domain.UserID, epoch int32, after int64, limit int) ([]store.InboxEntry, error) {
	var out []store.InboxEntry
	for _, e := range s.entries[epoch] {
		if e.Offset > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *epochStore) Positions(_ context.Context, projection string) (map[int32]int64, error) {
	for e, p := range s.applied {
		if projection == eventlog.Epoched(inbox.Name, e) {
			return map[int32]int64{0: p}, nil
		}
	}
	return nil, nil
}

func (s *epochStore) DeviceCursors(context.Context, domain.UserID) ([]store.DeviceCursor, error) {
	return nil, nil
}

func inboxEntry(epoch int32, offset int64, id domain.MessageID) store.InboxEntry {
	return store.InboxEntry{UserID: user, Epoch: epoch, Offset: offset, Message: domain.InboxMessage{
		UserID: user, ChannelID: "g1", MessageID: id, SenderID: "u2", SentAt: time.Unix(1, 0).UTC(),
	}}
}

// TestCarryOverPassesOverLiveEntries: a device that had messages A, B, C
// in inbox epoch 1 resumes with its epoch 1 position on a gateway in epoch
// 2, whose rebuild has stored only C and A so far (the rebuild lags the
// live fan-out at the switch). It gets nothing it had, synced, and then,
// live, nothing it had either: B arrives in epoch 2 after the sync and is
// passed over; D, new, is delivered at its epoch 2 position.
func TestCarryOverPassesOverLiveEntries(t *testing.T) {
	t.Parallel()
	const a, b, c, d = 1001, 1002, 1003, 1004
	st := &epochStore{
		entries: map[int32][]store.InboxEntry{
			1: {inboxEntry(1, 0, a), inboxEntry(1, 1, b), inboxEntry(1, 2, c)},
			2: {inboxEntry(2, 0, c), inboxEntry(2, 1, a)},
		},
		applied: map[int32]int64{1: 3, 2: 2},
	}
	g := startGatewayIn(t, 2, ws.Config{}, st, newFakeCommands())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	app, err := eventlog.NewAppender(g.log)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	appendEntries := func(ids ...domain.MessageID) {
		t.Helper()
		for _, id := range ids {
			e := inboxEntry(2, 0, id)
			rec, err := eventlog.Record(g.log.Topics().Inbox, string(user), e.Message, domain.Meta{EventID: fmt.Sprint("e", id), Time: time.Now().UTC()})
			if err != nil {
				t.Fatal(err)
			}
			if err := app.AppendRecords(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendEntries(c, a) // epoch 2's offsets 0 and 1, which the store has

	dev := g.dial(t, "epoch=1&position=2")
	if f := dev.must(); f.Type != ws.TypeHello || *f.Epoch != 2 {
		t.Fatalf("first frame %+v, want hello in epoch 2", f)
	}
	if f := dev.must(); f.Type != ws.TypeSynced || *f.Epoch != 2 || *f.Position != 1 {
		t.Fatalf("%+v, want synced at epoch 2 position 1 (it had both stored entries)", f)
	}
	appendEntries(b, d) // offsets 2 and 3, live
	f := dev.must()
	if f.Type != ws.TypeMessage || f.MessageID != d || *f.Epoch != 2 || *f.Position != 3 {
		t.Fatalf("%+v, want message %d at epoch 2 position 3 (message %d was had in epoch 1)", f, d, b)
	}
}
