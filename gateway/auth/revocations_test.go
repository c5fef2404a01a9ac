package auth

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
)

// sessionStore is a store of revoked sessions that counts its reads.
type sessionStore struct {
	mu      sync.Mutex
	revoked map[string]bool
	reads   int
	err     error
}

func (s *sessionStore) RevokeSession(_ context.Context, u domain.UserID, sid string, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked[string(u)+"/"+sid] = true
	return nil
}

func (s *sessionStore) SessionRevoked(_ context.Context, u domain.UserID, sid string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	return s.revoked[string(u)+"/"+sid], s.err
}

// TestRevocations: revoked sessions are answered from the cache for good,
// others for Recheck; a revocation on another node (straight in the store)
// is seen once Recheck has passed; the cache forgets past Entries and
// reads the store again; a store error is returned and not remembered.
func TestRevocations(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &sessionStore{revoked: map[string]bool{}}
	r, err := NewRevocations(st, RevocationsConfig{Entries: 2, Recheck: time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	check := func(step string, u domain.UserID, sid string, want bool, reads int) {
		t.Helper()
		got, err := r.SessionRevoked(ctx, u, sid)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if got != want || st.reads != reads {
			t.Fatalf("%s: revoked %v after %d store reads, want %v after %d", step, got, st.reads, want, reads)
		}
	}
	check("first ask", "ann", "s1", false, 1)
	check("within recheck", "ann", "s1", false, 1)

	// Another node logs s1 out: this node trusts its "no" until Recheck.
	_ = st.RevokeSession(ctx, "ann", "s1", now.Add(time.Hour))
	now = now.Add(999 * time.Millisecond)
	check("revoked elsewhere, within recheck", "ann", "s1", false, 1)
	now = now.Add(time.Millisecond)
	check("revoked elsewhere, recheck passed", "ann", "s1", true, 2)
	now = now.Add(24 * time.Hour)
	check("revoked, a day later", "ann", "s1", true, 2)

	// Logged out elsewhere, and Forget told: refused at once.
	check("s5 first ask", "dan", "s5", false, 3)
	_ = st.RevokeSession(ctx, "dan", "s5", now.Add(time.Hour))
	r.Forget("dan")
	check("s5 revoked elsewhere, forgotten", "dan", "s5", true, 4)
	now = now.Add(time.Millisecond)
	check("s6 of dan, asked after the Forget", "dan", "s6", false, 5)
	check("s6 trusted again", "dan", "s6", false, 5)

	// Logged out through the cache: refused at once, without a read.
	check("s2 first ask", "ann", "s2", false, 6)
	if err := r.RevokeSession(ctx, "ann", "s2", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("s2 logged out here", "ann", "s2", true, 6)

	// Two revoked sessions fit; a third makes the cache forget s1.
	if err := r.RevokeSession(ctx, "bob", "s3", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("s3", "bob", "s3", true, 6)
	check("s2 still remembered", "ann", "s2", true, 6)
	check("s1 forgotten, read again", "ann", "s1", true, 7)

	// A store that fails: the error, and nothing remembered.
	st.err = errors.New("store down")
	if _, err := r.SessionRevoked(ctx, "cat", "s4"); err == nil {
		t.Fatal("a store error was not returned")
	}
	st.err = nil
	check("after the error", "cat", "s4", false, 9)
}

func TestRevocationsConfig(t *testing.T) {
	for _, cfg := range []RevocationsConfig{{Entries: -1}, {Recheck: -time.Second}} {
		if _, err := NewRevocations(&sessionStore{}, cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
