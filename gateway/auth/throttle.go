package auth

import (
	"sync"
	"time"

	"github.com/evchat/evchat/domain"
)

// ThrottleConfig is a fixed-window limit on failures per key.
type ThrottleConfig struct {
	// Limit is how many failures a key may have in a window; the next
	// attempt in the same window is refused. 0 turns the throttle off.
	Limit int
	// Window is the window's length.
	Window time.Duration
	// MaxKeys bounds the table. When it is full, expired windows are
	// dropped; if none has expired, the window that started first is
	// dropped (the key starts afresh: a throttle on another key, such as
	// the source address, still bounds whoever churns through keys).
	// Default 100,000 (about 10 MB).
	MaxKeys int
}

// Throttle counts failures per key (a user name, a source address) in
// fixed windows and refuses a key that has used up its window, with
// domain.ErrRateLimited and a RetryAfter of the window's rest. It keeps at
// most MaxKeys keys. Safe for concurrent use.
type Throttle struct {
	cfg ThrottleConfig

	mu   sync.Mutex
	keys map[string]*window
}

type window struct {
	start    time.Time
	failures int
}

// NewThrottle returns a throttle of cfg.
func NewThrottle(cfg ThrottleConfig) *Throttle {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	return &Throttle{cfg: cfg, keys: map[string]*window{}}
}

// Allow returns nil when key may try now, else a rate_limited error that
// says when it may try again.
func (t *Throttle) Allow(key string, now time.Time) error {
	if t == nil || t.cfg.Limit <= 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.keys[key]
	if w == nil || now.Sub(w.start) >= t.cfg.Window || w.failures < t.cfg.Limit {
		return nil
	}
	return &domain.Error{
		Code:       domain.CodeRateLimited,
		Msg:        "too many failed attempts; retry later",
		RetryAfter: max(w.start.Add(t.cfg.Window).Sub(now), time.Second),
	}
}

// Fail counts a failure of key at now.
func (t *Throttle) Fail(key string, now time.Time) {
	if t == nil || t.cfg.Limit <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.keys[key]
	if w != nil && now.Sub(w.start) >= t.cfg.Window {
		w.start, w.failures = now, 0
	}
	if w == nil {
		if len(t.keys) >= t.cfg.MaxKeys {
			t.evict(now)
		}
		w = &window{start: now}
		t.keys[key] = w
	}
	w.failures++
}

// Len returns the number of keys held.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}

// evict makes room for one key: every expired window goes, else the
// oldest. It walks the table, which happens only when the table is full.
func (t *Throttle) evict(now time.Time) {
	var oldest string
	var first time.Time
	for k, w := range t.keys {
		if now.Sub(w.start) >= t.cfg.Window {
			delete(t.keys, k)
			continue
		}
		if oldest == "" || w.start.Before(first) {
			oldest, first = k, w.start
		}
	}
	if len(t.keys) >= t.cfg.MaxKeys {
		delete(t.keys, oldest)
	}
}
