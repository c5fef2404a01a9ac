package node

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// connLimiter is the HTTP listener's bound on descriptors. It holds at
// most maxPlain plain HTTP connections (a connection stops being plain
// when it is upgraded to a WebSocket: the WebSocket server bounds those)
// and at most maxTotal connections in all. A connection past either bound
// is answered 503 busy with Retry-After and closed at once, so a flood of
// idle connections neither hangs in the backlog nor takes the descriptors
// that the log, the store and the admin address need.
//
// It also remembers when Accept last failed (too many open files): /readyz
// fails for a while after, and http.Server retries Accept with a backoff.
type connLimiter struct {
	net.Listener
	maxPlain, maxTotal int64

	plain, total atomic.Int64
	rejected     atomic.Int64
	rejecting    chan struct{} // bounds the goroutines that answer rejected connections
	lastFail     atomic.Int64  // unix nanos of the last failed Accept
}

func newConnLimiter(ln net.Listener, maxPlain, maxTotal int) *connLimiter {
	return &connLimiter{Listener: ln, maxPlain: int64(maxPlain), maxTotal: int64(maxTotal), rejecting: make(chan struct{}, 64)}
}

// busyResponse is what a connection past the bound reads.
var busyResponse = func() string {
	body := `{"error":{"code":"busy","message":"this server holds as many connections as it may; retry later"}}`
	return fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"+
		"Connection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.lastFail.Store(time.Now().UnixNano())
			}
			return nil, err
		}
		if l.plain.Load() >= l.maxPlain || l.total.Load() >= l.maxTotal {
			l.reject(c)
			continue
		}
		l.plain.Add(1)
		l.total.Add(1)
		return &limitedConn{Conn: c, l: l}, nil
	}
}

// reject answers c with 503 and closes it, in a goroutine (at most 64 at
// once; past that c is closed without an answer) that reads what the
// client sent for up to a second, so the client reads the answer rather
// than a reset.
func (l *connLimiter) reject(c net.Conn) {
	l.rejected.Add(1)
	select {
	case l.rejecting <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.rejecting }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte(busyResponse)); err != nil {
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
}

// failedWithin reports whether Accept failed within d of now.
func (l *connLimiter) failedWithin(d time.Duration, now time.Time) bool {
	at := l.lastFail.Load()
	return at != 0 && now.Sub(time.Unix(0, at)) < d
}

// connState is the http.Server's ConnState hook: an upgraded connection
// is no longer plain.
func (l *connLimiter) connState(c net.Conn, s http.ConnState) {
	if s != http.StateHijacked {
		return
	}
	if lc, ok := c.(*limitedConn); ok {
		lc.unplain()
	}
}

// limitedConn gives its place back when it closes.
type limitedConn struct {
	net.Conn
	l          *connLimiter
	hijackOnce sync.Once
	closeOnce  sync.Once
}

func (c *limitedConn) unplain() { c.hijackOnce.Do(func() { c.l.plain.Add(-1) }) }

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.unplain()
		c.l.total.Add(-1)
	})
	return err
}

// connectionCaps divides the descriptors of an open-files limit (0:
// unknown) less the reserve among connections: plain HTTP ones at most
// maxPlain and at most half, WebSockets the rest; total is their sum.
func connectionCaps(openFiles, reserve, maxPlain int) (plain, ws, total int, err error) {
	if openFiles == 0 {
		return maxPlain, 0, 1 << 30, nil // ws 0: no cap
	}
	total = openFiles - reserve
	if total < 2 {
		return 0, 0, 0, fmt.Errorf("%w: the open-files limit %d leaves no descriptors for connections beside the reserve of %d (raise ulimit -n or lower --fd-reserve)",
			ErrConfig, openFiles, reserve)
	}
	plain = min(maxPlain, total/2)
	return plain, total - plain, total, nil
}
