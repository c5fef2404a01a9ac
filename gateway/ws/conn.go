package ws

import (
	"context"
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
	out     *batchConn // under ws: the writer's drains go out in one write each; nil in tests without a network
	done    chan struct{}
	once    sync.Once
	metrics *Metrics
	gen     *generation // the inbox epoch the connection is in, for its life

	// q is the send queue, bounded in frames and bytes; its lock is
	// taken after mu, never before.
	q *sendQueue
	// bodies encodes message frames, sharing each message's body.
	bodies *bodyCache

	// behind starts a catch-up from the store (Server.catchUp) when live
	// entries come faster than the client reads; set by Serve.
	behind func()
	// syncMu is held by a sync, so that a catch-up and a sync the device
	// asked for take turns.
	syncMu sync.Mutex

	mu sync.Mutex // guards the fields below
	// h is what the device has and, during a sync, the live entries that
	// wait for it: the hand-off between the store and live delivery.
	h      handoff
	cutWhy string
}

// deliverLocked sends an inbox entry the hand-off took (handoff.take). f
// is the entry's frame when the caller has encoded it (the tailer, once
// for all the user's connections); otherwise it is encoded here, sharing
// the message's body.
func (c *conn) deliverLocked(offset int64, m domain.InboxMessage, f *outFrame, live bool) {
	if f == nil {
		enc, err := c.bodies.messageFrame(c.gen.epoch, offset, m)
		if err != nil {
			return
		}
		f = &enc
	}
	c.pushLocked(*f)
	c.metrics.delivered(m.SentAt, live)
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
//
// f is the entry's frame, encoded once for every connection of the user.
func (c *conn) offer(offset int64, m domain.InboxMessage, f outFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.h.offer(offset, m, c.q.halfFull) {
	case offerBehind:
		c.behind()
	case offerDeliver:
		if c.h.take(offset, m.MessageID) {
			c.deliverLocked(offset, m, &f, true)
		}
	}
}

// takesLive reports whether the connection delivers or buffers live
// entries now, rather than dropping them while it catches up from the
// store.
func (c *conn) takesLive() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.h.takesLive()
}

// waitRoom waits until frames more frames of bytes bytes fit in half the
// send queue, counting those being written: a sync, which can wait,
// delivers at the pace the client reads, where live delivery, which
// cannot, cuts a slow client off.
//
// It waits as long as the client reads: every frame the writer writes is
// progress. It fails when the writer has written nothing for stall.
func (c *conn) waitRoom(ctx context.Context, frames, bytes int, stall time.Duration) error {
	var timer *time.Timer
	for {
		if c.q.roomFor(frames, bytes) {
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(stall)
			defer timer.Stop()
		}
		select {
		case <-c.q.drained:
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
	enc, err := encodeFrame(f)
	if err != nil {
		return
	}
	c.pushLocked(enc)
}

// pushLocked queues an encoded frame; a client whose queue overflows is
// cut off with CloseSlowClient and resumes from its position when it
// reconnects.
func (c *conn) pushLocked(f outFrame) {
	if c.cutWhy != "" {
		return
	}
	if !c.q.push(f) {
		c.cutCodeLocked(CloseSlowClient, "slow client: send queue full; reconnect and resume from your position")
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

func (c *conn) cutLocked(why string) { c.cutCodeLocked(websocket.CloseTryAgainLater, why) }

// cutCode closes the connection with a close code and the reason.
func (c *conn) cutCode(code int, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cutCodeLocked(code, why)
}

func (c *conn) cutCodeLocked(code int, why string) {
	if c.cutWhy == "" {
		c.cutWhy = why
		// Tell the client why (WriteControl may run beside the writer).
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, truncate(why, 120)),
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
		case <-c.q.wake:
			if err := c.drain(writeTimeout); err != nil {
				c.close()
				return
			}
		case <-tick.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				c.close()
				return
			}
		}
	}
}

// drain writes every frame the queue holds, those queued while it writes
// included, and sends them in one write to the network (batchConn) rather
// than one per frame; whatever it took is out when it returns.
func (c *conn) drain(writeTimeout time.Duration) error {
	if c.out != nil {
		c.out.hold()
	}
	written := 0
	defer func() { c.metrics.drained(written) }()
	for {
		batch := c.q.take()
		if len(batch) == 0 {
			break
		}
		for _, f := range batch {
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := c.writeFrame(f); err != nil {
				if c.out != nil {
					_ = c.out.flush()
				}
				return err
			}
			// One frame fewer waits: a sync waiting for room (or for
			// any progress at all) learns of it at once. At most
			// batchFlushBytes of them wait in batchConn meanwhile.
			c.q.written(f)
			written++
		}
	}
	if c.out == nil {
		return nil
	}
	return c.out.flush()
}

// writeFrame writes one frame, its head and its shared body, as one
// WebSocket message.
func (c *conn) writeFrame(f outFrame) error {
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	if _, err := w.Write(f.head); err != nil {
		return err
	}
	if _, err := w.Write(f.body); err != nil {
		return err
	}
	return w.Close()
}
