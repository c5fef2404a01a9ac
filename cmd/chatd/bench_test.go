package main

import (
	"cmp"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// BenchmarkSendDeliver measures one message's trip through the whole
// embedded process: a WebSocket send, the acknowledgement after the log
// accepted it, the fan-out's transaction, and the delivery to the
// recipient's WebSocket. The node runs in this process, so -cpuprofile
// covers the server too.
//
//	go test -run x -bench SendDeliver -benchtime 2000x ./cmd/chatd/
func BenchmarkSendDeliver(b *testing.B) {
	n := startNode(b, backend{name: "embedded"}, "--send-rate", "1e9", "--send-burst", "1000000000")
	ann, bob := n.signUp("ann"), n.signUp("bob")
	annWS, bobWS := n.connect(n.login(ann, "phone")), n.connect(n.login(bob, "phone"))
	ch := n.createChannel(ann.Token["phone"], "direct", bob.ID)
	// Warm up the fan-out's transaction and the tailer.
	annWS.send(ch.ChannelID, "warm", "warm")
	bobWS.messages(1)

	b.ReportAllocs()
	b.ResetTimer()
	var toAck time.Duration
	for i := range b.N {
		start := time.Now()
		annWS.send(ch.ChannelID, fmt.Sprint(i), "hello there")
		toAck += time.Since(start)
		bobWS.messages(1)
	}
	b.StopTimer()
	b.ReportMetric(float64(toAck.Microseconds())/float64(b.N), "µs/ack")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/delivery")
}

// BenchmarkReplay measures how fast a projection is rebuilt: it writes
// EVCHAT_REPLAY_N message.sent events (default 100,000) straight into the
// channel topic of a node (embedded, and on the real servers when
// EVCHAT_KAFKA and EVCHAT_CASSANDRA are set), into a group of two, waits
// for every projection to apply them, then replays EVCHAT_REPLAY_PROJECTION
// (default history; fanout rebuilds both inboxes into epoch 2 and stores
// them) from the start through the operator's command and reports
// message.sent events per second.
//
//	EVCHAT_REPLAY_N=1000000 go test -run x -bench Replay -benchtime 1x -timeout 2h ./cmd/chatd/
func BenchmarkReplay(b *testing.B) {
	total := 100_000
	if s := os.Getenv("EVCHAT_REPLAY_N"); s != "" {
		fmt.Sscan(s, &total)
	}
	projection := cmp.Or(os.Getenv("EVCHAT_REPLAY_PROJECTION"), "history")
	for _, be := range backends(b) {
		b.Run(be.name, func(b *testing.B) {
			n := startNode(b, be)
			ann, bob := n.signUp("ann"), n.signUp("bob")
			tok := n.login(ann, "phone")
			ch := n.createChannel(tok, "group", bob.ID)
			start := time.Now()
			lastID := n.appendMessages(ch.ChannelID, ann.ID, total)
			b.Logf("%s: wrote %d events in %v", be.name, total, time.Since(start))
			last := lastID.String()
			waitForTB(b, 60*time.Minute, func() bool {
				e := n.do("GET", "/v1/channels/"+ch.ChannelID+"/messages?limit=1", tok, nil, &struct{}{})
				var p page
				if e.Code == "" {
					p = n.history(tok, ch.ChannelID, "limit=1")
				}
				return len(p.Messages) == 1 && p.Messages[0].MessageID == last
			})
			waitForTB(b, 60*time.Minute, func() bool { return n.maxLag() == 0 })
			// For the fan-out: bob's device has all of epoch 1; its position
			// is carried over to epoch 2 after the rebuild.
			var bobTok string
			var had int64
			if projection == "fanout" {
				bobTok = n.login(bob, "tablet")
				w := n.resume(bobTok, -1)
				synced, _ := w.readUntil("synced")
				had = *synced.Position
				w.c.Close()
			}
			b.ResetTimer()
			start = time.Now()
			out, ok := n.ops("replay", "--projection", projection)
			elapsed := time.Since(start)
			b.StopTimer()
			if !ok {
				b.Fatalf("replay: %s", out)
			}
			b.Logf("%s", strings.TrimSpace(out))
			b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
			if projection == "fanout" {
				start := time.Now()
				w := n.connectQuery(bobTok, "epoch=1", fmt.Sprintf("position=%d", had))
				synced, others := w.readUntil("synced")
				took := time.Since(start)
				if *synced.Epoch != 2 || len(others) > 0 {
					b.Fatalf("carry-over: synced %+v after %d frames", synced, len(others))
				}
				b.Logf("carry-over of a device with %d messages to epoch 2: %v", total, took)
				b.ReportMetric(took.Seconds(), "s/carry-over")
			}
		})
	}
}
