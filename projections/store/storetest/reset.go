package storetest

import (
	"context"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// testResetProjection resets each projection that owns state, and one that
// owns none, and checks that a reset deletes exactly the projection's
// positions and state, and that the projection can then be rebuilt.
//
// It uses the real projection names, and a reset deletes the state of its
// kind of every subtest: Run runs it after all other subtests. It checks only
// the state it wrote, so other subtests' state may be present.
func testResetProjection(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	u, v := g.user("u"), g.user("v")
	ch := g.channel("x")
	other := g.projection("other")
	const id = domain.MessageID(1<<63 + 7)

	account := store.User{ID: u, Name: g.name("u"), PasswordHash: "h", CreatedAt: at(1)}
	must(t, s.CreateUser(ctx, account))
	decision := store.SendDecision{SendKey: store.SendKey{SenderID: u, ClientMsgID: "c-1"}, ChannelID: ch, MessageID: id,
		TextHash: "h", Partition: 1, Offset: 2}
	must(t, s.Apply(ctx, store.Batch{Decisions: []store.SendDecision{decision}}))
	if created, err := s.ReservePush(ctx, v, id, at(3)); err != nil || !created {
		t.Fatalf("ReservePush: created=%v, %v", created, err)
	}

	channel := domain.Channel{ID: ch, Kind: domain.KindGroup, Name: "x", CreatorID: u, Members: []domain.UserID{u, v}, CreatedAt: at(4)}
	msgs := messages(ch, u, 5, func(i int) int64 { return int64(i) * 3 })
	msgs[2].MessageID = id
	history := store.Batch{
		Projection: "history",
		Positions:  map[int32]int64{0: 13, 2: 4},
		Channels:   []domain.Channel{channel},
		Memberships: []store.Membership{
			{ChannelID: ch, UserID: u, Member: true},
			{ChannelID: ch, UserID: v, Member: true},
		},
		Messages: msgs,
	}
	entry := func(user domain.UserID, offset int64) store.InboxEntry {
		return store.InboxEntry{UserID: user, Epoch: 1, Partition: 3, Offset: offset, Message: domain.InboxMessage{
			UserID: user, ChannelID: ch, MessageID: id, SenderID: u, Text: msgs[2].Text, SentAt: msgs[2].SentAt,
			ChannelPartition: 0, ChannelOffset: msgs[2].Offset,
		}}
	}
	inbox := store.Batch{
		Projection: "inbox",
		Positions:  map[int32]int64{0: 21},
		Inbox:      []store.InboxEntry{entry(u, 7), entry(v, 8)},
	}
	cursors := store.Batch{
		Projection: "cursors",
		Positions:  map[int32]int64{1: 33},
		Cursors: []store.DeviceCursor{
			{UserID: u, DeviceID: "phone", Epoch: 1, Position: 7, UpdatedAt: at(5)},
			{UserID: v, DeviceID: "web", Epoch: 1, Position: 8, UpdatedAt: at(6)},
		},
		Reads: []store.ReadMark{{ChannelID: ch, UserID: v, Seq: msgs[2].Offset, MessageID: id, UpdatedAt: at(7)}},
	}
	others := store.Batch{Projection: other, Positions: map[int32]int64{0: 99}}

	positions := func(t *testing.T, projection string, want map[int32]int64) {
		t.Helper()
		got, err := s.Positions(ctx, projection)
		must(t, err)
		if len(got) != len(want) || (len(got) > 0 && !reflect.DeepEqual(got, want)) {
			t.Fatalf("Positions(%s): got %v, want %v", projection, got, want)
		}
	}
	// hasHistory checks that the history state is b's, or gone.
	hasHistory := func(t *testing.T, b *store.Batch) {
		t.Helper()
		c, err := s.Channel(ctx, ch)
		chs, err2 := s.ChannelsOf(ctx, v)
		before, err3 := s.MessagesBefore(ctx, ch, math.MaxInt64, 100)
		after, err4 := s.MessagesAfter(ctx, ch, -1, 100)
		must(t, errors.Join(err2, err3, err4))
		byID, err5 := s.MessageByID(ctx, ch, id)
		if b == nil {
			// Channels and memberships survive a reset: the gateway
			// checks membership against them during the rebuild.
			must(t, err)
			check(t, "Channel after the history reset", normChannel(c), history.Channels[0])
			check(t, "ChannelsOf after the history reset", chs, []domain.ChannelID{ch})
			if !errors.Is(err5, domain.ErrNotFound) {
				t.Fatalf("MessageByID after the history reset: got %+v, %v; want ErrNotFound", byID, err5)
			}
			if len(before) != 0 || len(after) != 0 {
				t.Fatalf("after the history reset: MessagesBefore %v, MessagesAfter %v; want none", offsets(before), offsets(after))
			}
			positions(t, "history", nil)
			return
		}
		must(t, errors.Join(err, err5))
		check(t, "Channel", normChannel(c), b.Channels[0])
		check(t, "ChannelsOf", chs, []domain.ChannelID{ch})
		check(t, "MessagesBefore", normMsgs(before), reversed(b.Messages))
		check(t, "MessagesAfter", normMsgs(after), b.Messages)
		check(t, "MessageByID", normMsgs([]store.Message{byID})[0], b.Messages[2])
		positions(t, "history", b.Positions)
	}
	hasInbox := func(t *testing.T, b *store.Batch) {
		t.Helper()
		for _, user := range []domain.UserID{u, v} {
			got, err := s.Inbox(ctx, user, 1, -1, 100)
			must(t, err)
			e, err := s.InboxByMessage(ctx, user, 1, id)
			if b == nil {
				if len(got) != 0 || !errors.Is(err, domain.ErrNotFound) {
					t.Fatalf("after the inbox reset: Inbox(%s) %+v, InboxByMessage %+v, %v; want none, ErrNotFound", user, got, e, err)
				}
				continue
			}
			must(t, err)
			var want []store.InboxEntry
			for _, w := range b.Inbox {
				if w.UserID == user {
					want = append(want, w)
				}
			}
			check(t, "Inbox of "+string(user), normInbox(got), want)
			check(t, "InboxByMessage of "+string(user), normInbox([]store.InboxEntry{e})[0], want[0])
		}
		if b == nil {
			positions(t, "inbox", nil)
		} else {
			positions(t, "inbox", b.Positions)
		}
	}
	hasCursors := func(t *testing.T, b *store.Batch) {
		t.Helper()
		cu, err := s.DeviceCursors(ctx, u)
		cv, err2 := s.DeviceCursors(ctx, v)
		reads, err3 := s.ChannelReads(ctx, ch)
		must(t, errors.Join(err, err2, err3))
		if b == nil {
			if len(cu) != 0 || len(cv) != 0 || len(reads) != 0 {
				t.Fatalf("after the cursors reset: DeviceCursors %+v, %+v, ChannelReads %+v; want none", cu, cv, reads)
			}
			positions(t, "cursors", nil)
			return
		}
		check(t, "DeviceCursors of u", normCursors(cu), b.Cursors[:1])
		check(t, "DeviceCursors of v", normCursors(cv), b.Cursors[1:])
		check(t, "ChannelReads", normReads(reads), b.Reads)
		positions(t, "cursors", b.Positions)
	}
	// kept checks what no reset deletes.
	kept := func(t *testing.T) {
		t.Helper()
		got, err := s.User(ctx, u)
		must(t, err)
		check(t, "User", normUser(got), account)
		got, err = s.UserByName(ctx, account.Name)
		must(t, err)
		check(t, "UserByName", normUser(got), account)
		check(t, "SendDecisions after a reset", sendDecisions(t, s, []store.SendKey{decision.SendKey}), byKey(decision))
		if created, err := s.ReservePush(ctx, v, id, at(9)); err != nil || created {
			t.Fatalf("ReservePush after a reset: created=%v, %v; want the old reservation", created, err)
		}
	}
	reset := func(t *testing.T, projection string) {
		t.Helper()
		if err := s.ResetProjection(ctx, projection); err != nil {
			t.Fatalf("ResetProjection(%s): %v", projection, err)
		}
	}

	for _, b := range []store.Batch{history, inbox, cursors, others} {
		apply(t, s, b)
	}
	hasHistory(t, &history)
	hasInbox(t, &inbox)
	hasCursors(t, &cursors)
	positions(t, other, others.Positions)
	kept(t)

	t.Run("History", func(t *testing.T) {
		reset(t, "history")
		hasHistory(t, nil)
		hasInbox(t, &inbox)
		hasCursors(t, &cursors)
		positions(t, other, others.Positions)
		kept(t)
		// The rebuild, on an emptied store.
		apply(t, s, history)
		hasHistory(t, &history)
	})
	t.Run("Inbox", func(t *testing.T) {
		reset(t, "inbox")
		hasInbox(t, nil)
		hasHistory(t, &history)
		hasCursors(t, &cursors)
		positions(t, other, others.Positions)
		kept(t)
		// The rebuild puts u's copy of the message at another offset: the
		// reset has deleted the message index too, so the new copy is found.
		rebuilt := inbox
		rebuilt.Inbox = []store.InboxEntry{entry(u, 9), entry(v, 8)}
		apply(t, s, rebuilt)
		hasInbox(t, &rebuilt)
	})
	t.Run("Cursors", func(t *testing.T) {
		reset(t, "cursors")
		hasCursors(t, nil)
		hasHistory(t, &history)
		positions(t, "inbox", inbox.Positions)
		positions(t, other, others.Positions)
		kept(t)
		// The rebuild, with other values.
		rebuilt := cursors
		rebuilt.Cursors = []store.DeviceCursor{
			{UserID: u, DeviceID: "tablet", Epoch: 1, Position: 9, UpdatedAt: at(10)},
			{UserID: v, DeviceID: "web", Epoch: 2, Position: 0, UpdatedAt: at(11)},
		}
		rebuilt.Reads = []store.ReadMark{{ChannelID: ch, UserID: u, Seq: msgs[4].Offset, MessageID: msgs[4].MessageID, UpdatedAt: at(12)}}
		apply(t, s, rebuilt)
		hasCursors(t, &rebuilt)
	})
	t.Run("OtherProjection", func(t *testing.T) {
		untouched := g.projection("untouched")
		apply(t, s, store.Batch{Projection: untouched, Positions: map[int32]int64{5: 6}})
		reset(t, other)
		positions(t, other, nil)
		positions(t, untouched, map[int32]int64{5: 6})
		hasHistory(t, &history)
		positions(t, "inbox", inbox.Positions)
		positions(t, "cursors", cursors.Positions)
		kept(t)
		// Again, and a projection that never wrote: nothing to delete.
		reset(t, other)
		reset(t, g.projection("never"))
		positions(t, other, nil)
		apply(t, s, others)
		positions(t, other, others.Positions)
	})
	t.Run("Twice", func(t *testing.T) {
		reset(t, "history")
		reset(t, "history")
		hasHistory(t, nil)
		apply(t, s, history)
		apply(t, s, history)
		hasHistory(t, &history)
		kept(t)
	})
}
