package ws

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/evchat/evchat/domain"
)

// conn is one device's connection.
type conn struct {
	user    domain.UserID
	device  domain.DeviceID
	ws      *websocket.Conn
	done    chan struct{}
	once    sync.Once
	maxBuf  int
	metrics *Metrics
	gen     *generation // the inbox epoch the connection is in, for its life

	// The send queue: a slice that grows only as frames wait (an idle
	// connection holds none), bounded by maxQueue, and a doorbell for the
	// writer. Guarded by qmu, which is taken after mu, never before.
	qmu      sync.Mutex
	queue    [][]byte
	writing  int // frames the writer has taken and not yet written
	maxQueue int
	wake     chan struct{}
	drained  chan struct{} // the writer wrote a frame (a sync waits on it)

	// behind starts a catch-up from the store (Server.catchUp) when live
	// entries come faster than the client reads; set by Serve.
	behind func()
	// syncMu is held by a sync, so that a catch-up and a sync the device
	// asked for take turns.
	syncMu sync.Mutex

	mu       sync.Mutex // guards the fields below
	syncing  bool
	dropping bool // live entries are dropped: a sync will read them from the store
	buf      []pending
	had      func(domain.MessageID) bool // after a carry-over: whether the device had a message
	last     int64                       // offset of the newest entry delivered; -1: none
	recent   *recentIDs
	cutWhy   string
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

// deliverLocked sends an inbox entry unless it is at or before the last
// position delivered or a copy of a message just delivered.
func (c *conn) deliverLocked(offset int64, m domain.InboxMessage, live bool) {
	if offset <= c.last {
		return
	}
	c.last = offset
	if c.recent == nil {
		c.recent = &recentIDs{}
	}
	if c.recent.seen(m.MessageID) {
		return
	}
	c.sendLocked(messageFrame(c.gen.epoch, offset, m))
	c.metrics.delivered(m.SentAt, live)
}

type pending struct {
	offset int64
	msg    domain.InboxMessage
}

// offer hands the connection a live inbox entry. Called by the tailer with
// the entry's partition held, so it must not wait for the client.
//
// When entries come faster than the client reads (its send queue is half
// full), or more of them arrive during a sync than the sync may hold, or
// one comes without its text, the connection stops taking live entries
// and catches up from the store instead, at the client's pace: every entry
// it drops is below the tailer's point, so the next sync reads it from the
// store.
func (c *conn) offer(offset int64, m domain.InboxMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.dropping:
		return
	case c.syncing:
		if len(c.buf) >= c.maxBuf || !m.Resolved() {
			c.dropping, c.buf = true, nil // the running sync goes round again
			return
		}
		c.buf = append(c.buf, pending{offset, m})
		return
	case !m.Resolved() || c.queued() >= c.maxQueue/2:
		// Without its text (the tailer could not resolve it in time, or
		// the connection is newer than the tailer's resolve) the entry
		// is read from the store like one the client was too slow for.
		c.syncing, c.dropping = true, true
		c.behind()
		return
	}
	c.deliverLocked(offset, m, true)
}

// takesLive reports whether the connection delivers or buffers live
// entries now, rather than dropping them while it catches up from the
// store.
func (c *conn) takesLive() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.dropping
}

// queued returns the frames waiting for the writer or being written.
func (c *conn) queued() int {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return len(c.queue) + c.writing
}

// waitRoom waits until n more frames fit in half the send queue, counting
// those being written: a sync, which can wait, delivers at the pace the
// client reads, where live delivery, which cannot, cuts a slow client off.
//
// It waits as long as the client reads: every frame the writer writes is
// progress. It fails when the writer has written nothing for stall.
func (c *conn) waitRoom(ctx context.Context, n int, stall time.Duration) error {
	var timer *time.Timer
	for {
		waiting := c.queued()
		if waiting == 0 || waiting+n <= c.maxQueue/2 {
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(stall)
			defer timer.Stop()
		}
		select {
		case <-c.drained:
			timer.Reset(stall) // progress
		case <-c.done:
			return errClosed
		case <-ctx.Done():
			return &domain.Error{Code: domain.CodeUnavailable, Msg: "the sync was cancelled", Err: ctx.Err()}
		case <-timer.C:
			return domain.Errorf(domain.CodeUnavailable, "the client read nothing for %s", stall)
		}
	}
}

var errClosed = errors.New("ws: connection closed")

// send queues a frame for the writer.
func (c *conn) send(f ServerFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sendLocked(f)
}

func (c *conn) sendLocked(f ServerFrame) {
	b, err := json.Marshal(f)
	if err != nil {
		return
	}
	c.qmu.Lock()
	full := len(c.queue) >= c.maxQueue
	if !full {
		c.queue = append(c.queue, b)
	}
	c.qmu.Unlock()
	if full {
		c.cutLocked("slow client: send queue full")
		return
	}
	select {
	case c.wake <- struct{}{}:
	default: // the writer has been woken already
	}
}

func (c *conn) isCut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cutWhy != ""
}

// cut closes the connection, telling the client why.
func (c *conn) cut(why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cutLocked(why)
}

func (c *conn) cutLocked(why string) {
	if c.cutWhy == "" {
		c.cutWhy = why
		// Tell the client why (WriteControl may run beside the writer).
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseTryAgainLater, truncate(why, 120)),
			time.Now().Add(time.Second))
	}
	c.close()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// close ends the connection once: the writer stops and the reader's next
// read fails.
func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.ws.Close()
	})
}

// write runs the writer: it drains the queue and pings. It returns when the
// connection closes.
func (c *conn) write(writeTimeout, pingEvery time.Duration) {
	tick := time.NewTicker(pingEvery)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
			c.qmu.Lock()
			batch := c.queue
			c.queue = nil
			c.writing = len(batch)
			c.qmu.Unlock()
			for _, b := range batch {
				_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
				if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
					c.close()
					return
				}
				// One frame fewer waits: a sync waiting for room (or
				// for any progress at all) learns of it at once.
				c.qmu.Lock()
				c.writing--
				c.qmu.Unlock()
				select {
				case c.drained <- struct{}{}:
				default:
				}
			}
		case <-tick.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				c.close()
				return
			}
		}
	}
}
