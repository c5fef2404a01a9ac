package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// The run's layout: users with devices with connections, and channels
// whose recipients are every connection of every member. It is built in
// full before any connection is dialled, so that reader goroutines only
// read it.
type (
	user struct {
		name    string
		id      string
		devices []*device
	}
	device struct {
		id    string
		token string
		conns []*wsConn
	}
	channel struct {
		index   int // in the run's channels
		id      string
		members []*user
		conns   []*wsConn // recipients; a connection's slot is its index here
	}
	wsConn struct {
		dev  *device
		ch   *channel // nil in an idle run
		slot int

		ws  *websocket.Conn // set once dialled, before its reader starts
		wmu sync.Mutex      // one writer at a time
	}
)

const handshakeTimeout = 15 * time.Second

// dialer opens WebSocket connections to one server from one source
// address.
type dialer struct {
	d   websocket.Dialer
	url string // without the token
}

func newDialer(server string, src net.IP) *dialer {
	nd := &net.Dialer{Timeout: handshakeTimeout}
	if src != nil {
		nd.LocalAddr = &net.TCPAddr{IP: src}
	}
	return &dialer{
		d: websocket.Dialer{
			NetDialContext:   nd.DialContext,
			HandshakeTimeout: handshakeTimeout,
			ReadBufferSize:   1024,
			WriteBufferSize:  1024,
		},
		url: "ws://" + server + "/v1/ws?token=",
	}
}

// dial connects with token and waits for the server's hello.
func (d *dialer) dial(ctx context.Context, token string) (*websocket.Conn, error) {
	c, resp, err := d.d.DialContext(ctx, d.url+url.QueryEscape(token), nil)
	if err != nil {
		if resp != nil {
			return nil, &dialError{status: resp.StatusCode, err: err}
		}
		return nil, &dialError{err: err}
	}
	_ = c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	var f serverFrame
	_, data, err := c.ReadMessage()
	if err == nil {
		err = json.Unmarshal(data, &f)
	}
	if err == nil && f.Type != "hello" {
		err = fmt.Errorf("first frame is %q, not hello", f.Type)
	}
	if err != nil {
		c.Close()
		return nil, &dialError{err: fmt.Errorf("waiting for hello: %w", err)}
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// dialError is a failed connection attempt; code and reason say what
// stopped it, in particular a limit of this machine.
type dialError struct {
	status int // HTTP status of a refused upgrade; 0 if none
	err    error
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// code is a short name to count the error by.
func (e *dialError) code() string {
	var ne net.Error
	switch {
	case errors.Is(e.err, syscall.EMFILE), errors.Is(e.err, syscall.ENFILE):
		return "dial_open_files"
	case errors.Is(e.err, syscall.EADDRNOTAVAIL), errors.Is(e.err, syscall.EADDRINUSE):
		return "dial_no_local_port"
	case errors.Is(e.err, syscall.ECONNREFUSED):
		return "dial_refused"
	case e.status != 0:
		return fmt.Sprintf("dial_http_%d", e.status)
	case errors.Is(e.err, syscall.ECONNRESET), errors.Is(e.err, io.EOF), errors.Is(e.err, io.ErrUnexpectedEOF):
		return "dial_reset"
	case errors.Is(e.err, os.ErrDeadlineExceeded), errors.As(e.err, &ne) && ne.Timeout():
		return "dial_timeout"
	}
	return "dial_other"
}

// reason explains, for the summary, what stopped the connections.
func (e *dialError) reason(soft uint64) string {
	switch e.code() {
	case "dial_open_files":
		return fmt.Sprintf("the load generator's open-files limit (RLIMIT_NOFILE %d; raise the hard limit, e.g. run as root or with ulimit -Hn)", soft)
	case "dial_no_local_port":
		return "no free local port on the source addresses (add --sources, or widen net.ipv4.ip_local_port_range)"
	case "dial_refused":
		return "the server refused connections (not listening, or its accept backlog is full)"
	case "dial_reset", "dial_timeout":
		return "the server stopped completing handshakes (its open-files limit? run chatd with a higher ulimit -n): " + e.err.Error()
	}
	return "connection failed: " + e.err.Error()
}

// serverFrame is what a reader needs of a server frame.
type serverFrame struct {
	Type        string `json:"type"`
	ClientMsgID string `json:"client_msg_id"`
	MessageID   string `json:"message_id"`
	Text        string `json:"text"`
	Code        string `json:"code"`
}

// sendFrame is a client's send.
type sendFrame struct {
	Type        string `json:"type"`
	ChannelID   string `json:"channel_id"`
	ClientMsgID string `json:"client_msg_id"`
	Text        string `json:"text"`
}

// errorCounts counts errors by code.
type errorCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *errorCounts) add(code string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]int64{}
	}
	e.m[code]++
}

func (e *errorCounts) snapshot() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int64, len(e.m))
	for k, v := range e.m {
		out[k] = v
	}
	return out
}

func (e *errorCounts) total() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n int64
	for _, v := range e.m {
		n += v
	}
	return n
}

// errCode is the code an error is counted by: the server's stable code
// for an answer, a short name otherwise.
func errCode(prefix string, err error) string {
	var ae *apiError
	var de *dialError
	switch {
	case errors.As(err, &ae):
		return prefix + ae.Code
	case errors.As(err, &de):
		return de.code()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return prefix + "timeout"
	}
	return prefix + "other"
}

// retryable says whether a setup request may succeed if tried again.
func retryable(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status >= http.StatusInternalServerError
	}
	return !errors.Is(err, context.Canceled)
}

// isClosed says whether a read failed because the connection was closed.
func isClosed(err error) bool {
	return websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) ||
		errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "use of closed network connection")
}
