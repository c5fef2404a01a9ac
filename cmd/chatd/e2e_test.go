package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
)

// TestChat: 1-on-1, a three-member group, one user on two devices. Every
// member's connected devices receive each message with its id and an inbox
// position, in the channel's order; non-members receive nothing.
func TestChat(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob, cat, dan := n.signUp("ann"), n.signUp("bob"), n.signUp("cat"), n.signUp("dan")
		annPhone, annLaptop := n.connect(n.login(ann, "phone")), n.connect(n.login(ann, "laptop"))
		bobWS := n.connect(n.login(bob, "phone"))
		catWS := n.connect(n.login(cat, "phone"))
		danWS := n.connect(n.login(dan, "phone"))

		direct := n.createChannel(ann.Token["phone"], "direct", bob.ID)
		if direct.Kind != "direct" || !slices.Equal(direct.Members, sorted(ann.ID, bob.ID)) {
			t.Fatalf("direct channel %+v", direct)
		}
		// Opening it again, from either side, finds the same channel.
		if again := n.createChannel(bob.Token["phone"], "direct", ann.ID); again.ChannelID != direct.ChannelID {
			t.Fatalf("direct channel opened twice: %s and %s", direct.ChannelID, again.ChannelID)
		}
		group := n.createChannel(ann.Token["phone"], "group", bob.ID, cat.ID)

		ack := annPhone.send(direct.ChannelID, "d1", "hello bob")
		if ack.Type != "ack" || ack.MessageID == "" {
			t.Fatalf("send: %+v", ack)
		}
		for name, w := range map[string]*wsClient{"ann phone": annPhone, "ann laptop": annLaptop, "bob": bobWS} {
			m := w.messages(1)[0]
			if m.MessageID != ack.MessageID || m.Text != "hello bob" || m.SenderID != ann.ID || m.ChannelID != direct.ChannelID {
				t.Errorf("%s got %+v, want message %s", name, m, ack.MessageID)
			}
			if m.Position == nil || *m.Position < 0 || m.Epoch == nil || *m.Epoch != 1 {
				t.Errorf("%s: message without an inbox position: %+v", name, m)
			}
		}

		// Three senders into the group at once; every member device sees
		// the same order, which is history's order.
		const each = 10
		done := make(chan struct{})
		for _, s := range []struct {
			w    *wsClient
			name string
		}{{annLaptop, "ann"}, {bobWS, "bob"}, {catWS, "cat"}} {
			go func() {
				defer func() { done <- struct{}{} }()
				for i := range each {
					s.w.write(map[string]string{"type": "send", "channel_id": group.ChannelID,
						"client_msg_id": fmt.Sprintf("%s-%d", s.name, i), "text": fmt.Sprintf("%s says %d", s.name, i)})
				}
			}()
		}
		for range 3 {
			<-done
		}
		var orders [][]string
		for _, w := range []*wsClient{annPhone, annLaptop, bobWS, catWS} {
			var ids []string
			var last int64 = -1
			for _, m := range w.messages(3 * each) {
				if m.ChannelID != group.ChannelID {
					t.Fatalf("unexpected message %+v", m)
				}
				if *m.Position <= last {
					t.Fatalf("positions not increasing: %d after %d", *m.Position, last)
				}
				last = *m.Position
				ids = append(ids, m.MessageID)
			}
			orders = append(orders, ids)
		}
		for i := range orders {
			if !slices.Equal(orders[i], orders[0]) {
				t.Fatalf("devices disagree on the order:\n%v\n%v", orders[0], orders[i])
			}
		}
		// History is another projection: it may trail the deliveries.
		waitFor(t, func() bool { return len(n.allHistory(cat.Token["phone"], group.ChannelID, 200)) == 3*each })
		var hist []string
		for _, m := range n.allHistory(cat.Token["phone"], group.ChannelID, 7) {
			hist = append(hist, m.MessageID)
		}
		slices.Reverse(hist)
		if !slices.Equal(hist, orders[0]) {
			t.Fatalf("history order differs from delivery order:\n%v\n%v", hist, orders[0])
		}
		danWS.quiet(300 * time.Millisecond)
		n.validateTopics("channels", "sessions", "inbox.e1", "sends", "send-replies")
	})
}

// TestHistoryPaging pages through a channel before, after and around
// messages: never a skip, never a repeat.
func TestHistoryPaging(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob := n.signUp("ann"), n.signUp("bob")
		tok := n.login(ann, "phone")
		n.login(bob, "phone")
		ch := n.createChannel(tok, "direct", bob.ID)
		w := n.connect(tok)
		const total = 45
		var sent []string // oldest first
		for i := range total {
			f := w.send(ch.ChannelID, fmt.Sprint(i), fmt.Sprint("m", i))
			if f.Type != "ack" {
				t.Fatalf("send %d: %+v", i, f)
			}
			sent = append(sent, f.MessageID)
		}
		newestFirst := slices.Clone(sent)
		slices.Reverse(newestFirst)
		waitFor(t, func() bool { return len(n.history(tok, ch.ChannelID, "limit=200").Messages) == total })

		for _, size := range []int{1, 7, 45, 200} {
			var got []string
			for _, m := range n.allHistory(tok, ch.ChannelID, size) {
				got = append(got, m.MessageID)
			}
			if !slices.Equal(got, newestFirst) {
				t.Fatalf("paging backwards by %d:\n got %v\nwant %v", size, got, newestFirst)
			}
		}
		// Forwards from the oldest, with after.
		got := []string{sent[0]}
		for {
			p := n.history(tok, ch.ChannelID, "limit=6&after="+got[len(got)-1])
			for i := len(p.Messages) - 1; i >= 0; i-- {
				got = append(got, p.Messages[i].MessageID)
			}
			if !p.HasMore {
				break
			}
		}
		if !slices.Equal(got, sent) {
			t.Fatalf("paging forwards:\n got %v\nwant %v", got, sent)
		}
		// Around the 20th: 4 newer, it, 4 older.
		p := n.history(tok, ch.ChannelID, "limit=9&around="+sent[20])
		var around []string
		for _, m := range p.Messages {
			around = append(around, m.MessageID)
		}
		if want := newestFirst[total-1-24 : total-1-15]; !slices.Equal(around, want) {
			t.Fatalf("around:\n got %v\nwant %v", around, want)
		}
		// Seq is the channel order.
		for i, m := range n.history(tok, ch.ChannelID, "limit=200").Messages[1:] {
			if prev := n.history(tok, ch.ChannelID, "limit=200").Messages[i]; m.Seq >= prev.Seq {
				t.Fatalf("seq not decreasing newest first: %d then %d", prev.Seq, m.Seq)
			}
		}
	})
}

// TestResend: the acknowledgement is lost (the connection drops before it
// is read); the client resends with the same client message id on a new
// connection and gets the first id; the message exists once.
func TestResend(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob := n.signUp("ann"), n.signUp("bob")
		tok := n.login(ann, "phone")
		bobWS := n.connect(n.login(bob, "phone"))
		ch := n.createChannel(tok, "direct", bob.ID)

		w := n.connect(tok)
		w.write(map[string]string{"type": "send", "channel_id": ch.ChannelID, "client_msg_id": "once", "text": "only once"})
		w.c.Close() // the ack is never read

		first := bobWS.messages(1)[0]
		w2 := n.connect(tok)
		for range 3 {
			ack := w2.send(ch.ChannelID, "once", "only once")
			if ack.Type != "ack" || ack.MessageID != first.MessageID {
				t.Fatalf("resend acked %+v, want message %s", ack, first.MessageID)
			}
		}
		// The same client id for another channel is refused.
		other := n.createChannel(tok, "group")
		if f := w2.send(other.ChannelID, "once", "elsewhere"); f.Type != "error" || f.Code != "conflict" {
			t.Fatalf("reuse in another channel: %+v", f)
		}
		bobWS.quiet(500 * time.Millisecond)
		if h := n.history(tok, ch.ChannelID, ""); len(h.Messages) != 1 {
			t.Fatalf("history has %d messages, want 1", len(h.Messages))
		}
		if c := n.topicCount("channels"); c != 3 { // 2 channel.created + 1 message.sent
			t.Fatalf("channel topic holds %d records, want 3", c)
		}
	})
}

// TestLongAbsence: a device on a slow network back after 20,000 messages
// (twenty times its send queue) gets every one, in order, at the pace it
// reads: a sync waits for the client instead of cutting it off as a slow
// one.
func TestLongAbsence(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob := n.signUp("ann"), n.signUp("bob")
		annTok, bobTok := n.login(ann, "phone"), n.login(bob, "phone")
		ch := n.createChannel(annTok, "group", bob.ID)
		const count = 20_000
		last := n.appendMessages(ch.ChannelID, ann.ID, count)
		// Long ago: every projection has it (history has the last message,
		// and no projection has lagged for two seconds).
		// Minutes, not seconds: on Cassandra, with the other tests running.
		waitForTB(t, 3*time.Minute, func() bool {
			h := n.history(annTok, ch.ChannelID, "limit=1")
			return len(h.Messages) == 1 && h.Messages[0].MessageID == last.String()
		})
		calm := 0
		waitForTB(t, 3*time.Minute, func() bool {
			if calm++; n.maxLag() != 0 {
				calm = 0
			}
			return calm == 2 // the waits are a second apart
		})
		// The device reads nothing for two seconds: its socket buffers
		// fill, and the server's sync must wait for it.
		w, wake := n.dialAsleep(bobTok, "epoch=1", "position=-1")
		w.patience = burstPatience
		time.Sleep(2 * time.Second)
		wake()
		if f := w.read(); f.Type != "hello" {
			t.Fatalf("first frame %+v", f)
		}
		prev := inOrder(t, w, count, last)
		if f, _ := w.readUntil("synced"); *f.Position != prev {
			t.Errorf("synced at %d, want %d", *f.Position, prev)
		}
	})
}

// TestBurst: 20,000 messages arrive for a connected device on a slow
// network, far faster than it reads. Rather than cutting it off, the
// gateway stops sending it live entries and catches it up from the store
// at its pace: every message, in order.
func TestBurst(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob := n.signUp("ann"), n.signUp("bob")
		annTok, bobTok := n.login(ann, "phone"), n.login(bob, "phone")
		ch := n.createChannel(annTok, "group", bob.ID)
		w, wake := n.dialAsleep(bobTok)
		w.patience = burstPatience
		time.Sleep(500 * time.Millisecond) // registered for live entries
		const count = 20_000
		last := n.appendMessages(ch.ChannelID, ann.ID, count)
		time.Sleep(2 * time.Second)
		wake()
		if f := w.read(); f.Type != "hello" {
			t.Fatalf("first frame %+v", f)
		}
		inOrder(t, w, count, last)
		w.quiet(time.Second)
	})
}

// burstPatience is how long TestLongAbsence and TestBurst wait for a
// frame. The gateway delivers a sync's entries as the inbox projection
// stores them, and the projection applies what one fetch returns, the
// whole burst of 20,000 entries at once, as one batch: on a loaded machine
// under -race that takes longer than the harness's usual 20 s, while the
// projection's lag gauge (set after each batch) still reads 0.
const burstPatience = 3 * time.Minute

// inOrder reads count messages, checks that their positions grow and that
// the last is last, and returns the last position.
func inOrder(t *testing.T, w *wsClient, count int, last domain.MessageID) int64 {
	t.Helper()
	prev := int64(-1)
	for i, f := range w.messages(count) {
		if *f.Position <= prev {
			t.Fatalf("message %d at position %d after %d", i, *f.Position, prev)
		}
		prev = *f.Position
		if i == count-1 && f.MessageID != last.String() {
			t.Errorf("last message %s, want %s", f.MessageID, last)
		}
	}
	return prev
}

// TestRestart stops the process with SIGKILL in the middle of a
// conversation and starts it again on the same data: every acknowledged
// message is there once, a device resumes from its position and gets
// exactly what it missed, and resends after the restart create nothing.
func TestRestart(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startChild(t, b) // killed with SIGKILL
		ann, bob := n.signUp("ann"), n.signUp("bob")
		annTok, bobTok := n.login(ann, "phone"), n.login(bob, "phone")
		ch := n.createChannel(annTok, "group", bob.ID)
		annWS, bobWS := n.connect(annTok), n.connect(bobTok)

		var acked []string
		for i := range 5 {
			acked = append(acked, annWS.send(ch.ChannelID, fmt.Sprint("a", i), fmt.Sprint("before ", i)).MessageID)
		}
		got := bobWS.messages(5)
		pos := *got[len(got)-1].Position
		bobWS.c.Close()
		for i := 5; i < 10; i++ { // bob is away
			acked = append(acked, annWS.send(ch.ChannelID, fmt.Sprint("a", i), fmt.Sprint("while away ", i)).MessageID)
		}
		n.kill()
		n.start()

		annWS = n.connect(annTok)
		// A resend of an acknowledged message after the restart.
		if f := annWS.send(ch.ChannelID, "a3", "before 3"); f.MessageID != acked[3] {
			t.Fatalf("resend after restart: %+v, want %s", f, acked[3])
		}
		bobWS = n.resume(bobTok, pos)
		// What he missed arrives: from the store up to "synced", the rest
		// live as the fan-out catches up after the restart.
		var ids []string
		var synced bool
		for len(ids) < 5 || !synced {
			f := bobWS.read()
			switch f.Type {
			case "message":
				if *f.Position <= pos {
					t.Fatalf("got an entry at %d, not past the position %d", *f.Position, pos)
				}
				ids = append(ids, f.MessageID)
			case "synced":
				synced = true
			}
		}
		if !slices.Equal(ids, acked[5:]) {
			t.Fatalf("after the restart bob got %v, want %v", ids, acked[5:])
		}
		// Live again, and from the start the whole inbox once.
		live := annWS.send(ch.ChannelID, "a10", "after").MessageID
		if m := bobWS.messages(1)[0]; m.MessageID != live {
			t.Fatalf("live after sync: %+v", m)
		}
		full := n.resume(bobTok, -1)
		_, all := full.readUntil("synced")
		ids = ids[:0]
		for _, m := range all {
			ids = append(ids, m.MessageID)
		}
		if want := append(slices.Clone(acked), live); !slices.Equal(ids, want) {
			t.Fatalf("full sync got %v, want %v", ids, want)
		}
		h := n.allHistory(annTok, ch.ChannelID, 50)
		if len(h) != 11 {
			t.Fatalf("history has %d messages, want 11", len(h))
		}
		// A stale epoch is told to resynchronise.
		full.write(map[string]any{"type": "sync", "epoch": 7, "position": 3})
		if f, _ := full.readUntil("resync"); f.Epoch == nil || *f.Epoch != 1 {
			t.Fatalf("resync frame %+v", f)
		}
	})
}

// TestBadInput: every bad input gets a clear error with a stable code,
// nothing reaches the log, and the WebSocket stays usable.
func TestBadInput(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob, eve := n.signUp("ann"), n.signUp("bob"), n.signUp("eve")
		tok, eveTok := n.login(ann, "phone"), n.login(eve, "phone")
		ch := n.createChannel(tok, "direct", bob.ID)
		w, ew := n.connect(tok), n.connect(eveTok)
		before := n.topicCount("channels")

		frames := []struct {
			name  string
			w     *wsClient
			frame any
			code  string
		}{
			{"malformed JSON", w, `{"type":"send",`, "bad_request"},
			{"not an object", w, `[1,2]`, "bad_request"},
			{"no type", w, `{}`, "bad_request"},
			{"unknown type", w, `{"type":"dance"}`, "unknown_type"},
			{"no text", w, map[string]string{"type": "send", "channel_id": ch.ChannelID, "client_msg_id": "x"}, "bad_request"},
			{"no client id", w, map[string]string{"type": "send", "channel_id": ch.ChannelID, "text": "x"}, "bad_request"},
			{"long client id", w, map[string]string{"type": "send", "channel_id": ch.ChannelID, "client_msg_id": strings.Repeat("x", 65), "text": "x"}, "bad_request"},
			{"oversized", w, map[string]string{"type": "send", "channel_id": ch.ChannelID, "client_msg_id": "big", "text": strings.Repeat("é", 100_001)}, "too_long"},
			{"unknown channel", w, map[string]string{"type": "send", "channel_id": "g123", "client_msg_id": "u", "text": "x"}, "not_found"},
			{"not a member", ew, map[string]string{"type": "send", "channel_id": ch.ChannelID, "client_msg_id": "e", "text": "x"}, "not_member"},
			{"sync without epoch", w, `{"type":"sync","position":1}`, "bad_request"},
			{"malformed channel id", w, map[string]string{"type": "send", "channel_id": "general", "client_msg_id": "m", "text": "x"}, "bad_request"},
			{"received without position", w, `{"type":"received","epoch":1}`, "bad_request"},
			{"read of an unknown message", w, map[string]string{"type": "read", "channel_id": ch.ChannelID, "message_id": "12345"}, "not_found"},
			{"read in a foreign channel", ew, map[string]string{"type": "read", "channel_id": ch.ChannelID, "message_id": "12345"}, "not_member"},
		}
		for _, tc := range frames {
			t.Run(tc.name, func(t *testing.T) {
				tc.w.write(tc.frame)
				f, _ := tc.w.readUntil("error")
				if f.Code != tc.code || f.Message == "" {
					t.Fatalf("got %+v, want code %s with a message", f, tc.code)
				}
				tc.w.write(`{"type":"ping"}`) // still usable
				tc.w.readUntil("pong")
			})
		}
		// Exactly at the limit is fine.
		if f := w.send(ch.ChannelID, "max", strings.Repeat("é", 100_000)); f.Type != "ack" {
			t.Fatalf("100,000 characters refused: %+v", f)
		}
		// The ack follows the commit of the message's transaction; a
		// read-committed reader sees the message once Kafka has written
		// the commit's markers, which may be a moment later: readTopic
		// reads to the topic's end as it is now, waiting for them.
		recs, err := n.readTopic(n.prefix+".channels", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if got := int64(len(recs)); got != before+1 {
			t.Fatalf("channel topic grew by %d, want 1 (the valid message only)", got-before)
		}

		// A malformed resume point is refused before the upgrade.
		if _, resp, err := n.dial(tok, "epoch=1", "position=x"); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("dial with a bad position: err %v, resp %v", err, resp)
		}
		// WebSocket upgrade without or with a bad token.
		for _, token := range []string{"", "v1.garbage.sig", strings.Replace(tok, "v1.", "v1.x", 1)} {
			if _, resp, err := n.dial(token); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("dial with token %q: err %v, resp %v", token, err, resp)
			}
		}
		rest := []struct {
			name, method, path, token string
			body                      any
			status                    int
			code                      string
		}{
			{"no token", "GET", "/v1/channels", "", nil, 401, "unauthorized"},
			{"bad token", "GET", "/v1/channels", "nonsense", nil, 401, "unauthorized"},
			{"bad password", "POST", "/v1/login", "", map[string]string{"name": "ann", "password": "wrong-password"}, 401, "unauthorized"},
			{"unknown user login", "POST", "/v1/login", "", map[string]string{"name": "zed", "password": "whatever1"}, 401, "unauthorized"},
			{"short password", "POST", "/v1/users", "", map[string]string{"name": "zed", "password": "short"}, 400, "bad_request"},
			{"bad name", "POST", "/v1/users", "", map[string]string{"name": "a b", "password": "password1"}, 400, "bad_request"},
			{"taken name", "POST", "/v1/users", "", map[string]string{"name": "ann", "password": "password1"}, 409, "conflict"},
			{"malformed body", "POST", "/v1/channels", tok, "{", 400, "bad_request"},
			{"unknown kind", "POST", "/v1/channels", tok, map[string]any{"kind": "party", "members": []string{bob.ID}}, 400, "bad_request"},
			{"unknown member", "POST", "/v1/channels", tok, map[string]any{"kind": "group", "members": []string{"999"}}, 404, "not_found"},
			{"unknown channel", "GET", "/v1/channels/g42", tok, nil, 404, "not_found"},
			{"not a member", "GET", "/v1/channels/" + ch.ChannelID, eveTok, nil, 403, "not_member"},
			{"not a member's history", "GET", "/v1/channels/" + ch.ChannelID + "/messages", eveTok, nil, 403, "not_member"},
			{"unknown message", "GET", "/v1/channels/" + ch.ChannelID + "/messages?before=12345", tok, nil, 404, "not_found"},
			{"bad message id", "GET", "/v1/channels/" + ch.ChannelID + "/messages?before=abc", tok, nil, 400, "bad_request"},
			{"two anchors", "GET", "/v1/channels/" + ch.ChannelID + "/messages?before=1&after=2", tok, nil, 400, "bad_request"},
			{"bad limit", "GET", "/v1/channels/" + ch.ChannelID + "/messages?limit=0", tok, nil, 400, "bad_request"},
			{"members of a direct channel", "POST", "/v1/channels/" + ch.ChannelID + "/members", tok, map[string]string{"user_id": eve.ID}, 403, "forbidden"},
			{"unknown route", "GET", "/v1/nothing", tok, nil, 404, "not_found"},
		}
		for _, tc := range rest {
			t.Run(tc.name, func(t *testing.T) {
				var body any = tc.body
				e := n.doRaw(tc.method, tc.path, tc.token, body)
				if e.Status != tc.status || e.Code != tc.code || e.Msg == "" {
					t.Fatalf("got %d %s %q, want %d %s", e.Status, e.Code, e.Msg, tc.status, tc.code)
				}
			})
		}
		if got := n.topicCount("channels"); got != before+1 {
			t.Fatalf("bad REST calls reached the log: channel topic grew by %d", got-before)
		}
	})
}

// TestGroupRules: the size limit, members joining and leaving, and a
// removed member who can no longer post or read.
func TestGroupRules(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob, cat := n.signUp("ann"), n.signUp("bob"), n.signUp("cat")
		tok, bobTok, catTok := n.login(ann, "phone"), n.login(bob, "phone"), n.login(cat, "phone")
		g := n.createChannel(tok, "group", bob.ID)
		var c channelJSON
		n.must("POST", "/v1/channels/"+g.ChannelID+"/members", bobTok, map[string]string{"user_id": cat.ID}, &c)
		if !slices.Equal(c.Members, sorted(ann.ID, bob.ID, cat.ID)) {
			t.Fatalf("after add: %v", c.Members)
		}
		if e := n.do("DELETE", "/v1/channels/"+g.ChannelID+"/members/"+ann.ID, bobTok, nil, nil); e.Status != 403 || e.Code != "forbidden" {
			t.Fatalf("bob removed the creator: %+v", e)
		}
		// cat posts first: the gateway then holds the group's state, with
		// cat in it, for its channel lease; the removal must end that.
		catWS := n.connect(catTok)
		if f := catWS.send(g.ChannelID, "c0", "hello"); f.Type != "ack" {
			t.Fatalf("cat's send as a member: %+v", f)
		}
		n.must("DELETE", "/v1/channels/"+g.ChannelID+"/members/"+cat.ID, tok, nil, &c)
		if !slices.Equal(c.Members, sorted(ann.ID, bob.ID)) {
			t.Fatalf("after remove: %v", c.Members)
		}
		if f := catWS.send(g.ChannelID, "c1", "am I in?"); f.Type != "error" || f.Code != "not_member" {
			t.Fatalf("removed member posted: %+v", f)
		}
		var list struct{ Channels []channelJSON }
		n.must("GET", "/v1/channels", catTok, nil, &list)
		if len(list.Channels) != 0 {
			t.Fatalf("cat still lists %v", list.Channels)
		}
		// The 100-member default limit.
		var ids []string
		for i := range 99 {
			ids = append(ids, n.signUpQuick(fmt.Sprint("u", i)))
		}
		big := n.createChannel(tok, "group", ids...)
		if len(big.Members) != 100 {
			t.Fatalf("group of %d", len(big.Members))
		}
		if e := n.do("POST", "/v1/channels/"+big.ChannelID+"/members", tok, map[string]string{"user_id": bob.ID}, nil); e.Status != 422 || e.Code != "group_full" {
			t.Fatalf("101st member: %+v", e)
		}
		if e := n.do("POST", "/v1/channels", tok, map[string]any{"kind": "group", "members": append(ids, bob.ID)}, nil); e.Code != "group_full" {
			t.Fatalf("group of 101 created: %+v", e)
		}
	})
}

func (n *node) signUpQuick(name string) string { return n.signUp(name).ID }

// doRaw is do, but a string body is sent as is.
func (n *node) doRaw(method, path, token string, body any) apiError {
	if s, ok := body.(string); ok {
		return n.doString(method, path, token, s)
	}
	return n.do(method, path, token, body, nil)
}

func (n *node) doString(method, path, token, body string) apiError {
	n.t.Helper()
	req, _ := http.NewRequest(method, "http://"+n.http+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Error apiError }
	_ = jsonDecode(resp.Body, &e)
	e.Error.Status = resp.StatusCode
	return e.Error
}

func sorted(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

// waitFor waits until cond holds, for a minute at most: generous, since
// the suite shares two cores with other work (a presence change on the
// real backend once took longer than the 20 s this bound was).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	const bound = time.Minute
	for deadline := time.Now().Add(bound); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("condition not met within %v", bound)
}
