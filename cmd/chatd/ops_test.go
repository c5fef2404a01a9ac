package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/inbox"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/cassandra"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// TestVerifyAndReplay: verify agrees on a healthy node; a message's text
// corrupted in the store on purpose is caught, down to the channel and the
// offset; a replay of history repairs it, while messages keep flowing; the
// inbox verifies too.
func TestVerifyAndReplay(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob := n.signUp("ann"), n.signUp("bob")
		tok := n.login(ann, "phone")
		n.login(bob, "phone")
		g := n.createChannel(tok, "group", bob.ID)
		w := n.connect(tok)
		for i := range 20 {
			if f := w.send(g.ChannelID, fmt.Sprint(i), fmt.Sprint("message ", i)); f.Type != "ack" {
				t.Fatalf("send: %+v", f)
			}
		}
		waitFor(t, func() bool { return len(n.history(tok, g.ChannelID, "limit=100").Messages) == 20 })
		for _, p := range []string{"history", "fanout", "inbox", "sends"} {
			var out string
			if !waitUntil(time.Minute, func() bool {
				var ok bool
				out, ok = n.ops("verify", "--projection", p)
				return ok
			}) {
				t.Fatalf("verify %s:\n%s", p, out)
			}
		}

		// Corrupt one message's text in the store.
		h := n.history(tok, g.ChannelID, "limit=100")
		victim := h.Messages[7]
		n.corrupt(func(st store.Store) {
			m, err := st.MessageByID(context.Background(), domain.ChannelID(g.ChannelID), mustID(t, victim.MessageID))
			if err != nil {
				t.Fatal(err)
			}
			m.Text = "tampered"
			if err := st.Apply(context.Background(), store.Batch{Projection: "corruption", Messages: []store.Message{m}}); err != nil {
				t.Fatal(err)
			}
		})
		out, ok := n.ops("verify", "--projection", "history")
		if ok || !strings.Contains(out, "channel "+g.ChannelID) || !strings.Contains(out, fmt.Sprintf("offset %d", victim.Seq)) {
			t.Fatalf("verify did not catch the corruption (ok=%v):\n%s", ok, out)
		}

		// Replay while messages keep flowing.
		tok2 := n.login(ann, "laptop")
		w2 := n.connect(tok2)
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range 40 {
				if f := w2.send(g.ChannelID, fmt.Sprint("live", i), fmt.Sprint("live ", i)); f.Type != "ack" {
					t.Errorf("send during replay: %+v", f)
				}
			}
		})
		out, ok = n.ops("replay", "--projection", "history")
		if !ok || !strings.Contains(out, "replay history done") {
			t.Fatalf("replay:\n%s", out)
		}
		wg.Wait()
		waitFor(t, func() bool { return len(n.allHistory(tok, g.ChannelID, 200)) == 60 })
		if out, ok := n.ops("verify", "--projection", "history"); !ok || !strings.Contains(out, "they agree") {
			t.Fatalf("verify after replay:\n%s", out)
		}
		seen := map[string]bool{}
		for _, m := range n.allHistory(tok, g.ChannelID, 200) {
			if seen[m.MessageID] || m.Text == "tampered" {
				t.Fatalf("after replay: duplicate or tampered %+v", m)
			}
			seen[m.MessageID] = true
		}
		// Replay from an offset re-applies (idempotently).
		if out, ok := n.ops("replay", "--projection", "cursors", "--from", "offset:3"); !ok || !strings.Contains(out, "replay cursors done") {
			t.Fatalf("replay cursors from offset:\n%s", out)
		}
		if out, ok := n.ops("verify", "--projection", "inbox"); !ok || !strings.Contains(out, "verify inbox epoch 1: compared 2 users") {
			t.Fatalf("verify inbox:\n%s", out)
		}
		// Cursors, replayed in place, agree with the session topic, and so
		// does presence (ann and bob online).
		waitFor(t, func() bool { _, ok := n.ops("verify", "--projection", "cursors"); return ok })
		waitFor(t, func() bool {
			out, ok := n.ops("verify", "--projection", "presence")
			return ok && strings.Contains(out, "verify presence epoch 1: compared 2 users")
		})
		// Bad input to the operator's commands.
		if out, ok := n.ops("replay", "--projection", "nonsense"); ok || !strings.Contains(out, "bad_request") {
			t.Fatalf("replay of an unknown projection:\n%s", out)
		}
		if out, ok := n.ops("replay", "--projection", "history", "--from", "yesterday"); ok || !strings.Contains(out, "bad_request") {
			t.Fatalf("replay from nonsense:\n%s", out)
		}
		if out, ok := n.ops("replay", "--projection", "fanout", "--from", "offset:3"); ok || !strings.Contains(out, "bad_request") {
			t.Fatalf("replay of the fan-out from an offset:\n%s", out)
		}
	})
}

// TestVerifyCatchesCorruption: verify compares the inbox of the epoch the
// node reads, under that epoch's positions, and history, and says how many
// users or channels and events it compared. Each change made to the store
// behind the node's back (an inbox entry and a message changed, deleted,
// added) fails verify, which names the user and the position, or the
// channel and the offset; undone, verify agrees again.
func TestVerifyCatchesCorruption(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob := n.signUp("ann"), n.signUp("bob")
		tok := n.login(ann, "phone")
		n.login(bob, "phone")
		g := n.createChannel(tok, "group", bob.ID)
		w := n.connect(tok)
		const sent = 10
		for i := range sent {
			if f := w.send(g.ChannelID, fmt.Sprint(i), fmt.Sprint("message ", i)); f.Type != "ack" {
				t.Fatalf("send: %+v", f)
			}
		}
		w.c.Close()
		// agree waits until verify passes having compared what was sent
		// (the fan-out and the projections may still be behind), and
		// holds it to the counts.
		agree := func() {
			t.Helper()
			for _, c := range []struct {
				projection, summary string
				entities, events    int
			}{
				{"history", "verify history: compared ", 1, sent + 1}, // channel.created and the messages
				{"inbox", "verify inbox epoch 1: compared ", 2, 2 * sent},
			} {
				var out string
				var ok bool
				var entities, events int
				for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
					out, ok = n.ops("verify", "--projection", c.projection)
					if entities, events = compared(t, out); ok && entities == c.entities && events >= c.events {
						break
					}
				}
				if !ok || !strings.Contains(out, c.summary) || !strings.Contains(out, "they agree") || entities != c.entities || events < c.events {
					t.Fatalf("verify %s compared %d and %d events, want %d and at least %d:\n%s", c.projection, entities, events, c.entities, c.events, out)
				}
			}
		}
		// disagree expects both verifications to fail, each output saying
		// every string of its list.
		disagree := func(inboxSays, historySays []string) {
			t.Helper()
			for p, says := range map[string][]string{"inbox": inboxSays, "history": historySays} {
				out, ok := n.ops("verify", "--projection", p)
				t.Logf("%s", out)
				if entities, events := compared(t, out); ok || entities == 0 || events == 0 {
					t.Errorf("verify %s did not catch the change (ok=%v):\n%s", p, ok, out)
				}
				for _, s := range says {
					if !strings.Contains(out, s) {
						t.Errorf("verify %s does not say %q:\n%s", p, s, out)
					}
				}
			}
		}
		agree()

		users := []domain.UserID{domain.UserID(ann.ID), domain.UserID(bob.ID)}
		ch := domain.ChannelID(g.ChannelID)
		who := func(e store.InboxEntry) string {
			return fmt.Sprintf("inbox epoch 1, user %s, position %d (partition %d)", e.UserID, e.Offset, e.Partition)
		}
		where := func(m store.Message) string {
			return fmt.Sprintf("channel %s: message %s at offset %d", m.ChannelID, m.MessageID, m.Offset)
		}
		var entries []store.InboxEntry // bob's
		var msgs []store.Message
		var changedEntry store.InboxEntry
		var changedMsg store.Message
		n.corrupt(func(st store.Store) {
			entries = inboxOf(t, st, users[1:])
			msgs = messagesOf(t, st, ch)
			if len(entries) != sent || len(msgs) != sent {
				t.Fatalf("the store has %d of bob's entries and %d messages, want %d", len(entries), len(msgs), sent)
			}
			changedEntry, changedMsg = entries[3], msgs[5]
			changedEntry.Message.Text, changedMsg.Text = "tampered", "tampered"
			apply(t, st, store.Batch{Projection: "corruption", Inbox: []store.InboxEntry{changedEntry}, Messages: []store.Message{changedMsg}})
		})
		disagree([]string{who(entries[3]), "the entry differs", "tampered", "repair: chatd replay --projection fanout"},
			[]string{where(msgs[5]) + " differs", "tampered", "repair: chatd replay --projection history"})

		n.corrupt(func(st store.Store) {
			apply(t, st, store.Batch{Projection: "corruption", Inbox: []store.InboxEntry{entries[3]}, Messages: []store.Message{msgs[5]}})
			dropInbox(t, st, users, func(e store.InboxEntry) bool { return e.UserID == entries[4].UserID && e.Offset == entries[4].Offset })
			dropMessages(t, st, ch, func(m store.Message) bool { return m.Offset == msgs[6].Offset })
		})
		disagree([]string{who(entries[4]), "is missing from the store"}, []string{where(msgs[6]) + " is missing from the store"})

		forgedEntry := entries[0]
		forgedEntry.Offset = freeOffset(t, entries, func(e store.InboxEntry) int64 { return e.Offset })
		forgedEntry.Message.MessageID = 1
		forgedMsg := msgs[0]
		forgedMsg.Offset = freeOffset(t, msgs, func(m store.Message) int64 { return m.Offset })
		forgedMsg.MessageID = 1
		n.corrupt(func(st store.Store) {
			apply(t, st, store.Batch{Projection: "corruption", Inbox: []store.InboxEntry{entries[4], forgedEntry}, Messages: []store.Message{msgs[6], forgedMsg}})
		})
		disagree([]string{who(forgedEntry), "message 1 is in the store but not in the log"}, []string{where(forgedMsg) + " is in the store but not in the log"})

		n.corrupt(func(st store.Store) {
			dropInbox(t, st, users, func(e store.InboxEntry) bool { return e.UserID == forgedEntry.UserID && e.Offset == forgedEntry.Offset })
			dropMessages(t, st, ch, func(m store.Message) bool { return m.Offset == forgedMsg.Offset })
		})
		agree()
	})
}

// compared reads how many entities and events verify's output says it
// compared.
func compared(t *testing.T, out string) (entities, events int) {
	t.Helper()
	m := regexp.MustCompile(`compared (\d+) (?:users|channels) and (\d+) events`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("verify does not say what it compared:\n%s", out)
	}
	entities, _ = strconv.Atoi(m[1])
	events, _ = strconv.Atoi(m[2])
	return entities, events
}

func apply(t *testing.T, st store.Store, b store.Batch) {
	t.Helper()
	if err := st.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

// inboxOf reads the users' inbox entries of epoch 1.
func inboxOf(t *testing.T, st store.Store, users []domain.UserID) []store.InboxEntry {
	t.Helper()
	var all []store.InboxEntry
	for _, u := range users {
		es, err := st.Inbox(context.Background(), u, 1, -1, 100_000)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
	}
	return all
}

func messagesOf(t *testing.T, st store.Store, ch domain.ChannelID) []store.Message {
	t.Helper()
	ms, err := st.MessagesAfter(context.Background(), ch, -1, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// dropInbox deletes the inbox entries (of epoch 1; users are all who
// have any) that drop picks: the store deletes nothing but a projection's
// whole state, so it resets the inbox's tables and writes back the rest.
// The inbox projection's positions, under inbox.e1, stay.
func dropInbox(t *testing.T, st store.Store, users []domain.UserID, drop func(store.InboxEntry) bool) {
	t.Helper()
	keep := slices.DeleteFunc(inboxOf(t, st, users), drop)
	if err := st.ResetProjection(context.Background(), inbox.Name); err != nil {
		t.Fatal(err)
	}
	apply(t, st, store.Batch{Projection: "corruption", Inbox: keep})
}

// dropMessages deletes the messages of ch (the only channel) that drop
// picks, as dropInbox does, keeping history's positions.
func dropMessages(t *testing.T, st store.Store, ch domain.ChannelID, drop func(store.Message) bool) {
	t.Helper()
	pos, err := st.Positions(context.Background(), history.Name)
	if err != nil {
		t.Fatal(err)
	}
	keep := slices.DeleteFunc(messagesOf(t, st, ch), drop)
	if err := st.ResetProjection(context.Background(), history.Name); err != nil {
		t.Fatal(err)
	}
	apply(t, st, store.Batch{Projection: history.Name, Positions: pos, Messages: keep})
}

// freeOffset returns the lowest offset below the highest of xs that none
// of xs has: the offset of another record (another user's entry, another
// event, a transaction marker) of the same partition.
func freeOffset[T any](t *testing.T, xs []T, offset func(T) int64) int64 {
	t.Helper()
	used := map[int64]bool{}
	var last int64
	for _, x := range xs {
		used[offset(x)] = true
		last = max(last, offset(x))
	}
	for o := range last {
		if !used[o] {
			return o
		}
	}
	t.Fatalf("no free offset below %d", last)
	return 0
}

// TestReplayFanoutAndPresence: rebuilding the fan-out writes inbox epoch 2
// while messages flow, and every node switches to it. A connected device
// is told to reconnect, and with its position of epoch 1 gets the rest,
// with nothing twice and nothing skipped; so does a device that was away
// during the switch, and a new one. Rebuilding presence writes presence
// epoch 2 without a single flap, and presence keeps working on it.
func TestReplayFanoutAndPresence(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b, "--presence-window", "5s", "--heartbeat", "100ms")
		ann, bob := n.signUp("ann"), n.signUp("bob")
		annTok, bobPhone, bobTablet := n.login(ann, "phone"), n.login(bob, "phone"), n.login(bob, "tablet")
		bobLaptop := n.login(bob, "laptop")
		g := n.createChannel(annTok, "group", bob.ID)
		d := n.createChannel(annTok, "direct", bob.ID)
		annWS, phone := n.connect(annTok), n.connect(bobPhone)
		// send sends as a client does: when the connection closes (the
		// epoch switch closes it), it reconnects and resends with the same
		// client message id, which never makes a second message.
		send := func(ch, cmid string) {
			for attempt := 0; attempt < 5; attempt++ {
				f, err := annWS.trySend(ch, cmid, "text "+cmid)
				if err == nil && f.Type == "ack" {
					return
				}
				if err == nil && f.Code != "unavailable" {
					t.Errorf("send %s: %+v", cmid, f)
					return
				}
				if err != nil {
					w, _, derr := n.dial(annTok)
					if derr != nil {
						t.Errorf("reconnect: %v", derr)
						return
					}
					annWS = w
				}
			}
			t.Errorf("send %s: no ack after 5 attempts", cmid)
		}
		// One at a time, each delivered before the next is sent: the live
		// fan-out commits one transaction per message, whose marker takes
		// an offset, where the rebuild will commit many messages at once.
		// So the positions of the two epochs differ.
		var got []frame // the phone's messages, over all its connections
		for i := range 15 {
			send([]string{g.ChannelID, d.ChannelID}[i%3/2], fmt.Sprint("before ", i))
			got = append(got, phone.messages(1)...)
		}
		tablet := n.resume(bobTablet, -1)
		had := tablet.messages(6)
		tablet.c.Close()

		// On the real servers, a second node of the deployment holds a
		// device of bob's too: it must switch as well.
		var peer *node
		var desk *wsClient
		var deskGot []frame
		total := 55
		if b.kafka != "" {
			peer = startPeer(t, n, 2, "--presence-window", "5s", "--heartbeat", "100ms")
			desk = peer.connect(n.login(bob, "desk"))
			// The desk gets a message before the rebuild starts: the
			// peer's joining moves partitions of every group (the sends
			// processor's too), and sends may wait for that while the
			// rebuild runs, so the "during" messages may all come after
			// the switch.
			send(g.ChannelID, "joined 50") // between "before 14" and "during 0"
			got = append(got, phone.messages(1)...)
			deskGot = desk.messages(1)
			total++
		}

		// Rebuild the fan-out while ann keeps sending.
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range 40 {
				send(g.ChannelID, fmt.Sprint("during ", i))
			}
		})
		out, ok := n.ops("replay", "--projection", "fanout")
		if !ok || !strings.Contains(out, "replay fanout done") || !strings.Contains(out, "inbox epoch 2") {
			t.Fatalf("replay fanout:\n%s", out)
		}
		wg.Wait()

		// The phone's connection is closed by the switch; it reconnects
		// with its position, as after any disconnect, and gets the rest.
		phone, _ = rideSwitch(t, "phone", phone, n, bobPhone, got, total)
		phone.quiet(time.Second)
		if peer != nil { // the desk got only what was sent after it connected
			desk, _ = rideSwitch(t, "desk (on the peer)", desk, peer, bob.Token["desk"], deskGot, total-15)
		}

		// The tablet was away during the switch: it resumes with its
		// epoch 1 position and gets exactly what it had not.
		tablet = n.connectQuery(bobTablet, "epoch=1", fmt.Sprintf("position=%d", *had[len(had)-1].Position))
		rest := tablet.messages(total - len(had))
		assertExactlyOnce(t, "tablet", append(had, rest...), total)
		if f, _ := tablet.readUntil("synced"); *f.Epoch != 2 {
			t.Errorf("tablet synced in epoch %d, want 2", *f.Epoch)
		}
		tablet.quiet(time.Second)
		// A new device gets everything; a position epoch 1 never had gets
		// resync.
		laptop := n.resume(bobLaptop, -1)
		all := laptop.messages(total)
		assertExactlyOnce(t, "laptop", all, total)
		// The carry-over matters: resuming epoch 2 after the tablet's
		// epoch 1 position, as if positions were the same in both, would
		// have skipped or repeated messages.
		var naive []string
		for _, f := range all {
			if *f.Position <= *had[len(had)-1].Position {
				naive = append(naive, f.MessageID)
			}
		}
		hadIDs := make([]string, 0, len(had))
		for _, f := range had {
			hadIDs = append(hadIDs, f.MessageID)
		}
		slices.Sort(naive)
		slices.Sort(hadIDs)
		if slices.Equal(naive, hadIDs) {
			t.Errorf("epoch 2 has the tablet's %d messages up to its epoch 1 position %d too: the test proves nothing", len(had), *had[len(had)-1].Position)
		}
		bogus := n.connectQuery(bobLaptop, "epoch=1", "position=100000")
		if f, _ := bogus.readUntil("resync"); *f.Epoch != 2 {
			t.Errorf("resync to epoch %d, want 2", *f.Epoch)
		}
		if out, ok := n.ops("verify", "--projection", "inbox"); !ok || !strings.Contains(out, "verify inbox epoch 2: compared 2 users") {
			t.Fatalf("verify inbox of epoch 2:\n%s", out)
		}
		waitFor(t, func() bool {
			out, ok := n.ops("verify", "--projection", "fanout")
			return ok && strings.Contains(out, "verify fanout epoch 2: compared")
		})
		// Live delivery runs on the new epoch (ann's connection was closed
		// by the switch too).
		annWS.c.Close()
		annWS = n.connect(annTok)
		send(d.ChannelID, "after")
		if f := tablet.messages(1)[0]; f.Text != "text after" || *f.Epoch != 2 {
			t.Errorf("after the switch: %+v", f)
		}

		// Rebuild presence: bob stays online, nobody sees a flap.
		waitFor(t, func() bool { return n.presence(annTok, bob.ID).Online })
		out, ok = n.ops("replay", "--projection", "presence")
		if !ok || !strings.Contains(out, "replay presence done") || !strings.Contains(out, "presence epoch 2") {
			t.Fatalf("replay presence:\n%s", out)
		}
		noPresence(t, annWS, bob.ID, 3*time.Second)
		if !n.presence(annTok, bob.ID).Online {
			t.Error("bob offline after the presence rebuild")
		}
		// And presence still follows the log: bob's devices go away.
		for _, w := range []*wsClient{phone, tablet, laptop, bogus, desk} {
			if w != nil {
				w.c.Close()
			}
		}
		waitFor(t, func() bool { return !n.presence(annTok, bob.ID).Online })
		// The rebuilt epoch agrees with the session topic, bob's going
		// offline included.
		waitFor(t, func() bool {
			out, ok := n.ops("verify", "--projection", "presence")
			return ok && strings.Contains(out, "verify presence epoch 2: compared")
		})
		n.validateTopics("epochs", "inbox.e2", "presence.e2")
	})
}

// rideSwitch reads w's messages (after those in got) until the epoch
// switch closes it, reconnects to n with the last position, reads until
// synced (in epoch 2) and until it has want messages, and checks them.
func rideSwitch(t *testing.T, who string, w *wsClient, n *node, token string, got []frame, want int) (*wsClient, []frame) {
	t.Helper()
	for {
		f, err := w.tryRead(20 * time.Second)
		if errors.Is(err, errTimeout) {
			t.Fatalf("%s: the switch did not close the connection", who)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "inbox epoch 2 started") {
				t.Errorf("%s: closed with %v", who, err)
			}
			break
		}
		if f.Type == "message" {
			got = append(got, f)
		}
	}
	if len(got) == 0 {
		t.Fatalf("%s: no message before the switch", who)
	}
	last := got[len(got)-1]
	w = n.connectQuery(token, fmt.Sprintf("epoch=%d", *last.Epoch), fmt.Sprintf("position=%d", *last.Position))
	synced, missed := w.readUntil("synced")
	if *synced.Epoch != 2 {
		t.Errorf("%s synced in epoch %d, want 2", who, *synced.Epoch)
	}
	for _, f := range missed {
		if f.Type == "message" {
			got = append(got, f)
		}
	}
	if len(got) < want {
		got = append(got, w.messages(want-len(got))...)
	}
	assertExactlyOnce(t, who, got, want)
	return w, got
}

// assertExactlyOnce checks that a device got total messages, none twice,
// each channel's in the order they were sent ("text before 3" before "text
// during 0": one sender, each send acknowledged before the next).
func assertExactlyOnce(t *testing.T, device string, got []frame, total int) {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]int{}
	for _, f := range got {
		if seen[f.MessageID] {
			t.Errorf("%s: message %s (%q) twice", device, f.MessageID, f.Text)
		}
		seen[f.MessageID] = true
		var phase string
		var i int
		if _, err := fmt.Sscanf(f.Text, "text %s %d", &phase, &i); err != nil {
			t.Fatalf("%s: message text %q", device, f.Text)
		}
		if phase == "during" {
			i += 100
		}
		if p, ok := last[f.ChannelID]; ok && p >= i {
			t.Errorf("%s: %q after message %d of its channel", device, f.Text, p)
		}
		last[f.ChannelID] = i
	}
	if len(seen) != total {
		t.Errorf("%s: %d distinct messages, want %d", device, len(seen), total)
	}
}

func mustID(t *testing.T, s string) domain.MessageID {
	t.Helper()
	id, err := domain.ParseMessageID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// corrupt changes the node's store behind its back: the embedded store
// with the node stopped (Pebble has one owner), Cassandra while it runs.
func (n *node) corrupt(fn func(store.Store)) {
	n.t.Helper()
	if n.b.cassandra == "" {
		n.stop()
		st, err := pebblestore.Open(filepath.Join(n.dir, "store"), pebblestore.Options{})
		if err != nil {
			n.t.Fatal(err)
		}
		fn(st)
		st.Close()
		n.start()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := cassandra.Open(ctx, cassandra.Config{Hosts: strings.Split(n.b.cassandra, ","), Keyspace: n.keyspace})
	if err != nil {
		n.t.Fatal(err)
	}
	defer st.Close()
	fn(st)
}

// TestMetrics: the metrics move when traffic flows, and /readyz answers.
func TestMetrics(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob := n.signUp("ann"), n.signUp("bob")
		tok := n.login(ann, "phone")
		bobWS := n.connect(n.login(bob, "phone"))
		ch := n.createChannel(tok, "direct", bob.ID)
		w := n.connect(tok)
		for i := range 5 {
			w.send(ch.ChannelID, fmt.Sprint(i), "hi")
		}
		bobWS.messages(5)
		n.do("GET", "/v1/channels", "bad-token", nil, nil)
		var text string
		waitFor(t, func() bool {
			resp, err := http.Get("http://" + n.http + "/metrics")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			text = string(body)
			// The frames are counted once written: the hellos, the
			// acks and both devices' copies of the messages, at least.
			return metric(text, "evchat_send_deliver_seconds_count") >= 5 && metric(text, "evchat_ws_frames_written_total") >= 17
		})
		for name, least := range map[string]float64{
			"evchat_ws_connections":      2,
			"evchat_ws_deliveries_total": 10,
			// The writers' drains (their frames are waited for above).
			"evchat_ws_drains_total":                        1,
			"evchat_send_ack_seconds_count":                 5,
			"evchat_send_deliver_seconds_count":             5,
			`evchat_store_seconds_count{method="apply"}`:    1,
			`evchat_http_errors_total{code="unauthorized"}`: 1,
			"process_resident_memory_bytes":                 1,
			// The tailer, inbox and push read the same records: at
			// least one was decoded once for two of them.
			`evchat_inbox_decodes_total{result="shared"}`: 1,
			// Each stage's batches, sized and timed: the fan-out
			// committed at least one.
			`evchat_projection_batch_records_count{projection="fanout.e1"}`: 1,
			`evchat_projection_delay_seconds_count{projection="fanout.e1"}`: 1,
			`evchat_projection_delay_seconds_count{projection="sends"}`:     1,
			// and where a transactional batch's time goes.
			`evchat_projection_batch_phase_seconds_count{phase="commit",projection="sends"}`:  1,
			`evchat_projection_batch_phase_seconds_count{phase="prepare",projection="sends"}`: 1,
		} {
			if got := metric(text, name); got < least {
				t.Errorf("%s = %v, want at least %v", name, got, least)
			}
		}
		if d, f := metric(text, "evchat_ws_drains_total"), metric(text, "evchat_ws_frames_written_total"); d > f {
			t.Errorf("%v drains wrote %v frames: a drain writes at least one", d, f)
		}
		if b.kafka == "" {
			// The node's clients reach the embedded broker in memory;
			// nothing else connected to it.
			mem, tcp := `evchat_embedded_broker_connections_total{transport="memory"}`, `evchat_embedded_broker_connections_total{transport="tcp"}`
			if metric(text, mem) < 1 || metric(text, tcp) != 0 {
				t.Errorf("%s = %v, %s = %v: want at least 1 in memory, none over TCP", mem, metric(text, mem), tcp, metric(text, tcp))
			}
		}
		for _, name := range []string{`evchat_projection_lag{projection="history"}`, "evchat_kafka_", `evchat_message_text_lookups_total{from="cache"}`,
			"evchat_sends_mended_total 0"} {
			if !strings.Contains(text, name) {
				t.Errorf("no %s in /metrics", name)
			}
		}
		resp, err := http.Get("http://" + n.http + "/readyz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("/readyz: %v %v", resp, err)
		}
		resp.Body.Close()
	})
}

// metric returns the value of the first sample whose line starts with name.
func metric(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, name+" "), &v)
			return v
		}
	}
	return -1
}
