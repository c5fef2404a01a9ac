package main

import "time"

// pacer spaces sends evenly at a fixed rate from a start time, open loop:
// a send is due at start + n/rate whether or not earlier ones were
// answered, and a pacer that fell behind makes up the sends it owes at
// once, so a slow server cannot slow the offered load down.
type pacer struct {
	rate  float64 // sends per second
	start time.Time
	taken int64 // sends handed out so far
}

func newPacer(rate float64, start time.Time) *pacer {
	return &pacer{rate: rate, start: start}
}

// take returns how many sends are due at now and not yet taken, and counts
// them as taken. The first is due at start.
func (p *pacer) take(now time.Time) int64 {
	el := now.Sub(p.start)
	if el < 0 {
		return 0
	}
	due := int64(el.Seconds()*p.rate) + 1
	n := due - p.taken
	if n < 0 {
		return 0
	}
	p.taken = due
	return n
}

// next returns when the next send not yet taken is due.
func (p *pacer) next() time.Time {
	return p.start.Add(time.Duration(float64(p.taken) * float64(time.Second) / p.rate))
}
