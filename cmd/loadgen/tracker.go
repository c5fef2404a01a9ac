package main

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: 1 µs to 5 minutes, 3 significant digits.
const (
	histMin    = 1
	histMax    = int64(5 * time.Minute / time.Microsecond)
	histDigits = 3
)

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// record adds d in microseconds, clamped to the histogram's range.
func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := d.Microseconds()
	us = max(histMin, min(us, histMax))
	_ = h.RecordValue(us) // in range: cannot fail
}

// stamp returns a message text that names the send id, padded to size.
func stamp(run string, id uint64, size int) string {
	var b strings.Builder
	b.Grow(size)
	b.WriteString("lg ")
	b.WriteString(run)
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(id, 10))
	b.WriteByte(' ')
	for b.Len() < size {
		b.WriteByte('x')
	}
	return b.String()
}

// parseStamp returns the send id a text of run names.
func parseStamp(run, text string) (uint64, bool) {
	rest, ok := strings.CutPrefix(text, "lg ")
	if !ok {
		return 0, false
	}
	rest, ok = strings.CutPrefix(rest, run)
	if !ok || !strings.HasPrefix(rest, " ") {
		return 0, false
	}
	num, _, ok := strings.Cut(rest[1:], " ")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(num, 10, 64)
	return id, err == nil
}

// clientMsgID is a send's client_msg_id; parseClientMsgID reverses it.
func clientMsgID(id uint64) string { return "lg-" + strconv.FormatUint(id, 10) }

func parseClientMsgID(s string) (uint64, bool) {
	num, ok := strings.CutPrefix(s, "lg-")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(num, 10, 64)
	return id, err == nil
}

// tracker follows every send until each recipient connection has it: it
// counts acknowledgements, failures, deliveries, duplicates and what is
// still missing, and records send → ack and send → deliver latency of the
// sends made in the measured window. It is safe for concurrent use; sends
// are spread over shards by id.
type tracker struct {
	winStart, winEnd atomic.Int64 // unix ns; deliveries arriving in [start, end) make the delivery rate
	shards           [trackerShards]trackerShard
}

const trackerShards = 16

type trackerShard struct {
	mu      sync.Mutex
	sends   map[uint64]*sendState
	ack     *hdrhistogram.Histogram
	deliver *hdrhistogram.Histogram
	n       counts
}

// counts are a tracker's counters.
type counts struct {
	Sent             int64 // sends written (or attempted)
	Measured         int64 // of them, sent in the measured window
	Acked            int64 // sends acknowledged (first ack of each)
	Failed           int64 // sends answered with an error frame, or not written
	Unacked          int64 // sends neither acknowledged nor failed yet
	Pending          int64 // sends not failed with a recipient still missing
	Deliveries       int64 // first copies of a send on a recipient connection
	WindowDeliveries int64 // of them, arrived in the measured window
	Duplicates       int64 // further copies on a connection that had the send
	Unexpected       int64 // message frames or acks matching no send or recipient
}

func (c *counts) add(o counts) {
	c.Sent += o.Sent
	c.Measured += o.Measured
	c.Acked += o.Acked
	c.Failed += o.Failed
	c.Unacked += o.Unacked
	c.Pending += o.Pending
	c.Deliveries += o.Deliveries
	c.WindowDeliveries += o.WindowDeliveries
	c.Duplicates += o.Duplicates
	c.Unexpected += o.Unexpected
}

type sendState struct {
	at       time.Time
	group    int    // the channel it was sent to
	got      []bool // by recipient slot
	missing  int
	acked    bool
	failed   bool
	measured bool
}

func newTracker() *tracker {
	t := &tracker{}
	for i := range t.shards {
		t.shards[i] = trackerShard{sends: map[uint64]*sendState{}, ack: newHistogram(), deliver: newHistogram()}
	}
	return t
}

func (t *tracker) shard(id uint64) *trackerShard { return &t.shards[id%trackerShards] }

// setWindow sets the measured window for the delivery rate.
func (t *tracker) setWindow(start, end time.Time) {
	t.winStart.Store(start.UnixNano())
	t.winEnd.Store(end.UnixNano())
}

// sent registers send id, made at at to channel group, expected on its
// recipients connections. Call it before the frame is written, so that no
// answer can come first.
func (t *tracker) sent(id uint64, group, recipients int, at time.Time, measured bool) {
	s := t.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sends[id] = &sendState{at: at, group: group, got: make([]bool, recipients), missing: recipients, measured: measured}
	s.n.Sent++
	s.n.Unacked++
	if measured {
		s.n.Measured++
	}
	if recipients > 0 {
		s.n.Pending++
	}
}

// acked records the acknowledgement of id, arrived at at.
func (t *tracker) acked(id uint64, at time.Time) {
	s := t.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sends[id]
	if st == nil {
		s.n.Unexpected++
		return
	}
	if st.acked || st.failed {
		return
	}
	st.acked = true
	s.n.Acked++
	s.n.Unacked--
	if st.measured {
		record(s.ack, at.Sub(st.at))
	}
}

// failed records that id was refused or never written: no recipient is
// expected to get it.
func (t *tracker) failed(id uint64) {
	s := t.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sends[id]
	if st == nil || st.failed {
		return
	}
	st.failed = true
	s.n.Failed++
	if !st.acked {
		s.n.Unacked--
	}
	if st.missing > 0 {
		s.n.Pending--
	}
}

// delivered records that the recipient connection in slot of channel
// group got id at at.
func (t *tracker) delivered(id uint64, group, slot int, at time.Time) {
	s := t.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sends[id]
	if st == nil || st.group != group || slot < 0 || slot >= len(st.got) {
		s.n.Unexpected++
		return
	}
	if st.got[slot] {
		s.n.Duplicates++
		return
	}
	st.got[slot] = true
	st.missing--
	s.n.Deliveries++
	if ns := at.UnixNano(); ns >= t.winStart.Load() && ns < t.winEnd.Load() {
		s.n.WindowDeliveries++
	}
	if st.missing == 0 && !st.failed {
		s.n.Pending--
	}
	if st.measured {
		record(s.deliver, at.Sub(st.at))
	}
}

// unexpected counts a frame that matches no send.
func (t *tracker) unexpected() {
	s := &t.shards[0]
	s.mu.Lock()
	s.n.Unexpected++
	s.mu.Unlock()
}

// counts returns the counters so far.
func (t *tracker) counts() counts {
	var c counts
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		c.add(s.n)
		s.mu.Unlock()
	}
	return c
}

// histograms returns copies of the send → ack and send → deliver
// histograms so far.
func (t *tracker) histograms() (ack, deliver *hdrhistogram.Histogram) {
	ack, deliver = newHistogram(), newHistogram()
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		ack.Merge(s.ack)
		deliver.Merge(s.deliver)
		s.mu.Unlock()
	}
	return ack, deliver
}

// losses counts what never arrived: deliveries expected (recipients of
// sends not failed), those missing, the sends missing on at least one
// recipient, and sends neither acknowledged nor refused.
type losses struct {
	Expected       int64
	LostDeliveries int64
	LostMessages   int64
	Unacked        int64
}

func (t *tracker) losses() losses {
	var l losses
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, st := range s.sends {
			if st.failed {
				continue
			}
			if !st.acked {
				l.Unacked++
			}
			l.Expected += int64(len(st.got))
			if st.missing > 0 {
				l.LostDeliveries += int64(st.missing)
				l.LostMessages++
			}
		}
		s.mu.Unlock()
	}
	return l
}
