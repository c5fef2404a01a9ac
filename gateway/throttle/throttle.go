// Package throttle keeps token buckets per key (a user id): how many sends,
// bytes of text, channel creations and member adds one user may make, on
// golang.org/x/time/rate. The buckets are per process: a user whose
// connections spread over n gateways gets up to n times the rate.
package throttle

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rule is a bucket's refill rate per second and its size.
type Rule struct {
	PerSecond float64
	Burst     int
}

// Buckets is one token bucket per key, all with the same rule. A bucket
// that has filled up again is forgotten, so memory follows the keys
// active lately. Safe for concurrent use.
type Buckets struct {
	rule Rule

	mu      sync.Mutex
	byKey   map[string]*rate.Limiter
	inserts int
}

// New returns empty buckets with the rule.
func New(rule Rule) *Buckets {
	return &Buckets{rule: rule, byKey: map[string]*rate.Limiter{}}
}

// Rule returns the buckets' rule.
func (b *Buckets) Rule() Rule { return b.rule }

// sweepEvery is how many new keys pass between sweeps of full buckets.
const sweepEvery = 1024

func (b *Buckets) limiter(key string, now time.Time) *rate.Limiter {
	if l, ok := b.byKey[key]; ok {
		return l
	}
	b.inserts++
	if b.inserts%sweepEvery == 0 {
		for k, l := range b.byKey {
			if l.TokensAt(now) >= float64(b.rule.Burst) {
				delete(b.byKey, k) // full again: the same as a new one
			}
		}
	}
	l := rate.NewLimiter(rate.Limit(b.rule.PerSecond), b.rule.Burst)
	b.byKey[key] = l
	return l
}

// Take is n tokens from the bucket of B.
type Take struct {
	B *Buckets
	N int
}

// Allow takes each of takes for key at now, all or none. When one cannot
// be taken, nothing is, and retry says how long until all can be (0 when
// one asks for more than its bucket holds: it never can). A nil
// *Buckets always allows.
func Allow(now time.Time, key string, takes ...Take) (retry time.Duration, ok bool) {
	var rs []*rate.Reservation
	cancel := func() {
		for _, r := range rs {
			r.CancelAt(now)
		}
	}
	for _, t := range takes {
		if t.B == nil {
			continue
		}
		t.B.mu.Lock()
		r := t.B.limiter(key, now).ReserveN(now, t.N)
		t.B.mu.Unlock()
		if !r.OK() {
			cancel()
			return 0, false
		}
		rs = append(rs, r)
		retry = max(retry, r.DelayFrom(now))
	}
	if retry > 0 {
		cancel()
		return retry, false
	}
	return 0, true
}
