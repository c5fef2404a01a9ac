package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
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
	dir := b.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--http", addr, "--data", dir, "--log-level", "error", "--kafka", "", "--cassandra", ""}, io.Discard, io.Discard)
	}()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("node: %v", err)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("node not healthy")
		}
	}
	n := &node{t: b, http: addr}
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
