package eventlog

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// pipeLimit is how many bytes one direction of a pipe holds before its
// writer waits for the reader, as a socket's buffer does.
const pipeLimit = 4 << 20

// pipe returns the two ends of an in-memory, full-duplex connection, for
// the embedded broker and the clients of its process. Unlike net.Pipe, a
// write returns as soon as its bytes are buffered (up to pipeLimit), as on
// a socket, so neither kfake's writers nor franz-go's wait on a reader
// that is busy; BenchmarkEmbeddedAppend does not tell the two apart in
// speed. Both ends report addr as their addresses.
func pipe(addr net.Addr) (net.Conn, net.Conn) {
	ab, ba := newPipeBuf(), newPipeBuf()
	a := &pipeConn{rd: ba, wr: ab, addr: addr, closed: make(chan struct{}), readDL: newDeadline(), writeDL: newDeadline()}
	b := &pipeConn{rd: ab, wr: ba, addr: addr, closed: make(chan struct{}), readDL: newDeadline(), writeDL: newDeadline()}
	return a, b
}

// pipeBuf is one direction of a pipe.
type pipeBuf struct {
	mu    sync.Mutex
	data  []byte
	ready chan struct{} // a token when data was added
	space chan struct{} // a token when data was taken
	eof   chan struct{} // closed when the writer's end closes
	gone  chan struct{} // closed when the reader's end closes
}

func newPipeBuf() *pipeBuf {
	return &pipeBuf{ready: make(chan struct{}, 1), space: make(chan struct{}, 1), eof: make(chan struct{}), gone: make(chan struct{})}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// pipeConn is one end of a pipe.
type pipeConn struct {
	rd, wr    *pipeBuf
	addr      net.Addr
	closed    chan struct{}
	closeOnce sync.Once
	readDL    *deadline
	writeDL   *deadline
}

func (c *pipeConn) Read(b []byte) (int, error) {
	for {
		select {
		case <-c.closed:
			return 0, c.opErr("read", net.ErrClosed)
		case <-c.readDL.wait():
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		default:
		}
		c.rd.mu.Lock()
		if len(c.rd.data) > 0 {
			n := copy(b, c.rd.data)
			c.rd.data = c.rd.data[n:]
			if len(c.rd.data) == 0 {
				c.rd.data = nil
			} else {
				signal(c.rd.ready) // for another reader
			}
			c.rd.mu.Unlock()
			signal(c.rd.space)
			return n, nil
		}
		c.rd.mu.Unlock()
		if len(b) == 0 {
			return 0, nil
		}
		select {
		case <-c.rd.ready:
		case <-c.rd.eof:
			c.rd.mu.Lock()
			empty := len(c.rd.data) == 0
			c.rd.mu.Unlock()
			if empty {
				return 0, io.EOF
			}
		case <-c.closed:
		case <-c.readDL.wait():
		}
	}
}

func (c *pipeConn) Write(b []byte) (int, error) {
	for {
		select {
		case <-c.closed:
			return 0, c.opErr("write", net.ErrClosed)
		case <-c.writeDL.wait():
			return 0, c.opErr("write", os.ErrDeadlineExceeded)
		case <-c.wr.gone:
			return 0, c.opErr("write", io.ErrClosedPipe)
		default:
		}
		c.wr.mu.Lock()
		if len(c.wr.data) < pipeLimit {
			c.wr.data = append(c.wr.data, b...)
			c.wr.mu.Unlock()
			signal(c.wr.ready)
			return len(b), nil
		}
		c.wr.mu.Unlock()
		select {
		case <-c.wr.space:
		case <-c.wr.gone:
		case <-c.closed:
		case <-c.writeDL.wait():
		}
	}
}

func (c *pipeConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: c.addr.Network(), Source: c.addr, Addr: c.addr, Err: err}
}

// Close ends both directions: the peer reads what was written before,
// then io.EOF; its writes fail.
func (c *pipeConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		close(c.wr.eof)
		close(c.rd.gone)
	})
	return nil
}

func (c *pipeConn) LocalAddr() net.Addr  { return c.addr }
func (c *pipeConn) RemoteAddr() net.Addr { return c.addr }

func (c *pipeConn) SetDeadline(t time.Time) error {
	c.readDL.set(t)
	c.writeDL.set(t)
	return nil
}

func (c *pipeConn) SetReadDeadline(t time.Time) error  { c.readDL.set(t); return nil }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { c.writeDL.set(t); return nil }

// deadline is a channel closed when a time passes, as net.Pipe's
// pipeDeadline (Go's net/pipe.go).
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes
}

func newDeadline() *deadline { return &deadline{cancel: make(chan struct{})} }

// set sets the deadline; the zero time clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for its close
	}
	d.timer = nil
	passed := isClosed(d.cancel)
	if t.IsZero() {
		if passed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if passed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !passed {
		close(d.cancel)
	}
}

// wait returns a channel closed when the deadline passes.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
