package ws

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// batchConn is the network connection under a WebSocket, as gorilla sees
// it: while the connection's writer drains its queue (hold, then flush),
// the frames gorilla writes one Write each are gathered and go out in one
// write at the end of the drain, instead of one write syscall per frame.
// Outside a drain (the handshake's answer, pings and close frames written
// beside the writer) every Write goes straight through. The WebSocket
// protocol is unchanged: the same bytes, in the same order, in fewer
// writes.
//
// Nothing is held back past the drain that wrote it: flush writes what was
// gathered, and a drain's bytes beyond batchFlushBytes go out as soon as
// they pass it, so a burst costs no more memory than that beside the send
// queue. Writes that come from another goroutine during a drain (WriteControl)
// are gathered in order with the drain's frames (gorilla writes one frame
// at a time); close flushes first, so a close frame written during a drain
// still reaches the client.
//
// gorilla sets the write deadline before every frame it writes; during a
// drain the deadline is kept and set on the network connection before the
// write that carries the frames (the one in effect when they are written,
// as before), not once per frame: each set is a timer change in the
// runtime's poller. At 2,000 msg/s into groups of 10 that took
// SetWriteDeadline from 0.87% to 0.52% of chatd's CPU (a drain rarely
// holds more than one frame there).
type batchConn struct {
	net.Conn

	mu      sync.Mutex
	holding bool
	buf     []byte // gathered since hold
	spare   []byte // buf's memory, back from its write
	err     error  // a failed write of gathered bytes, returned by flush
	// deadline is the write deadline set during a drain, for the next
	// write of gathered bytes; zero when none was set since the last.
	deadline time.Time
	writes   int // writes to the network connection, for tests
}

// batchFlushBytes bounds what a drain gathers before writing it.
const batchFlushBytes = 64 << 10

// closeFlushWait bounds the write of what a drain had gathered when the
// connection closes in its middle.
const closeFlushWait = time.Second

// hold starts gathering writes.
func (b *batchConn) hold() {
	b.mu.Lock()
	b.holding = true
	b.mu.Unlock()
}

// flush writes what was gathered since hold, in one write, and stops
// gathering; it returns the error of any write since hold.
func (b *batchConn) flush() error {
	b.mu.Lock()
	b.holding = false
	out, dl, err := b.takeLocked()
	b.err = nil
	b.mu.Unlock()
	if werr := b.writeOut(out, dl); err == nil {
		err = werr
	}
	return err
}

// takeLocked takes the gathered bytes (and the error of an earlier write
// of them) for writeOut, which writes them without b.mu held: a Close
// beside a write that waits for a client that reads nothing must not wait
// for it, but interrupt it, as closing a net.Conn does. It returns the
// deadline set since the last write of gathered bytes, if any, for
// writeOut to set first.
func (b *batchConn) takeLocked() ([]byte, time.Time, error) {
	out, dl := b.buf, b.deadline
	b.buf, b.deadline = nil, time.Time{}
	if len(out) > 0 {
		b.writes++
	}
	return out, dl, b.err
}

func (b *batchConn) writeOut(out []byte, deadline time.Time) error {
	if len(out) == 0 {
		return nil
	}
	if !deadline.IsZero() {
		if err := b.Conn.SetWriteDeadline(deadline); err != nil {
			return err
		}
	}
	_, err := b.Conn.Write(out)
	if cap(out) <= batchFlushBytes { // a large drain's memory is not kept for an idle connection
		b.mu.Lock()
		b.spare = out[:0]
		b.mu.Unlock()
	}
	return err
}

// Write gathers p during a drain and writes it through otherwise.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if !b.holding {
		b.writes++
		b.mu.Unlock()
		return b.Conn.Write(p)
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	if b.buf == nil {
		b.buf, b.spare = b.spare, nil
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) < batchFlushBytes {
		b.mu.Unlock()
		return len(p), nil
	}
	out, dl, _ := b.takeLocked()
	b.mu.Unlock()
	if err := b.writeOut(out, dl); err != nil {
		b.mu.Lock()
		b.err = err
		b.mu.Unlock()
		return 0, err
	}
	return len(p), nil
}

// SetWriteDeadline keeps the deadline for the next write of gathered
// bytes during a drain, and sets it on the connection otherwise.
func (b *batchConn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	if b.holding {
		b.deadline = t
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	return b.Conn.SetWriteDeadline(t)
}

// Close writes what a drain had gathered (a close frame written in its
// middle, say), within closeFlushWait, then closes the connection.
func (b *batchConn) Close() error {
	b.mu.Lock()
	b.holding = false
	out, _, err := b.takeLocked()
	b.mu.Unlock()
	if len(out) > 0 && err == nil {
		_ = b.writeOut(out, time.Now().Add(closeFlushWait))
	}
	return b.Conn.Close()
}

// writeCount returns how many writes reached the network connection.
func (b *batchConn) writeCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.writes
}

// batchWriter is the ResponseWriter the upgrader hijacks: its Hijack
// hands gorilla the connection wrapped in a batchConn, kept in bc.
type batchWriter struct {
	http.ResponseWriter
	bc *batchConn
}

var errNoHijack = errors.New("ws: the response writer cannot be hijacked")

// Hijack hijacks the underlying connection and returns it wrapped.
func (w *batchWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errNoHijack
	}
	nc, brw, err := h.Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.bc = &batchConn{Conn: nc}
	return w.bc, brw, nil
}
