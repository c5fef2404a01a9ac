package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// sendDecisions reads the decisions of keys, failing t on an error.
func sendDecisions(t testing.TB, s store.Store, keys []store.SendKey) map[store.SendKey]store.SendDecision {
	t.Helper()
	got, err := s.SendDecisions(context.Background(), keys)
	if err != nil {
		t.Fatalf("SendDecisions: %v", err)
	}
	return got
}

// byKey is ds as SendDecisions returns them.
func byKey(ds ...store.SendDecision) map[store.SendKey]store.SendDecision {
	m := make(map[store.SendKey]store.SendDecision, len(ds))
	for _, d := range ds {
		m[d.SendKey] = d
	}
	return m
}

// checkDecisions checks that got holds exactly want. An empty got may be
// nil.
func checkDecisions(t testing.TB, what string, got, want map[store.SendKey]store.SendDecision) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	check(t, what, got, want)
}

// testSendDecisions: SendDecisions returns exactly what Apply wrote (the
// batch's positions too), every field, for the keys that have a decision,
// and omits the others. The key is the pair: keys that differ only in the sender, only
// in the client message id, or that split the same bytes differently
// between the two are distinct.
func testSendDecisions(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	u, v := g.user("1"), g.user("2")
	ch, other := g.channel("a"), g.channel("b")
	ds := []store.SendDecision{
		{SendKey: store.SendKey{SenderID: u, ClientMsgID: "c-1"}, ChannelID: ch, MessageID: 1001,
			TextHash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Partition: 3, Offset: 17},
		// Only the sender differs.
		{SendKey: store.SendKey{SenderID: v, ClientMsgID: "c-1"}, ChannelID: ch, MessageID: 1002,
			TextHash: "h-2", Partition: 0, Offset: 0},
		// Only the client message id differs.
		{SendKey: store.SendKey{SenderID: u, ClientMsgID: "c-2"}, ChannelID: other, MessageID: 1003,
			TextHash: "h-3", Partition: 11, Offset: 1 << 40},
		// Unusual characters, and a message id and an offset at the ends
		// of their ranges.
		{SendKey: store.SendKey{SenderID: u, ClientMsgID: "c/ü 'x'; \"y\" -- \x00\n\t🙂%_*"}, ChannelID: ch,
			MessageID: domain.MessageID(1<<63 + 5), TextHash: "", Partition: 2147483647, Offset: 9223372036854775807},
		// The same bytes as ("u", "-c9"), split after them.
		{SendKey: store.SendKey{SenderID: u + "-c", ClientMsgID: "9"}, ChannelID: ch, MessageID: 1004,
			TextHash: "h-4", Partition: 1, Offset: 5},
		{SendKey: store.SendKey{SenderID: u, ClientMsgID: "-c9"}, ChannelID: other, MessageID: 1005,
			TextHash: "h-5", Partition: 2, Offset: 6},
	}
	absent := []store.SendKey{
		{SenderID: u, ClientMsgID: "never"},
		{SenderID: g.user("nobody"), ClientMsgID: "c-1"},
		{SenderID: u, ClientMsgID: "c-1 "},     // a longer id than a decided one
		{SenderID: u, ClientMsgID: "c-"},       // a shorter one
		{SenderID: u + "-", ClientMsgID: "c9"}, // the bytes of ("u", "-c9") split otherwise again
	}
	var keys []store.SendKey
	for _, d := range ds {
		keys = append(keys, d.SendKey)
	}

	checkDecisions(t, "SendDecisions before Apply", sendDecisions(t, s, keys), nil)
	must(t, s.Apply(ctx, store.Batch{Decisions: nil}))
	// With the processor's progress, as the sends processor writes them.
	proj := g.projection("sends")
	progress := map[int32]int64{3: 18, 11: 1<<40 + 1}
	must(t, s.Apply(ctx, store.Batch{Projection: proj, Decisions: ds, Positions: progress}))
	pos, err := s.Positions(ctx, proj)
	must(t, err)
	check(t, "the progress saved with the decisions", pos, progress)

	checkDecisions(t, "SendDecisions of the saved keys", sendDecisions(t, s, keys), byKey(ds...))
	for _, d := range ds {
		checkDecisions(t, fmt.Sprintf("SendDecisions of (%q, %q) alone", d.SenderID, d.ClientMsgID),
			sendDecisions(t, s, []store.SendKey{d.SendKey}), byKey(d))
	}
	checkDecisions(t, "SendDecisions of absent keys", sendDecisions(t, s, absent), nil)
	mixed := []store.SendKey{absent[0], keys[2], absent[1], keys[0], keys[2]} // and a key asked twice
	checkDecisions(t, "SendDecisions of present and absent keys", sendDecisions(t, s, mixed), byKey(ds[2], ds[0]))
	for _, none := range [][]store.SendKey{nil, {}} {
		checkDecisions(t, "SendDecisions of no keys", sendDecisions(t, s, none), nil)
	}
}

// testSendDecisionsAgain: saving decisions again, alone or among others,
// is no error and changes nothing.
func testSendDecisionsAgain(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	ch := g.channel("a")
	d := func(sender, client string, id domain.MessageID, offset int64) store.SendDecision {
		return store.SendDecision{SendKey: store.SendKey{SenderID: g.user(sender), ClientMsgID: client},
			ChannelID: ch, MessageID: id, TextHash: fmt.Sprint("hash-", id), Partition: 4, Offset: offset}
	}
	first := []store.SendDecision{d("1", "c-1", 2001, 10), d("1", "c-2", 2002, 11)}
	later := d("2", "c-1", 2003, 12)
	keys := []store.SendKey{first[0].SendKey, first[1].SendKey, later.SendKey}

	must(t, s.Apply(ctx, store.Batch{Decisions: first}))
	checkDecisions(t, "after the first save", sendDecisions(t, s, keys), byKey(first...))
	must(t, s.Apply(ctx, store.Batch{Decisions: first}))
	checkDecisions(t, "after the same save again", sendDecisions(t, s, keys), byKey(first...))
	// One of them again, with a new one, and a decision twice in one call.
	must(t, s.Apply(ctx, store.Batch{Decisions: []store.SendDecision{later, first[1], later}}))
	checkDecisions(t, "after a save of one again with another", sendDecisions(t, s, keys), byKey(first[0], first[1], later))
}

// testSendDecisionsMany: many decisions of many senders in one call (more
// than one request's worth, for a store that packs them into requests),
// all read back in one call.
func testSendDecisionsMany(t *testing.T, s store.Store) {
	ctx := context.Background()
	g := newIDs(t)
	const senders, each = 50, 5
	var (
		ds   []store.SendDecision
		keys []store.SendKey
	)
	for i := range senders {
		for j := range each {
			n := i*each + j
			d := store.SendDecision{
				SendKey:   store.SendKey{SenderID: g.user(fmt.Sprint("s", i)), ClientMsgID: fmt.Sprintf("client-%d-%d", i, j)},
				ChannelID: g.channel(fmt.Sprint("c", n%7)),
				MessageID: domain.MessageID(3_000_000 + n),
				TextHash:  fmt.Sprintf("%064x", n*7919),
				Partition: int32(n % 12),
				Offset:    int64(1000 + n),
			}
			ds = append(ds, d)
			keys = append(keys, d.SendKey)
		}
	}
	must(t, s.Apply(ctx, store.Batch{Decisions: ds}))
	got := sendDecisions(t, s, append(keys, store.SendKey{SenderID: g.user("s0"), ClientMsgID: "client-0-5"}))
	if len(got) != len(ds) {
		t.Errorf("SendDecisions of %d saved keys and one absent: %d decisions", len(ds), len(got))
	}
	for _, d := range ds {
		if r, ok := got[d.SendKey]; !ok || r != d {
			t.Fatalf("SendDecisions of (%s, %s): got %+v (found %v), want %+v", d.SenderID, d.ClientMsgID, r, ok, d)
		}
	}
}
