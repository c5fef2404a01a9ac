package ws

import (
	"slices"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// handoff is one connection's side of the hand-off between the store and
// live delivery: what the device has (its position, the message ids just
// delivered, the messages it had in an older epoch), and, while a sync
// runs, the live entries that wait for it. It does no I/O and takes no
// lock: conn.mu guards it. Server.sync drives it; handoff_test.go holds
// it to these rules:
//
//   - An entry goes to the device once, in offset order: never one at or
//     before the position (last), never a second inbox copy of a message
//     delivered a moment ago (recent), never, after a carry-over, a
//     message the device had in the older epoch, whether the store or the
//     live tail brings it (had: the position moves past it all the same).
//   - A connection that resumes takes nothing live before its sync; one
//     that does not takes live entries from the point it connected at
//     (connect), never older ones.
//   - A sync round notes the tailer's point T with the partition held
//     (begin): every entry below T comes from the store, every entry at or
//     past T arrives live and is buffered, and the buffer follows the store
//     (next): no gap, no duplicate.
//   - When more live entries arrive during a sync than it may hold, or one
//     arrives without its text, the buffer is dropped and the round goes
//     round again from where it got to (they are in the store by then).
//     When the client reads slower than live entries come (its queue is
//     half full), the connection drops live entries and catches up from
//     the store (offer answers offerBehind).
type handoff struct {
	maxBuf      int // the most live entries buffered during a sync
	maxBufBytes int // and the most bytes of their texts

	syncing  bool // live entries wait in buf for the running sync
	dropping bool // live entries are dropped: a sync will read them from the store
	buf      []pending
	bufBytes int                         // of the texts in buf
	had      func(domain.MessageID) bool // after a carry-over: whether the device had a message
	last     int64                       // offset of the newest entry delivered; -1: none
	recent   *recentIDs
}

type pending struct {
	offset int64
	msg    domain.InboxMessage
}

func newHandoff(maxBuf, maxBufBytes int) handoff {
	return handoff{maxBuf: maxBuf, maxBufBytes: maxBufBytes, last: -1}
}

// connect places a new connection at point, the present of its user's
// inbox: live entries below it are not delivered. A connection that
// resumes (it gave a position) buffers live entries from its first moment
// until its sync takes them, so none can overtake what it missed.
func (h *handoff) connect(point int64, resume bool) {
	h.last = point - 1
	h.syncing = resume
}

// begin starts a sync round from position, with the tailer's point held
// still: live entries from here on wait in the buffer.
func (h *handoff) begin(position int64) {
	h.syncing, h.dropping = true, false
	h.buf, h.bufBytes = h.buf[:0], 0
	h.last = position
}

// offerAction is what a connection does with a live entry.
type offerAction int

const (
	offerNone    offerAction = iota // buffered for the sync, or dropped
	offerDeliver                    // deliver it now (take decides whether it goes out)
	offerBehind                     // start a catch-up from the store
)

// offer takes a live entry; halfFull reports whether the connection's send
// queue is half full (asked only when it matters: it takes the queue's
// lock).
func (h *handoff) offer(offset int64, m domain.InboxMessage, halfFull func() bool) offerAction {
	switch {
	case h.dropping:
		return offerNone
	case h.syncing:
		if len(h.buf) >= h.maxBuf || h.bufBytes+len(m.Text) > h.maxBufBytes || !m.Resolved() {
			h.dropping, h.buf, h.bufBytes = true, nil, 0 // the running sync goes round again
			return offerNone
		}
		h.buf = append(h.buf, pending{offset, m})
		h.bufBytes += len(m.Text)
		return offerNone
	case !m.Resolved() || halfFull():
		// Without its text (the tailer could not resolve it in time, or
		// the connection is newer than the tailer's resolve) the entry
		// is read from the store like one the client was too slow for.
		h.syncing, h.dropping = true, true
		return offerBehind
	}
	return offerDeliver
}

// take reports whether the entry at offset goes to the device, and moves
// the position to it when it is past it. After a carry-over, a message the
// device had in the older epoch does not go out, from the store or live,
// and the position moves past it: the new epoch's writer may lag the old
// one's at the switch, so entries of messages the device had live in the
// old epoch can arrive live after the sync.
func (h *handoff) take(offset int64, id domain.MessageID) bool {
	if h.had != nil && h.had(id) {
		h.last = max(h.last, offset)
		return false
	}
	if offset <= h.last {
		return false
	}
	h.last = offset
	if h.recent == nil {
		h.recent = &recentIDs{}
	}
	return !h.recent.seen(id)
}

// roundStep is what a sync round does next, once the store's entries
// below the tailer's point are delivered.
type roundStep int

const (
	stepDeliver roundStep = iota // deliver the batch, then ask again
	stepAgain                    // live entries were dropped: go round again from last
	stepSynced                   // nothing waits: live delivery resumes at last
)

// next hands over the live entries buffered since the round began (or
// since the last call). When none wait, the sync is over: live entries
// are delivered as they come again.
func (h *handoff) next() ([]pending, roundStep) {
	if h.dropping {
		return nil, stepAgain
	}
	batch := h.buf
	h.buf, h.bufBytes = nil, 0
	if len(batch) == 0 {
		h.syncing = false
		return nil, stepSynced
	}
	return batch, stepDeliver
}

// fail forgets the buffer of a sync that failed; the connection is closed.
func (h *handoff) fail() { h.buf, h.bufBytes = nil, 0 }

// takesLive reports whether the connection delivers or buffers live
// entries now, rather than dropping them while it catches up.
func (h *handoff) takesLive() bool { return !h.dropping }

// storePage picks, from a page of the store's entries of a user after
// after (in offset order, at most page of them), those a sync delivers
// now: those below upto (the store holds every entry below it), at most
// maxBytes of text (one entry at least). next is where the following read
// starts after: the last entry picked when the page or the bytes ran out,
// else upto-1, since every stored entry of the user below upto is picked.
func storePage(es []store.InboxEntry, upto int64, maxBytes, page int) (ps []pending, next int64) {
	ps = make([]pending, 0, len(es))
	full, bytes := false, 0
	for _, e := range es {
		if e.Offset >= upto {
			break
		}
		if full = len(ps) > 0 && bytes+len(e.Message.Text) > maxBytes; full {
			break
		}
		ps = append(ps, pending{e.Offset, e.Message})
		bytes += len(e.Message.Text)
	}
	if len(ps) == page || full {
		return ps, ps[len(ps)-1].offset
	}
	return ps, upto - 1
}

// carried returns whether a message is among ids, the messages a device
// had in an older epoch (see Server.carryOver); ids is sorted in place.
func carried(ids []domain.MessageID) func(domain.MessageID) bool {
	slices.Sort(ids)
	return func(id domain.MessageID) bool {
		_, found := slices.BinarySearch(ids, id)
		return found
	}
}

// recentIDs remembers the last message ids delivered on a connection, so
// that a second inbox copy of a message (see package inbox) arriving live
// is not delivered twice. Allocated on first delivery.
type recentIDs struct {
	ids  [256]domain.MessageID
	next int
}

func (r *recentIDs) seen(id domain.MessageID) bool {
	for _, x := range r.ids {
		if x == id {
			return true
		}
	}
	r.ids[r.next] = id
	r.next = (r.next + 1) % len(r.ids)
	return false
}
