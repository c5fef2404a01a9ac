package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
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
		for _, p := range []string{"history", "inbox"} {
			waitFor(t, func() bool { _, ok := n.ops("verify", "--projection", p); return ok })
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
		// Replay from an offset re-applies (idempotently) and agrees.
		if out, ok := n.ops("replay", "--projection", "inbox", "--from", "offset:3"); !ok {
			t.Fatalf("replay inbox from offset:\n%s", out)
		}
		if out, ok := n.ops("verify", "--projection", "inbox"); !ok {
			t.Fatalf("verify inbox:\n%s", out)
		}
		// Bad input to the operator's commands.
		if out, ok := n.ops("replay", "--projection", "nonsense"); ok || !strings.Contains(out, "bad_request") {
			t.Fatalf("replay of an unknown projection:\n%s", out)
		}
		if out, ok := n.ops("replay", "--projection", "history", "--from", "yesterday"); ok || !strings.Contains(out, "bad_request") {
			t.Fatalf("replay from nonsense:\n%s", out)
		}
	})
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
			return metric(text, "evchat_send_deliver_seconds_count") >= 5
		})
		for name, least := range map[string]float64{
			"evchat_ws_connections":                         2,
			"evchat_ws_deliveries_total":                    10,
			"evchat_send_ack_seconds_count":                 5,
			"evchat_send_deliver_seconds_count":             5,
			`evchat_store_seconds_count{method="apply"}`:    1,
			`evchat_http_errors_total{code="unauthorized"}`: 1,
			"process_resident_memory_bytes":                 1,
		} {
			if got := metric(text, name); got < least {
				t.Errorf("%s = %v, want at least %v", name, got, least)
			}
		}
		for _, name := range []string{`evchat_projection_lag{projection="history"}`, "evchat_kafka_"} {
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
