package eventlog

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails Accept with EMFILE a number of times, then hands out
// one end of a pipe per call.
type flakyListener struct {
	net.Listener
	fails  int
	closed chan struct{}
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

func (l *flakyListener) Close() error { close(l.closed); return nil }

// TestRetryListenerOutlivesEMFILE: kfake's accept loop returns on the
// first error; through retryListener it gets a connection after three
// "too many open files", and Healthy-style reporting says it failed.
func TestRetryListenerOutlivesEMFILE(t *testing.T) {
	fl := &flakyListener{fails: 3, closed: make(chan struct{})}
	l := newRetryListener(fl)
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("accept after EMFILE: %v", err)
	}
	c.Close()
	if !l.failedWithin(time.Minute, time.Now()) || !errors.Is(l.lastErr(), syscall.EMFILE) {
		t.Fatalf("failure not reported: %v", l.lastErr())
	}
	if l.failedWithin(time.Minute, time.Now().Add(2*time.Minute)) {
		t.Fatal("an old failure still reported")
	}
	l.Close()
	if _, err := l.Accept(); err == nil {
		t.Fatal("accept after close")
	}
}
