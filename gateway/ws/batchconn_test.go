package ws

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// batchPair serves one WebSocket through the gateway's batchWriter and
// returns the server's conn (its writer not started) and a client
// connected to it over real TCP.
func batchPair(t testing.TB) (*conn, *websocket.Conn) {
	t.Helper()
	got := make(chan *conn, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bw := &batchWriter{ResponseWriter: w}
		wsc, err := up.Upgrade(bw, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		got <- &conn{ws: wsc, out: bw.bc, q: newSendQueue(1024, 2<<20), done: make(chan struct{})}
	}))
	t.Cleanup(srv.Close)
	cl, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	c := <-got
	t.Cleanup(c.close)
	return c, cl
}

// readN reads n text messages, each within a generous bound (a frame held
// back fails here).
func readN(t *testing.T, cl *websocket.Conn, n int) []string {
	t.Helper()
	var got []string
	for range n {
		_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := cl.ReadMessage()
		if err != nil {
			t.Fatalf("after %d of %d frames: %v", len(got), n, err)
		}
		got = append(got, string(b))
	}
	return got
}

// TestDrainWritesOnce: the frames a writer finds queued go to the network
// in one write, in order; a lone frame is written at once, not held for
// company; a drain larger than batchFlushBytes is written in pieces of
// about that size.
func TestDrainWritesOnce(t *testing.T) {
	c, cl := batchPair(t)
	before := c.out.writeCount() // the handshake's answer
	const n = 50
	for i := range n {
		if !c.q.push(outFrame{head: fmt.Appendf(nil, `{"n":%d,`, i), body: []byte(`"x":"body"}`)}) {
			t.Fatal("queue full")
		}
	}
	// The writer starts after the frames are queued: one drain.
	var writer sync.WaitGroup
	writer.Go(func() { c.write(10*time.Second, time.Hour) })
	t.Cleanup(func() { c.close(); writer.Wait() })
	got := readN(t, cl, n)
	for i, s := range got {
		if want := fmt.Sprintf(`{"n":%d,"x":"body"}`, i); s != want {
			t.Fatalf("frame %d = %s, want %s", i, s, want)
		}
	}
	if w := c.out.writeCount() - before; w != 1 {
		t.Fatalf("%d frames queued together went out in %d writes, want 1", n, w)
	}

	// A lone frame: readN fails if it is held back.
	c.q.push(outFrame{head: []byte(`{"lone":true}`)})
	if got := readN(t, cl, 1); got[0] != `{"lone":true}` {
		t.Fatalf("lone frame = %s", got[0])
	}
	if w := c.out.writeCount() - before; w != 2 {
		t.Fatalf("after the lone frame: %d writes, want 2", w)
	}

	// 40 frames of 10 KB: 400 KB, in pieces of at least batchFlushBytes.
	before = c.out.writeCount()
	big := []byte(`"` + strings.Repeat("y", 10_000) + `"`)
	pushAll(c.q, 40, outFrame{head: big})
	readN(t, cl, 40)
	if w, most := c.out.writeCount()-before, 400_000/batchFlushBytes+1; w < 2 || w > most {
		t.Fatalf("400 KB went out in %d writes, want 2 to %d", w, most)
	}
}

// pushAll queues n copies of f at once, as a burst that lands while the
// writer is busy does: the writer takes them in one drain.
func pushAll(q *sendQueue, n int, f outFrame) {
	q.mu.Lock()
	for range n {
		q.frames = append(q.frames, f)
		q.bytes += f.size()
	}
	q.mu.Unlock()
	q.wake <- struct{}{}
}

// BenchmarkDrain measures the writer's drain of 10 queued message frames
// of ~400 bytes (a burst to one connection) over real TCP, a client
// reading beside it: "per-frame" writes each frame with its own write
// (the writer before batchConn), "batched" in one write per drain.
func BenchmarkDrain(b *testing.B) {
	for _, mode := range []string{"per-frame", "batched"} {
		b.Run(mode, func(b *testing.B) {
			c, cl := batchPair(b)
			out := c.out
			if mode == "per-frame" {
				c.out = nil // drain never holds: every write goes through
			}
			go func() {
				for {
					if _, _, err := cl.NextReader(); err != nil {
						return
					}
				}
			}()
			f := outFrame{head: []byte(`{"type":"message","epoch":1,"position":12345,`), body: []byte(`"channel_id":"g1","message_id":"1234567890","sender_id":"u1","text":"` + strings.Repeat("x", 300) + `"}`)}
			b.ReportAllocs()
			before := out.writeCount()
			for range b.N {
				for range 10 {
					c.q.push(f)
				}
				if err := c.drain(10 * time.Second); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(out.writeCount()-before)/float64(b.N), "writes/op")
		})
	}
}

// TestDrainDeadlineHolds: the write deadline a drain keeps for its
// gathered bytes is set before they are written: a client that reads
// nothing makes a drain fail with a timeout once the socket buffers are
// full, rather than hold the writer for ever.
func TestDrainDeadlineHolds(t *testing.T) {
	c, _ := batchPair(t) // the client never reads
	big := outFrame{head: []byte(`"` + strings.Repeat("z", 100_000) + `"`)}
	failed := make(chan error, 1)
	go func() {
		// Up to 2 GB: far past any socket buffer.
		for range 2_000 {
			pushAll(c.q, 10, big)
			<-c.q.wake // pushAll's wake-up; nobody else drains
			if err := c.drain(200 * time.Millisecond); err != nil {
				failed <- err
				return
			}
		}
		failed <- nil
	}()
	select {
	case err := <-failed:
		if err == nil {
			t.Fatal("2 GB written to a client that reads nothing, no error")
		}
		var ne interface{ Timeout() bool }
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("drain failed with %v, want a timeout", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("a drain to a client that reads nothing still blocks after 2 minutes: its deadline was not set")
	}
}
