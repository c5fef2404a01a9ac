package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
)

// TestPasswordsBounded fills the pool's workers and queue with checks that
// wait, and sees the next one refused at once with busy and a Retry-After,
// then admitted again once one has ended.
func TestPasswordsBounded(t *testing.T) {
	p, err := NewPasswords(PasswordsConfig{Workers: 2, Queue: 3, RetryAfter: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	running := make(chan struct{}, 5)
	var wg sync.WaitGroup
	for range 5 { // 2 running + 3 queued
		wg.Go(func() {
			_ = p.do(context.Background(), func() error { running <- struct{}{}; <-release; return nil })
		})
	}
	<-running
	<-running // both workers busy; wait until the 3 others hold queue slots
	waitFor(t, func() bool { return len(p.slots) == 5 })
	_, err = p.Check(context.Background(), p.dummy, "x")
	if !errors.Is(err, domain.ErrBusy) || domain.RetryAfterOf(err) != 2*time.Second {
		t.Fatalf("full pool: %v (retry after %s), want busy after 2s", err, domain.RetryAfterOf(err))
	}
	if len(p.run) > 2 {
		t.Fatalf("%d hashes running, bound 2", len(p.run))
	}
	// A waiting request gives up when its context ends, and frees its slot.
	close(release)
	wg.Wait()
	ok, err := p.Check(context.Background(), p.dummy, "evchat dummy password: never matches a login")
	if err != nil || !ok {
		t.Fatalf("after the burst: %v %v", ok, err)
	}
	h, err := p.Hash(context.Background(), "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.Check(context.Background(), h, "correct horse"); !ok {
		t.Fatal("hash does not check")
	}
	if err := p.CheckUnknown(context.Background(), "correct horse"); err != nil {
		t.Fatal(err)
	}
}

func TestPasswordsWaitEndsWithContext(t *testing.T) {
	p, _ := NewPasswords(PasswordsConfig{Workers: 1, Queue: 1})
	release := make(chan struct{})
	started := make(chan struct{})
	go func() { _ = p.do(context.Background(), func() error { close(started); <-release; return nil }) }()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Check(ctx, p.dummy, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want canceled", err)
	}
	close(release)
	waitFor(t, func() bool { return len(p.slots) == 0 })
}

// TestPasswordsWaitBounded: a request that waits MaxWait for a worker is
// refused with busy, and its queue slot is free again. Before, it waited
// until the HTTP write timeout closed its connection (EOF, no answer).
func TestPasswordsWaitBounded(t *testing.T) {
	p, _ := NewPasswords(PasswordsConfig{Workers: 1, Queue: 1, MaxWait: 50 * time.Millisecond})
	release := make(chan struct{})
	started := make(chan struct{})
	go func() { _ = p.do(context.Background(), func() error { close(started); <-release; return nil }) }()
	<-started
	if _, err := p.Check(context.Background(), p.dummy, "x"); !errors.Is(err, domain.ErrBusy) || domain.RetryAfterOf(err) <= 0 {
		t.Fatalf("got %v, want busy with a Retry-After", err)
	}
	close(release)
	waitFor(t, func() bool { return len(p.slots) == 0 })
}

func TestThrottle(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	th := NewThrottle(ThrottleConfig{Limit: 3, Window: time.Minute, MaxKeys: 4})
	for i := range 3 {
		if err := th.Allow("ann", now); err != nil {
			t.Fatalf("attempt %d refused: %v", i, err)
		}
		th.Fail("ann", now.Add(time.Duration(i)*time.Second))
	}
	err := th.Allow("ann", now.Add(10*time.Second))
	if !errors.Is(err, domain.ErrRateLimited) || domain.RetryAfterOf(err) != 50*time.Second {
		t.Fatalf("4th attempt: %v after %s, want rate_limited after 50s", err, domain.RetryAfterOf(err))
	}
	if err := th.Allow("bob", now); err != nil {
		t.Fatalf("another key refused: %v", err)
	}
	if err := th.Allow("ann", now.Add(time.Minute)); err != nil {
		t.Fatalf("next window refused: %v", err)
	}
	th.Fail("ann", now.Add(time.Minute)) // a new window starts
	if err := th.Allow("ann", now.Add(time.Minute+time.Second)); err != nil {
		t.Fatalf("one failure in the new window refused: %v", err)
	}
	// The table holds at most MaxKeys.
	for i := range 10 {
		th.Fail(fmt.Sprint("k", i), now.Add(time.Minute+time.Duration(i)*time.Millisecond))
	}
	if n := th.Len(); n > 4 {
		t.Fatalf("%d keys held, bound 4", n)
	}
	var off *Throttle
	off.Fail("x", now)
	if err := off.Allow("x", now); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
