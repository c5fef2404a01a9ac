package auth

import (
	"context"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/evchat/evchat/domain"
)

// SessionStore keeps revoked sessions durably (store.Store does).
type SessionStore interface {
	RevokeSession(ctx context.Context, u domain.UserID, sid string, expires time.Time) error
	SessionRevoked(ctx context.Context, u domain.UserID, sid string) (bool, error)
}

// RevocationsConfig bounds the cache of Revocations.
type RevocationsConfig struct {
	// Entries is how many sessions the cache remembers as revoked, and
	// as many again as not revoked; past it the least recently used is
	// forgotten (and read from the store again when asked). Each entry
	// holds some 200 bytes. Default 50,000.
	Entries int
	// Recheck is how long "not revoked" is trusted: a session logged out
	// on another node is refused on this one at most Recheck after the
	// store recorded it. A revocation is permanent, so "revoked" is
	// trusted until forgotten. Default 1s.
	Recheck time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// DefaultRevocationEntries and DefaultRevocationRecheck are
// RevocationsConfig's defaults.
const (
	DefaultRevocationEntries = 50_000
	DefaultRevocationRecheck = time.Second
)

// Validate reports a config that cannot work.
func (c RevocationsConfig) Validate() error {
	if c.Entries < 0 || c.Recheck < 0 {
		return fmt.Errorf("auth: revocation cache of %d entries, recheck %s: want ≥ 0 (0: the default)", c.Entries, c.Recheck)
	}
	return nil
}

type session struct {
	user domain.UserID
	sid  string
}

// Revocations answers whether a session is revoked from a small bounded
// cache in front of the store, so that an authenticated request does not
// read the store each time: revoked sessions are remembered (a revocation
// is never undone), sessions found not revoked for Recheck. A session
// revoked through Revocations is refused at once on this node, and one
// revoked on another node as soon as Forget learns of it (the gateway's
// tail of device.logged_out), else within Recheck. Safe for concurrent
// use.
type Revocations struct {
	st         SessionStore
	recheck    time.Duration
	now        func() time.Time
	revoked    *lru.Cache[session, struct{}]
	notRevoked *lru.Cache[session, time.Time] // when the store said so
	// loggedOut: when Forget last heard of a logout of the user; a "not
	// revoked" of the user's from before then is not trusted.
	loggedOut *lru.Cache[domain.UserID, time.Time]
}

// NewRevocations returns a cache of cfg in front of st.
func NewRevocations(st SessionStore, cfg RevocationsConfig) (*Revocations, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Entries == 0 {
		cfg.Entries = DefaultRevocationEntries
	}
	if cfg.Recheck == 0 {
		cfg.Recheck = DefaultRevocationRecheck
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	revoked, err := lru.New[session, struct{}](cfg.Entries)
	if err != nil {
		return nil, err
	}
	notRevoked, err := lru.New[session, time.Time](cfg.Entries)
	if err != nil {
		return nil, err
	}
	loggedOut, err := lru.New[domain.UserID, time.Time](cfg.Entries)
	if err != nil {
		return nil, err
	}
	return &Revocations{st: st, recheck: cfg.Recheck, now: cfg.Now, revoked: revoked, notRevoked: notRevoked, loggedOut: loggedOut}, nil
}

// SessionRevoked reports whether session sid of u is revoked.
func (r *Revocations) SessionRevoked(ctx context.Context, u domain.UserID, sid string) (bool, error) {
	k := session{u, sid}
	if r.revoked.Contains(k) {
		return true, nil
	}
	now := r.now()
	if at, ok := r.notRevoked.Get(k); ok && now.Sub(at) < r.recheck {
		if out, ok := r.loggedOut.Peek(u); !ok || at.After(out) {
			return false, nil
		}
	}
	revoked, err := r.st.SessionRevoked(ctx, u, sid)
	if err != nil {
		return false, err
	}
	if revoked {
		r.revoked.Add(k, struct{}{})
		r.notRevoked.Remove(k)
	} else {
		r.notRevoked.Add(k, now)
	}
	return revoked, nil
}

// Forget drops what the cache believes about u's sessions not being
// revoked: a device of u logged out on some node, which revoked its
// session in the store first.
func (r *Revocations) Forget(u domain.UserID) { r.loggedOut.Add(u, r.now()) }

// RevokeSession records the revocation in the store, then in the cache.
func (r *Revocations) RevokeSession(ctx context.Context, u domain.UserID, sid string, expires time.Time) error {
	if err := r.st.RevokeSession(ctx, u, sid, expires); err != nil {
		return err
	}
	k := session{u, sid}
	r.revoked.Add(k, struct{}{})
	r.notRevoked.Remove(k)
	return nil
}
