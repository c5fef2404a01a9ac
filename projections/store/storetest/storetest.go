package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// Run runs the contract suite. open returns a store ready for use for one
// subtest and arranges, with t.Cleanup, to close it; it may return a store
// that other subtests also use.
//
// The exclusive subtests delete state that other subtests wrote (a
// ResetProjection deletes all state of a kind), so Run runs them after all
// the others, one at a time. They check only the state they wrote
// themselves, so a store shared with the earlier subtests is fine.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	type test struct {
		name string
		run  func(t *testing.T, s store.Store)
	}
	shared := []test{
		{"CreateUser", testCreateUser},
		{"DeleteUser", testDeleteUser},
		{"UserNameTaken", testUserNameTaken},
		{"UserNameTakenConcurrently", testUserNameTakenConcurrently},
		{"UserNotFound", testUserNotFound},
		{"RevokeSession", testRevokeSession},
		{"SendDecisions", testSendDecisions},
		{"SendDecisionsAgain", testSendDecisionsAgain},
		{"SendDecisionsMany", testSendDecisionsMany},
		{"ApplyIdempotent", testApplyIdempotent},
		{"PositionsPerProjection", testPositionsPerProjection},
		{"ChannelUpsert", testChannelUpsert},
		{"ChannelsOf", testChannelsOf},
		{"MessagesBounds", testMessagesBounds},
		{"MessagesPaging", testMessagesPaging},
		{"MessageByID", testMessageByID},
		{"Inbox", testInbox},
		{"InboxByMessage", testInboxByMessage},
		{"DeviceCursors", testDeviceCursors},
		{"ChannelReads", testChannelReads},
		{"ReservePush", testReservePush},
		{"ReservePushConcurrently", testReservePushConcurrently},
	}
	exclusive := []test{
		{"ResetProjection", testResetProjection},
	}
	// The shared subtests first, then the exclusive ones. Should a shared
	// subtest call t.Parallel, the shared ones would have to run in a group
	// subtest, so that the group ends before the exclusive subtests start.
	for _, tt := range slices.Concat(shared, exclusive) {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, open(t))
		})
	}
}

// ids makes identifiers unique to one subtest.
type ids struct{ suffix string }

func newIDs(t testing.TB) ids {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return ids{suffix: hex.EncodeToString(b[:])}
}

func (g ids) user(name string) domain.UserID { return domain.UserID(name + "-" + g.suffix) }
func (g ids) name(name string) string        { return name + "-" + g.suffix }
func (g ids) channel(name string) domain.ChannelID {
	return domain.ChannelID("g" + name + "-" + g.suffix)
}
func (g ids) projection(name string) string { return name + "-" + g.suffix }

// at returns a time the store keeps exactly: UTC, whole milliseconds
// (Cassandra's timestamp precision).
func at(i int) time.Time { return time.UnixMilli(1_700_000_000_000 + int64(i)).UTC() }

// utc returns t in UTC without a monotonic reading, for comparisons.
func utc(t time.Time) time.Time { return t.UTC().Round(0) }

func normUser(u store.User) store.User { u.CreatedAt = utc(u.CreatedAt); return u }

func normChannel(c domain.Channel) domain.Channel { c.CreatedAt = utc(c.CreatedAt); return c }

func normMsgs(ms []store.Message) []store.Message {
	out := make([]store.Message, len(ms))
	for i, m := range ms {
		m.SentAt = utc(m.SentAt)
		out[i] = m
	}
	return out
}

func normInbox(es []store.InboxEntry) []store.InboxEntry {
	out := make([]store.InboxEntry, len(es))
	for i, e := range es {
		e.Message.SentAt = utc(e.Message.SentAt)
		out[i] = e
	}
	return out
}

func check(t testing.TB, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func apply(t testing.TB, s store.Store, b store.Batch) {
	t.Helper()
	if err := s.Apply(context.Background(), b); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// testRevokeSession: a revoked session is revoked; another session of the
// same user, and the same session id of another user, are not.
func testRevokeSession(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	ann, bob := g.user("1"), g.user("2")
	revoked := func(u domain.UserID, sid string) bool {
		t.Helper()
		r, err := s.SessionRevoked(ctx, u, sid)
		must(t, err)
		return r
	}
	if revoked(ann, "s1") {
		t.Fatal("a session revoked before any logout")
	}
	must(t, s.RevokeSession(ctx, ann, "s1", time.Now().Add(time.Hour)))
	must(t, s.RevokeSession(ctx, ann, "s1", time.Now().Add(time.Hour))) // twice is once
	if !revoked(ann, "s1") {
		t.Fatal("a revoked session is not revoked")
	}
	if revoked(ann, "s2") || revoked(bob, "s1") {
		t.Fatal("a revocation reached another session or another user")
	}
}

func testCreateUser(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	u := store.User{ID: g.user("1"), Name: g.name("alice"), PasswordHash: "$argon2id$v=19$m=65536,t=1,p=4$c2FsdA$aGFzaA", CreatedAt: at(1)}
	must(t, s.CreateUser(ctx, u))
	got, err := s.User(ctx, u.ID)
	must(t, err)
	check(t, "User", normUser(got), u)
	got, err = s.UserByName(ctx, u.Name)
	must(t, err)
	check(t, "UserByName", normUser(got), u)
}

func testDeleteUser(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	u := store.User{ID: g.user("1"), Name: g.name("dora"), PasswordHash: "h1", CreatedAt: at(1)}
	must(t, s.CreateUser(ctx, u))
	must(t, s.DeleteUser(ctx, u))
	if _, err := s.User(ctx, u.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("User after DeleteUser: got %v, want ErrNotFound", err)
	}
	if _, err := s.UserByName(ctx, u.Name); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("UserByName after DeleteUser: got %v, want ErrNotFound", err)
	}
	must(t, s.DeleteUser(ctx, u)) // absent: no error
	// The name is free again; deleting the old account again leaves the
	// new owner's name alone.
	again := store.User{ID: g.user("2"), Name: u.Name, PasswordHash: "h2", CreatedAt: at(2)}
	must(t, s.CreateUser(ctx, again))
	must(t, s.DeleteUser(ctx, u))
	got, err := s.UserByName(ctx, u.Name)
	must(t, err)
	check(t, "UserByName of the name's new owner", normUser(got), again)
}

func testUserNameTaken(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	first := store.User{ID: g.user("1"), Name: g.name("bob"), PasswordHash: "h1", CreatedAt: at(1)}
	must(t, s.CreateUser(ctx, first))
	second := store.User{ID: g.user("2"), Name: first.Name, PasswordHash: "h2", CreatedAt: at(2)}
	if err := s.CreateUser(ctx, second); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("second CreateUser with the same name: got %v, want ErrConflict", err)
	}
	got, err := s.UserByName(ctx, first.Name)
	must(t, err)
	check(t, "UserByName after the conflict", normUser(got), first)
	if _, err := s.User(ctx, second.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("User of the refused account: got %v, want ErrNotFound", err)
	}
}

func testUserNameTakenConcurrently(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	const n = 10
	name := g.name("carol")
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.CreateUser(ctx, store.User{
				ID: g.user(fmt.Sprint(i)), Name: name, PasswordHash: fmt.Sprint("h", i), CreatedAt: at(i),
			})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("both %d and %d created the name", winner, i)
			}
			winner = i
		case !errors.Is(err, domain.ErrConflict):
			t.Fatalf("CreateUser %d: got %v, want nil or ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no CreateUser succeeded")
	}
	got, err := s.UserByName(ctx, name)
	must(t, err)
	if got.ID != g.user(fmt.Sprint(winner)) {
		t.Fatalf("UserByName: id %s, want the winner's %s", got.ID, g.user(fmt.Sprint(winner)))
	}
}

func testUserNotFound(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	must(t, s.CreateUser(ctx, store.User{ID: g.user("1"), Name: g.name("dave"), PasswordHash: "h", CreatedAt: at(1)}))
	tests := []struct {
		name string
		get  func() (store.User, error)
	}{
		{"UserByName", func() (store.User, error) { return s.UserByName(ctx, g.name("nobody")) }},
		{"UserByNamePrefix", func() (store.User, error) { return s.UserByName(ctx, g.name("dav")) }},
		{"User", func() (store.User, error) { return s.User(ctx, g.user("2")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.get(); !errors.Is(err, domain.ErrNotFound) {
				t.Fatalf("got %v, want ErrNotFound", err)
			}
		})
	}
}

// snapshot is everything a batch built by testApplyIdempotent can change.
type snapshot struct {
	Positions map[int32]int64
	Channels  []domain.Channel
	Of        map[domain.UserID][]domain.ChannelID
	Messages  []store.Message
	Inbox     []store.InboxEntry
}

func testApplyIdempotent(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	proj := g.projection("history")
	a, b, c := g.user("a"), g.user("b"), g.user("c")
	ch := domain.Channel{
		ID: g.channel("x"), Kind: domain.KindGroup, Name: "x", CreatorID: a,
		Members: []domain.UserID{a, b}, CreatedAt: at(0),
	}
	batch := store.Batch{
		Projection: proj,
		Positions:  map[int32]int64{0: 3, 2: 17},
		Channels:   []domain.Channel{ch},
		Memberships: []store.Membership{
			{ChannelID: ch.ID, UserID: a, Member: true},
			{ChannelID: ch.ID, UserID: b, Member: true},
			{ChannelID: ch.ID, UserID: c, Member: true},
			{ChannelID: ch.ID, UserID: c, Member: false}, // later wins
		},
		Messages: []store.Message{
			{ChannelID: ch.ID, Offset: 1, MessageID: 11, SenderID: a, DeviceID: "phone", ClientMsgID: "m1", Text: "hello", SentAt: at(1)},
			{ChannelID: ch.ID, Offset: 2, MessageID: 12, SenderID: b, DeviceID: "web", ClientMsgID: "m2", Text: "héllo ✓", SentAt: at(2)},
		},
		Inbox: []store.InboxEntry{
			{UserID: b, Epoch: 1, Partition: 4, Offset: 40, Message: domain.InboxMessage{
				UserID: b, ChannelID: ch.ID, MessageID: 11, SenderID: a, Text: "hello", SentAt: at(1), ChannelPartition: 0, ChannelOffset: 1,
			}},
			{UserID: a, Epoch: 1, Partition: 3, Offset: 30, Message: domain.InboxMessage{
				UserID: a, ChannelID: ch.ID, MessageID: 12, SenderID: b, Text: "héllo ✓", SentAt: at(2), ChannelPartition: 0, ChannelOffset: 2,
			}},
		},
	}
	read := func() snapshot {
		t.Helper()
		var sn snapshot
		var err error
		sn.Positions, err = s.Positions(ctx, proj)
		must(t, err)
		got, err := s.Channel(ctx, ch.ID)
		must(t, err)
		sn.Channels = []domain.Channel{normChannel(got)}
		sn.Of = map[domain.UserID][]domain.ChannelID{}
		for _, u := range []domain.UserID{a, b, c} {
			of, err := s.ChannelsOf(ctx, u)
			must(t, err)
			if len(of) > 0 {
				sn.Of[u] = of
			}
		}
		msgs, err := s.MessagesAfter(ctx, ch.ID, -1, 100)
		must(t, err)
		sn.Messages = normMsgs(msgs)
		for _, u := range []domain.UserID{a, b, c} {
			in, err := s.Inbox(ctx, u, 1, -1, 100)
			must(t, err)
			sn.Inbox = append(sn.Inbox, normInbox(in)...)
		}
		return sn
	}
	want := snapshot{
		Positions: batch.Positions,
		Channels:  []domain.Channel{ch},
		Of:        map[domain.UserID][]domain.ChannelID{a: {ch.ID}, b: {ch.ID}},
		Messages:  batch.Messages,
		Inbox:     []store.InboxEntry{batch.Inbox[1], batch.Inbox[0]},
	}
	for i := range 2 {
		apply(t, s, batch)
		check(t, fmt.Sprintf("state after applying the batch %d times", i+1), read(), want)
	}
}

func testPositionsPerProjection(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	history, inbox, never := g.projection("history"), g.projection("inbox"), g.projection("never")
	apply(t, s, store.Batch{Projection: history, Positions: map[int32]int64{0: 5, 1: 7}})
	apply(t, s, store.Batch{Projection: inbox, Positions: map[int32]int64{0: 9}})
	apply(t, s, store.Batch{Projection: history, Positions: map[int32]int64{1: 8, 3: 1}})
	tests := []struct {
		projection string
		want       map[int32]int64
	}{
		{history, map[int32]int64{0: 5, 1: 8, 3: 1}},
		{inbox, map[int32]int64{0: 9}},
		{never, map[int32]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.projection, func(t *testing.T) {
			got, err := s.Positions(ctx, tt.projection)
			must(t, err)
			if len(got) != len(tt.want) || (len(got) > 0 && !reflect.DeepEqual(got, tt.want)) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func testChannelUpsert(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	a, b, c := g.user("a"), g.user("b"), g.user("c")
	id := g.channel("x")
	if _, err := s.Channel(ctx, id); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("Channel before it exists: got %v, want ErrNotFound", err)
	}
	v1 := domain.Channel{ID: id, Kind: domain.KindGroup, Name: "x", CreatorID: a, Members: []domain.UserID{a, b}, CreatedAt: at(1)}
	v2 := v1
	v2.Members = []domain.UserID{a, b, c}
	d := domain.Channel{ID: domain.DirectChannelID(a, b), Kind: domain.KindDirect, CreatorID: a, Members: []domain.UserID{a, b}, CreatedAt: at(2)}
	for _, want := range []domain.Channel{v1, v2, d} {
		apply(t, s, store.Batch{Channels: []domain.Channel{want}})
		got, err := s.Channel(ctx, want.ID)
		must(t, err)
		check(t, "Channel", normChannel(got), want)
	}
	got, err := s.Channel(ctx, id)
	must(t, err)
	check(t, "group after another channel's write", normChannel(got), v2)
	// What a caller does to its copy (a store may keep states it read)
	// is not the store's.
	got.Members[0] = "changed"
	got, err = s.Channel(ctx, id)
	must(t, err)
	check(t, "group after a caller changed its copy", normChannel(got), v2)
}

func testChannelsOf(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	u, v := g.user("u"), g.user("v")
	c1, c2, c3 := g.channel("1"), g.channel("2"), g.channel("3")
	apply(t, s, store.Batch{Memberships: []store.Membership{
		{ChannelID: c3, UserID: u, Member: true},
		{ChannelID: c1, UserID: u, Member: true},
		{ChannelID: c2, UserID: u, Member: true},
		{ChannelID: c2, UserID: v, Member: true},
	}})
	apply(t, s, store.Batch{Memberships: []store.Membership{
		{ChannelID: c2, UserID: u, Member: false},
		{ChannelID: c1, UserID: u, Member: true},  // again: no change
		{ChannelID: c3, UserID: v, Member: false}, // never a member: no change
	}})
	tests := []struct {
		user domain.UserID
		want []domain.ChannelID
	}{
		{u, []domain.ChannelID{c1, c3}},
		{v, []domain.ChannelID{c2}},
		{g.user("nobody"), nil},
	}
	for _, tt := range tests {
		t.Run(string(tt.user), func(t *testing.T) {
			got, err := s.ChannelsOf(ctx, tt.user)
			must(t, err)
			if len(got) != len(tt.want) || (len(got) > 0 && !slices.Equal(got, tt.want)) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// messages returns n messages of ch at the given offsets.
func messages(ch domain.ChannelID, sender domain.UserID, n int, offset func(i int) int64) []store.Message {
	ms := make([]store.Message, n)
	for i := range ms {
		ms[i] = store.Message{
			ChannelID: ch, Offset: offset(i), MessageID: domain.MessageID(1_000_000 + i),
			SenderID: sender, DeviceID: "d", ClientMsgID: fmt.Sprint("c", i),
			Text: fmt.Sprint("message ", i), SentAt: at(i),
		}
	}
	return ms
}

// applyMessages writes ms in batches of 50.
func applyMessages(t testing.TB, s store.Store, ms []store.Message) {
	t.Helper()
	for len(ms) > 0 {
		n := min(len(ms), 50)
		apply(t, s, store.Batch{Messages: ms[:n]})
		ms = ms[n:]
	}
}

func reversed[T any](s []T) []T {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

func testMessagesBounds(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	ch, other := g.channel("x"), g.channel("y")
	ms := messages(ch, g.user("a"), 10, func(i int) int64 { return int64(100 + 10*i) }) // 100..190
	applyMessages(t, s, ms)
	applyMessages(t, s, messages(other, g.user("a"), 10, func(i int) int64 { return int64(100 + 10*i + 5) }))
	tests := []struct {
		name string
		read func() ([]store.Message, error)
		want []store.Message
	}{
		{"BeforeIsExclusive", func() ([]store.Message, error) { return s.MessagesBefore(ctx, ch, 150, 3) }, reversed(ms[2:5])},
		{"BeforeBetweenOffsets", func() ([]store.Message, error) { return s.MessagesBefore(ctx, ch, 155, 3) }, reversed(ms[3:6])},
		{"BeforeNewest", func() ([]store.Message, error) { return s.MessagesBefore(ctx, ch, math.MaxInt64, 2) }, reversed(ms[8:])},
		{"BeforeShort", func() ([]store.Message, error) { return s.MessagesBefore(ctx, ch, 120, 50) }, reversed(ms[:2])},
		{"BeforeFirst", func() ([]store.Message, error) { return s.MessagesBefore(ctx, ch, 100, 50) }, nil},
		{"BeforeAll", func() ([]store.Message, error) { return s.MessagesBefore(ctx, ch, math.MaxInt64, 1000) }, reversed(ms)},
		{"AfterIsExclusive", func() ([]store.Message, error) { return s.MessagesAfter(ctx, ch, 150, 3) }, ms[6:9]},
		{"AfterBetweenOffsets", func() ([]store.Message, error) { return s.MessagesAfter(ctx, ch, 145, 3) }, ms[5:8]},
		{"AfterOldest", func() ([]store.Message, error) { return s.MessagesAfter(ctx, ch, -1, 2) }, ms[:2]},
		{"AfterShort", func() ([]store.Message, error) { return s.MessagesAfter(ctx, ch, 170, 50) }, ms[8:]},
		{"AfterLast", func() ([]store.Message, error) { return s.MessagesAfter(ctx, ch, 190, 50) }, nil},
		{"AfterAll", func() ([]store.Message, error) { return s.MessagesAfter(ctx, ch, -1, 1000) }, ms},
		{"UnknownChannel", func() ([]store.Message, error) { return s.MessagesBefore(ctx, g.channel("z"), math.MaxInt64, 10) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.read()
			must(t, err)
			if len(got) != len(tt.want) || (len(got) > 0 && !reflect.DeepEqual(normMsgs(got), tt.want)) {
				t.Fatalf("got %d messages %v\nwant %d %v", len(got), offsets(got), len(tt.want), offsets(tt.want))
			}
		})
	}
}

func offsets(ms []store.Message) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Offset
	}
	return out
}

func testMessagesPaging(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	layouts := []struct {
		name   string
		offset func(i int) int64
	}{
		{"Dense", func(i int) int64 { return int64(i) }},
		{"Sparse", func(i int) int64 { return int64(i) * 1_000_003 }},
		{"Growing", func(i int) int64 { return int64(i) * int64(i) * 104_729 }}, // gaps from 0 to ~5e10
	}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			ch := g.channel(l.name)
			ms := messages(ch, g.user("a"), 250, l.offset)
			applyMessages(t, s, ms)
			for _, size := range []int{1, 7, 50, 100, 249, 250, 1000} {
				t.Run(fmt.Sprint("Backward", size), func(t *testing.T) {
					var got []store.Message
					for before, pages := int64(math.MaxInt64), 0; ; pages++ {
						if pages > len(ms)+1 {
							t.Fatal("paging does not end")
						}
						page, err := s.MessagesBefore(ctx, ch, before, size)
						must(t, err)
						if len(page) > size {
							t.Fatalf("page of %d messages, limit %d", len(page), size)
						}
						if len(page) == 0 {
							break
						}
						got = append(got, page...)
						before = page[len(page)-1].Offset
					}
					check(t, "offsets paged backwards", offsets(got), offsets(reversed(ms)))
					check(t, "messages paged backwards", normMsgs(got), reversed(ms))
				})
				t.Run(fmt.Sprint("Forward", size), func(t *testing.T) {
					var got []store.Message
					for after, pages := int64(-1), 0; ; pages++ {
						if pages > len(ms)+1 {
							t.Fatal("paging does not end")
						}
						page, err := s.MessagesAfter(ctx, ch, after, size)
						must(t, err)
						if len(page) > size {
							t.Fatalf("page of %d messages, limit %d", len(page), size)
						}
						if len(page) == 0 {
							break
						}
						got = append(got, page...)
						after = page[len(page)-1].Offset
					}
					check(t, "offsets paged forwards", offsets(got), offsets(ms))
					check(t, "messages paged forwards", normMsgs(got), ms)
				})
			}
			// From the middle, both ways, around a message.
			mid := ms[125].Offset
			back, err := s.MessagesBefore(ctx, ch, mid, 10)
			must(t, err)
			check(t, "10 before the middle", offsets(back), offsets(reversed(ms[115:125])))
			fwd, err := s.MessagesAfter(ctx, ch, mid, 10)
			must(t, err)
			check(t, "10 after the middle", offsets(fwd), offsets(ms[126:136]))
		})
	}
}

func testMessageByID(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	ch, other := g.channel("x"), g.channel("y")
	ms := messages(ch, g.user("a"), 20, func(i int) int64 { return int64(i) * 7 })
	applyMessages(t, s, ms)
	for _, m := range []store.Message{ms[0], ms[13], ms[19]} {
		got, err := s.MessageByID(ctx, ch, m.MessageID)
		must(t, err)
		check(t, "MessageByID", normMsgs([]store.Message{got})[0], m)
	}
	tests := []struct {
		name string
		ch   domain.ChannelID
		id   domain.MessageID
	}{
		{"UnknownID", ch, 42},
		{"OtherChannel", other, ms[0].MessageID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.MessageByID(ctx, tt.ch, tt.id); !errors.Is(err, domain.ErrNotFound) {
				t.Fatalf("got %v, want ErrNotFound", err)
			}
		})
	}
}

func testInbox(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	u, v := g.user("u"), g.user("v")
	entry := func(user domain.UserID, epoch int32, offset int64) store.InboxEntry {
		return store.InboxEntry{UserID: user, Epoch: epoch, Partition: 2, Offset: offset, Message: domain.InboxMessage{
			UserID: user, ChannelID: g.channel("x"), MessageID: domain.MessageID(offset + 1), SenderID: v,
			Text: fmt.Sprint("to ", user, " at ", epoch, "/", offset), SentAt: at(int(offset)),
			ChannelPartition: 1, ChannelOffset: offset * 3,
		}}
	}
	var uEpoch1 []store.InboxEntry
	var batch store.Batch
	for i := range 40 {
		off := int64(i) * 1_000_003
		uEpoch1 = append(uEpoch1, entry(u, 1, off))
		batch.Inbox = append(batch.Inbox, entry(u, 1, off), entry(u, 2, off), entry(v, 1, off))
	}
	batch.Inbox = append(batch.Inbox, entry(u, 0, 5), entry(u, -1, 5))
	apply(t, s, batch)

	tests := []struct {
		name  string
		user  domain.UserID
		epoch int32
		after int64
		limit int
		want  []store.InboxEntry
	}{
		{"All", u, 1, -1, 1000, uEpoch1},
		{"AfterIsExclusive", u, 1, uEpoch1[4].Offset, 3, uEpoch1[5:8]},
		{"AfterBetweenOffsets", u, 1, uEpoch1[4].Offset + 1, 3, uEpoch1[5:8]},
		{"Tail", u, 1, uEpoch1[37].Offset, 10, uEpoch1[38:]},
		{"AfterLast", u, 1, uEpoch1[39].Offset, 10, nil},
		{"OtherEpochEmpty", u, 3, -1, 10, nil},
		{"EpochZero", u, 0, -1, 10, []store.InboxEntry{entry(u, 0, 5)}},
		{"OtherUser", v, 1, uEpoch1[38].Offset, 10, []store.InboxEntry{entry(v, 1, uEpoch1[39].Offset)}},
		{"UnknownUser", g.user("w"), 1, -1, 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Inbox(ctx, tt.user, tt.epoch, tt.after, tt.limit)
			must(t, err)
			if len(got) != len(tt.want) || (len(got) > 0 && !reflect.DeepEqual(normInbox(got), tt.want)) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	for _, size := range []int{1, 3, 40} {
		t.Run(fmt.Sprint("Paging", size), func(t *testing.T) {
			var got []store.InboxEntry
			for after, pages := int64(-1), 0; ; pages++ {
				if pages > 41 {
					t.Fatal("paging does not end")
				}
				page, err := s.Inbox(ctx, u, 1, after, size)
				must(t, err)
				if len(page) > size {
					t.Fatalf("page of %d entries, limit %d", len(page), size)
				}
				if len(page) == 0 {
					break
				}
				got = append(got, page...)
				after = page[len(page)-1].Offset
			}
			check(t, "inbox paged", normInbox(got), uEpoch1)
		})
	}
}

func testInboxByMessage(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	v := g.user("v")
	// entry copies message id to user at (epoch, offset); copies of one
	// message differ only in their position.
	entry := func(user domain.UserID, epoch int32, offset int64, id domain.MessageID) store.InboxEntry {
		return store.InboxEntry{UserID: user, Epoch: epoch, Partition: int32(offset % 3), Offset: offset, Message: domain.InboxMessage{
			UserID: user, ChannelID: g.channel("x"), MessageID: id, SenderID: v,
			Text: fmt.Sprint("message ", id, " to ", user), SentAt: at(int(id % 1000)),
			ChannelPartition: 1, ChannelOffset: int64(id % 1000),
		}}
	}
	find := func(t *testing.T, user domain.UserID, epoch int32, id domain.MessageID, want store.InboxEntry) {
		t.Helper()
		got, err := s.InboxByMessage(ctx, user, epoch, id)
		if err != nil {
			t.Fatalf("InboxByMessage(%s, %d, %d): %v", user, epoch, id, err)
		}
		check(t, fmt.Sprintf("InboxByMessage(%s, %d, %d)", user, epoch, id), normInbox([]store.InboxEntry{got})[0], want)
	}
	notFound := func(t *testing.T, user domain.UserID, epoch int32, id domain.MessageID) {
		t.Helper()
		if got, err := s.InboxByMessage(ctx, user, epoch, id); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("InboxByMessage(%s, %d, %d): got %+v, %v; want ErrNotFound", user, epoch, id, got, err)
		}
	}
	const id = domain.MessageID(1<<63 + 42) // above MaxInt64: ids are unsigned

	t.Run("NotFoundBefore", func(t *testing.T) {
		u := g.user("before")
		notFound(t, u, 1, id)
		e := entry(u, 1, 7, id)
		apply(t, s, store.Batch{Inbox: []store.InboxEntry{e}})
		find(t, u, 1, id, e)
	})

	// Two copies of one message at offsets 7 and 9, written in one batch
	// (in either order) or in two (in either order): the first copy, at
	// offset 7, is the one found, also after applying everything again.
	layouts := []struct {
		name    string
		batches func(first, second store.InboxEntry) [][]store.InboxEntry
	}{
		{"OneBatch", func(a, b store.InboxEntry) [][]store.InboxEntry { return [][]store.InboxEntry{{a, b}} }},
		{"OneBatchReversed", func(a, b store.InboxEntry) [][]store.InboxEntry { return [][]store.InboxEntry{{b, a}} }},
		{"TwoBatches", func(a, b store.InboxEntry) [][]store.InboxEntry { return [][]store.InboxEntry{{a}, {b}} }},
		{"TwoBatchesReversed", func(a, b store.InboxEntry) [][]store.InboxEntry { return [][]store.InboxEntry{{b}, {a}} }},
	}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			u := g.user(l.name)
			first, second := entry(u, 1, 7, id), entry(u, 1, 9, id)
			batches := l.batches(first, second)
			lowest := second
			for range 2 {
				for _, b := range batches {
					apply(t, s, store.Batch{Inbox: b})
					for _, e := range b {
						if e.Offset < lowest.Offset {
							lowest = e
						}
					}
					find(t, u, 1, id, lowest) // the lowest offset applied so far
				}
				find(t, u, 1, id, first)
			}
			// Both copies stay in the inbox.
			all, err := s.Inbox(ctx, u, 1, -1, 10)
			must(t, err)
			check(t, "inbox", normInbox(all), []store.InboxEntry{first, second})
		})
	}

	t.Run("NoLeaks", func(t *testing.T) {
		u, w := g.user("u"), g.user("w")
		mine := entry(u, 1, 7, id)
		apply(t, s, store.Batch{Inbox: []store.InboxEntry{
			entry(u, 1, 9, id), mine,
			entry(u, 1, 8, id+1), // another message, between the copies
			entry(u, 2, 3, id),   // the message in another epoch, lower
			entry(u, 0, 5, id),
			entry(v, 1, 1, id), // the message in another user's inbox, lower
			entry(v, 1, 11, id),
		}})
		find(t, u, 1, id, mine)
		find(t, u, 1, id+1, entry(u, 1, 8, id+1))
		find(t, u, 2, id, entry(u, 2, 3, id))
		find(t, u, 0, id, entry(u, 0, 5, id))
		find(t, v, 1, id, entry(v, 1, 1, id))
		notFound(t, u, 3, id)   // an epoch without it
		notFound(t, u, -1, id)  // a negative epoch without it
		notFound(t, u, 1, id+2) // a message not in the inbox
		notFound(t, u, 1, id-1) // nor a neighbouring id
		notFound(t, v, 1, id+1) // in u's inbox, not in v's
		notFound(t, w, 1, id)   // a user without an inbox
		notFound(t, g.user(""), 1, id)
	})
}
