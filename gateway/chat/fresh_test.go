package chat

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// gatedReads is a read function whose reads block until released; each
// read returns its number (1, 2, ...) and records when it began.
type gatedReads struct {
	mu      sync.Mutex
	n       int
	began   chan int      // a read's number when it begins
	release chan struct{} // one token ends one read
	fail    map[int]error // the error of read n, if any
}

func newGatedReads() *gatedReads {
	return &gatedReads{began: make(chan int, 100), release: make(chan struct{}, 100), fail: map[int]error{}}
}

func (g *gatedReads) read(ctx context.Context, _ string) (int, error) {
	g.mu.Lock()
	g.n++
	n := g.n
	err := g.fail[n]
	g.mu.Unlock()
	g.began <- n
	select {
	case <-g.release:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return n, err
}

func (g *gatedReads) reads() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// waitBegun waits for read n to begin.
func (g *gatedReads) waitBegun(t *testing.T, n int) {
	t.Helper()
	select {
	case got := <-g.began:
		if got != n {
			t.Fatalf("read %d began, want %d", got, n)
		}
	case <-time.After(time.Minute):
		t.Fatalf("read %d did not begin", n)
	}
}

type readResult struct {
	v   int
	err error
}

func getAsync(f *freshReads[string, int], ctx context.Context, k string) chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		v, err := f.get(ctx, k)
		ch <- readResult{v, err}
	}()
	return ch
}

// waitQueued waits until n callers wait for the read queued behind the
// one in flight for k.
func waitQueued(t *testing.T, f *freshReads[string, int], k string, n int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		f.mu.Lock()
		cur := f.flights[k]
		got := 0
		if cur != nil && cur.next != nil {
			got = cur.next.waiters
		}
		f.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers queued for %s, want %d", got, k, n)
		}
	}
}

func recv(t *testing.T, ch chan readResult) readResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(time.Minute):
		t.Fatal("get did not return")
		return readResult{}
	}
}

// TestFreshReadsShareTheNextRead: callers that come while a read is in
// flight do not get its (older) answer; they share one read begun after
// it, so ten callers cost two reads, and a key of its own is read apart.
func TestFreshReadsShareTheNextRead(t *testing.T) {
	ctx := context.Background()
	g := newGatedReads()
	f := newFreshReads(g.read)

	first := getAsync(f, ctx, "a")
	g.waitBegun(t, 1)
	var later []chan readResult
	for range 9 {
		later = append(later, getAsync(f, ctx, "a"))
	}
	waitQueued(t, f, "a", 9)
	g.release <- struct{}{}
	if r := recv(t, first); r.v != 1 || r.err != nil {
		t.Fatalf("first caller got read %d (%v), want 1", r.v, r.err)
	}
	g.waitBegun(t, 2)
	g.release <- struct{}{}
	for i, ch := range later {
		if r := recv(t, ch); r.v != 2 || r.err != nil {
			t.Fatalf("caller %d, which came while read 1 was in flight, got read %d (%v), want 2", i, r.v, r.err)
		}
	}
	if n := g.reads(); n != 2 {
		t.Fatalf("%d reads for 10 callers, want 2", n)
	}

	// Nothing is kept: a caller after the reads ended reads again.
	again := getAsync(f, ctx, "a")
	g.waitBegun(t, 3)
	g.release <- struct{}{}
	if r := recv(t, again); r.v != 3 {
		t.Fatalf("a caller after the reads got read %d, want 3", r.v)
	}
	f.mu.Lock()
	left := len(f.flights)
	f.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d keys left in flight after every read ended", left)
	}
}

// TestFreshReadsErrorsAndCancels: a read's error goes to the callers that
// shared it; a caller that gives up leaves the others their read; the
// reader's own cancellation makes the others read again.
func TestFreshReadsErrorsAndCancels(t *testing.T) {
	ctx := context.Background()
	g := newGatedReads()
	boom := errors.New("boom")
	g.fail[2] = boom
	f := newFreshReads(g.read)

	first := getAsync(f, ctx, "a")
	g.waitBegun(t, 1)
	gone, cancel := context.WithCancel(ctx)
	quitter := getAsync(f, gone, "a")
	stayer := getAsync(f, ctx, "a")
	waitQueued(t, f, "a", 2)
	cancel()
	if r := recv(t, quitter); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("the caller that gave up got %v, want its context's error", r.err)
	}
	g.release <- struct{}{}
	recv(t, first)
	g.waitBegun(t, 2)
	g.release <- struct{}{}
	if r := recv(t, stayer); !errors.Is(r.err, boom) {
		t.Fatalf("the caller of the failed read got %v, want its error", r.err)
	}

	// A caller whose read others share gives up: they read again, and
	// none of them gets its context's error.
	x := getAsync(f, ctx, "b")
	g.waitBegun(t, 3)
	runCtx, cancelRun := context.WithCancel(ctx)
	r := getAsync(f, runCtx, "b")
	b := getAsync(f, ctx, "b")
	waitQueued(t, f, "b", 2)
	g.release <- struct{}{} // ends read 3
	recv(t, x)
	g.waitBegun(t, 4) // begun by r or by b
	cancelRun()
	if got := recv(t, r); !errors.Is(got.err, context.Canceled) {
		t.Fatalf("the caller that gave up got %v, want its context's error", got.err)
	}
	// If r ran read 4, it has ended with r's error and b reads again
	// (read 5); else b runs read 4. This ends b's read either way.
	g.release <- struct{}{}
	got := recv(t, b)
	if got.err != nil || got.v < 4 {
		t.Fatalf("the caller sharing a read whose runner gave up got read %d (%v), want read 4 or 5", got.v, got.err)
	}
	if got.v == 5 {
		g.waitBegun(t, 5)
	}
	n := g.reads()

	// Every caller of a queued read gives up before the read in flight
	// ends: the key is forgotten when it ends.
	c := getAsync(f, ctx, "c")
	g.waitBegun(t, n+1)
	gone2, cancel2 := context.WithCancel(ctx)
	q := getAsync(f, gone2, "c")
	waitQueued(t, f, "c", 1)
	cancel2()
	recv(t, q)
	g.release <- struct{}{}
	recv(t, c)
	f.mu.Lock()
	left := len(f.flights)
	f.mu.Unlock()
	if left != 0 || g.reads() != n+1 {
		t.Fatalf("%d keys in flight and %d reads after every caller returned, want 0 and %d", left, g.reads(), n+1)
	}
}
