package pebblestore

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// crashable is a store on Pebble's strict in-memory file system, which
// forgets at a crash whatever was not fsynced.
type crashable struct {
	t    *testing.T
	fs   *vfs.MemFS
	opts Options
	s    *Store
}

func newCrashable(t *testing.T, every time.Duration) *crashable {
	c := &crashable{t: t, fs: vfs.NewStrictMem(), opts: Options{SyncInterval: every, CacheSize: 8 << 20}}
	if err := c.fs.MkdirAll("db", 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := c.fs.OpenDir("")
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Sync(); err != nil { // the directory itself outlives a crash
		t.Fatal(err)
	}
	_ = root.Close()
	c.open()
	t.Cleanup(func() { _ = c.s.Close() })
	return c
}

func (c *crashable) open() {
	c.t.Helper()
	c.opts.FS = c.fs
	s, err := Open("db", c.opts)
	if err != nil {
		c.t.Fatal(err)
	}
	c.s = s
}

// crash stops the store as a kill -9 would (nothing more reaches the
// disk, not even the fsync of Pebble's close) and opens it again on what
// was synced.
func (c *crashable) crash() {
	c.t.Helper()
	c.fs.SetIgnoreSyncs(true)
	_ = c.s.Close()
	c.fs.ResetToSyncedState()
	c.fs.SetIgnoreSyncs(false)
	c.open()
}

func (c *crashable) apply(b store.Batch) {
	c.t.Helper()
	if err := c.s.Apply(context.Background(), b); err != nil {
		c.t.Fatal(err)
	}
}

// state is what a test compares across a crash: the inbox projection's
// positions and the user's entries, and history's positions and messages.
type state struct {
	inboxPos, historyPos map[int32]int64
	entries              []int64
	messages             []int64
}

func (c *crashable) state() state {
	c.t.Helper()
	ctx := context.Background()
	var st state
	var err error
	if st.inboxPos, err = c.s.Positions(ctx, "inbox.e1"); err != nil {
		c.t.Fatal(err)
	}
	if st.historyPos, err = c.s.Positions(ctx, "history"); err != nil {
		c.t.Fatal(err)
	}
	es, err := c.s.Inbox(ctx, "u", 1, -1, 100)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, e := range es {
		st.entries = append(st.entries, e.Offset)
	}
	ms, err := c.s.MessagesAfter(ctx, "g", -1, 100)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, m := range ms {
		st.messages = append(st.messages, m.Offset)
	}
	return st
}

func inboxBatch(offset int64, replayable bool) store.Batch {
	return store.Batch{Projection: "inbox.e1", Replayable: replayable, Positions: map[int32]int64{0: offset + 1},
		Inbox: []store.InboxEntry{{UserID: "u", Epoch: 1, Offset: offset, Message: domain.InboxMessage{
			UserID: "u", ChannelID: "g", MessageID: domain.MessageID(100 + offset), SenderID: "v", ChannelOffset: offset}}}}
}

func historyBatch(offset int64, replayable bool) store.Batch {
	return store.Batch{Projection: "history", Replayable: replayable, Positions: map[int32]int64{0: offset + 1},
		Messages: []store.Message{{ChannelID: "g", Offset: offset, MessageID: domain.MessageID(100 + offset),
			SenderID: "v", Text: "hi", SentAt: time.Unix(1, 0).UTC()}}}
}

func wantState(t *testing.T, when string, got, want state) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: got %+v, want %+v", when, got, want)
	}
}

// TestReplayableLostWithPositions: a replayable batch is written without
// an fsync of its own, so a crash right after it loses it, its positions
// with it (the projection reads those records again); a batch that is not
// replayable, or that holds more than messages and inbox entries, is
// durable when Apply returns.
func TestReplayableLostWithPositions(t *testing.T) {
	c := newCrashable(t, time.Hour) // no background sync during the test
	c.apply(inboxBatch(0, false))
	c.apply(historyBatch(0, false))
	c.apply(inboxBatch(1, true))
	c.apply(historyBatch(1, true))
	decided := store.SendKey{SenderID: "v", ClientMsgID: "c1"}
	c.apply(store.Batch{Projection: "sends", Replayable: true, Positions: map[int32]int64{0: 1},
		Decisions: []store.SendDecision{{SendKey: decided, ChannelID: "g", MessageID: 101, Offset: 0}}})
	before := state{inboxPos: map[int32]int64{0: 2}, historyPos: map[int32]int64{0: 2}, entries: []int64{0, 1}, messages: []int64{0, 1}}
	wantState(t, "before the crash", c.state(), before)

	c.crash()
	synced := state{inboxPos: map[int32]int64{0: 1}, historyPos: map[int32]int64{0: 1}, entries: []int64{0}, messages: []int64{0}}
	wantState(t, "after a crash (the replayable batches lost, with their positions)", c.state(), synced)
	ds, err := c.s.SendDecisions(context.Background(), []store.SendKey{decided})
	pos, perr := c.s.Positions(context.Background(), "sends")
	if err != nil || perr != nil || len(ds) != 0 || len(pos) != 0 {
		t.Errorf("after a crash, a replayable batch of decisions: %v, progress %v (%v, %v); want both lost, for the sends processor to mend", ds, pos, err, perr)
	}

	// A replayable batch of history with a membership in it is fsynced:
	// a gateway refuses a removed member's send from that state.
	c.apply(historyBatch(1, true))
	b := historyBatch(2, true)
	b.Memberships = []store.Membership{{ChannelID: "g", UserID: "w", Member: true}}
	c.apply(b)
	c.crash()
	wantState(t, "after a crash, a batch with a membership applied last", c.state(),
		state{inboxPos: map[int32]int64{0: 1}, historyPos: map[int32]int64{0: 3}, entries: []int64{0}, messages: []int64{0, 1, 2}})
	chs, err := c.s.ChannelsOf(context.Background(), "w")
	if err != nil || len(chs) != 1 {
		t.Errorf("the membership after a crash: %v, %v", chs, err)
	}
}

// TestReplayableSynced: what a replayable batch wrote is durable once the
// background sync ran (within Options.SyncInterval) and after Close.
func TestReplayableSynced(t *testing.T) {
	c := newCrashable(t, 10*time.Millisecond)
	c.apply(inboxBatch(0, true))
	c.apply(historyBatch(0, true))
	deadline := time.Now().Add(time.Minute)
	for c.s.syncs.Load() == 0 || c.s.unsynced.Load() {
		if time.Now().After(deadline) {
			t.Fatal("no background sync within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.crash()
	all := state{inboxPos: map[int32]int64{0: 1}, historyPos: map[int32]int64{0: 1}, entries: []int64{0}, messages: []int64{0}}
	wantState(t, "after the background sync and a crash", c.state(), all)

	c.opts.SyncInterval = time.Hour
	if err := c.s.Close(); err != nil {
		t.Fatal(err)
	}
	c.open()
	c.apply(inboxBatch(1, true))
	if err := c.s.Close(); err != nil {
		t.Fatal(err)
	}
	c.fs.ResetToSyncedState()
	c.open()
	all.inboxPos, all.entries = map[int32]int64{0: 2}, []int64{0, 1}
	wantState(t, "after Close and a crash", c.state(), all)
}
