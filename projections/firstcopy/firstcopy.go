// Package firstcopy answers, for a projection that keeps one copy of each
// message (history per channel, the inbox per member), the question every
// record asks: "is there an earlier copy of this in the store?", from the
// projection's memory of what one partition's run has stored, so that the
// store is read only where that memory cannot know.
//
// A message may reach the log more than once: appended again by the sends
// processor after a transaction it could not tell committed from aborted
// (a fenced processor's last one, see projections/sends), or the records of a fan-out
// transaction that a broker's crash exposed and that the fan-out wrote
// again. The first copy, by offset, is the one kept.
package firstcopy

import "time"

// SkewMargin bounds how far the clocks of the gateways (which stamp a
// message's time sent) and of a projection's process may disagree, and
// how long after it was sent a message's first copy may reach the log: a
// message sent this much later than a partition's run began has no copy
// from before the run (see Memory).
const SkewMargin = 10 * time.Second

// Max bounds the keys a Memory remembers (some 100 bytes each).
const Max = 1 << 16

// Memory remembers the first offset of each key stored by one partition's
// run (since the projection last began it, at start). Lookup answers only
// what it can know:
//   - a copy below the run's first offset was appended before start, so a
//     message sent (by its gateway's clock) at least SkewMargin after start
//     has no copy there;
//   - a key forgotten to keep the memory bounded was of a message sent at
//     or before horizon, so a message sent after it was never forgotten.
//
// Otherwise (the first SkewMargin of a run, a message sent long ago) the
// store must say. A Memory is not safe for concurrent use.
type Memory[K comparable] struct {
	start   time.Time
	horizon time.Time // the latest time sent among those forgotten
	first   map[K]int64
	order   []remembered[K] // ring, oldest at next once full
	next    int
	max     int
}

type remembered[K comparable] struct {
	k    K
	sent time.Time
}

// New returns the memory of a run begun at start, holding up to max keys.
func New[K comparable](start time.Time, max int) *Memory[K] {
	return &Memory[K]{start: start, first: map[K]int64{}, max: max}
}

// Lookup returns the lowest offset of k's copies that the memory knows
// (-1: none), or known false when the store must say.
func (m *Memory[K]) Lookup(k K, sent time.Time) (offset int64, known bool) {
	if off, ok := m.first[k]; ok {
		return off, true
	}
	if sent.After(m.horizon) && !sent.Before(m.start.Add(SkewMargin)) {
		return -1, true
	}
	return 0, false
}

// Add remembers that k has a copy stored at offset, forgetting the oldest
// remembered key when full.
func (m *Memory[K]) Add(k K, offset int64, sent time.Time) {
	if old, ok := m.first[k]; ok {
		m.first[k] = min(old, offset)
		return
	}
	if len(m.order) < m.max {
		m.order = append(m.order, remembered[K]{k, sent})
	} else {
		gone := m.order[m.next]
		delete(m.first, gone.k)
		if gone.sent.After(m.horizon) {
			m.horizon = gone.sent
		}
		m.order[m.next] = remembered[K]{k, sent}
		m.next = (m.next + 1) % m.max
	}
	m.first[k] = offset
}
