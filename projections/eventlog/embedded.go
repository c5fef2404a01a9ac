package eventlog

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Embedded is the in-process Kafka-protocol broker of the single-process
// mode: franz-go's kfake, persisting to a directory. Every batch is written
// to its file before it is acknowledged, so an acknowledged append survives
// kill -9; with fsync it also survives a power loss, at a cost in
// throughput (a real cluster gets the same from replication instead).
//
// Transactions survive kill -9 too. A transaction open when the process
// died (its producer died with it: every client of this broker lives in
// its process) is ended before StartEmbedded returns, with a marker
// written to each partition it holds open, as a real coordinator does for
// a dead producer: aborted when it had not reached its commit, committed
// when the kill came while its commit markers were being written (see
// endOpenTxns). Its records are then visible to read-committed readers,
// or never, alike at this start and at every later one, and the last
// stable offset moves on. kfake alone aborts such a transaction in memory
// only, and a later load can then take its records into the same
// producer's next committed transaction.
//
// The clients of its own process connect through Dial: in memory, with
// the same Kafka protocol and the same broker as over TCP, but without a
// socket's system calls for every request and response, which the
// transactional stages' commits waited on (deploy/README.md, session 20).
// Other processes connect over TCP to Addrs.
type Embedded struct {
	c         *kfake.Cluster
	dir       string
	aborted   int
	committed int
	repaired  int
	ln        *retryListener

	stopSync chan struct{} // closed by Close; nil until SyncEvery
	synced   sync.WaitGroup
}

// StartEmbedded starts the broker on 127.0.0.1:port (0 picks a free port)
// with its data in dir ("" keeps it in memory, for tests), fsyncing every
// batch when fsync is set. With a dir, it ends (aborts, or commits if it
// was being committed) every transaction the previous process left open
// before it returns; no client of this
// process may use the broker before then. Before it loads dir it rewrites
// the segment index entries a kill -9 left missing or out of step with
// their batches (see repairSegmentIndexes).
func StartEmbedded(dir string, port int, fsync bool) (*Embedded, error) {
	var rl *retryListener
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			ln, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			rl = newRetryListener(ln)
			return rl, nil
		}),
		kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": strconv.Itoa(15 * 60 * 1000)}),
	}
	repaired := 0
	if dir != "" {
		var err error
		if repaired, err = repairSegmentIndexes(dir); err != nil {
			return nil, fmt.Errorf("eventlog: embedded broker: %w", err)
		}
		opts = append(opts, kfake.DataDir(dir))
		if fsync {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("eventlog: embedded broker: %w", err)
	}
	e := &Embedded{c: c, dir: dir, repaired: repaired, ln: rl}
	if dir == "" {
		return e, nil
	}
	committed, err := e.endOpenTxns()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("eventlog: embedded broker: %w", err)
	}
	if len(committed) > 0 {
		// kfake took the transactions it found open as aborted when
		// it loaded the directory, and saves that in each partition's
		// snapshot when it closes: a COMMIT marker written now does not
		// change its mind. Close, drop the snapshots of the partitions
		// rolled forward, and load again: those partitions are then
		// read from their segments, markers included, as after a kill.
		c.Close()
		var errs []error
		committed.Each(func(t string, p int32) {
			e.committed++
			snap := filepath.Join(dir, "partitions", fmt.Sprintf("%s-%d", url.PathEscape(t), p), "snapshot.json")
			if err := os.Remove(snap); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		})
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("eventlog: embedded broker: after rolling transactions forward: %w", err)
		}
		if e.c, err = kfake.NewCluster(opts...); err != nil {
			return nil, fmt.Errorf("eventlog: embedded broker: reopen after rolling transactions forward: %w", err)
		}
		e.ln = rl // the reopened broker's listener
	}
	return e, nil
}

// endOpenTxns ends the transactions a killed process left open; it
// counts those it aborts and returns the partitions where it committed.
func (e *Embedded) endOpenTxns() (kadm.TopicsSet, error) {
	// The scan reads the whole log once; bounded so a broken broker
	// cannot hang the start.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs()...), kgo.Dialer(e.Dial), kgo.ClientID("evchat-embedded-recovery"))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	aborted, committed, err := endOpenTxns(ctx, cl)
	e.aborted = aborted
	return committed, err
}

// Dial opens a connection of this process's clients (eventlog.Config.Dial):
// to the embedded broker's address, one in memory; to any other, TCP.
func (e *Embedded) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if slices.Contains(e.Addrs(), addr) && e.ln != nil {
		return e.ln.dial(ctx)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Connections returns how many connections the broker has accepted, in
// memory (Dial) and over TCP.
func (e *Embedded) Connections() (memory, tcp int64) {
	if e.ln == nil {
		return 0, 0
	}
	return e.ln.memConns.Load(), e.ln.tcpConns.Load()
}

// Addrs returns the broker's host:port addresses.
func (e *Embedded) Addrs() []string { return e.c.ListenAddrs() }

// AbortedAtStart returns how many (partition, producer) transactions left
// open by the previous process the start aborted.
func (e *Embedded) AbortedAtStart() int { return e.aborted }

// CommittedAtStart returns how many (partition, producer) transactions
// left open by the previous process in the middle of their commit the
// start committed.
func (e *Embedded) CommittedAtStart() int { return e.committed }

// RepairedAtStart returns how many segment index files the start rewrote.
func (e *Embedded) RepairedAtStart() int { return e.repaired }

// Healthy returns an error while the broker cannot take connections: its
// listener failed to accept one (too many open files) within the last 5 s.
// The listener keeps trying, so the broker recovers by itself when
// descriptors come back.
func (e *Embedded) Healthy() error {
	if e.ln != nil && e.ln.failedWithin(5*time.Second, time.Now()) {
		return fmt.Errorf("eventlog: the embedded broker cannot accept connections: %v", e.ln.lastErr())
	}
	return nil
}

// Close stops the broker, flushing its data.
func (e *Embedded) Close() {
	if e.stopSync != nil {
		close(e.stopSync)
		e.synced.Wait()
	}
	e.c.Close()
}

// SyncEvery fsyncs, every interval, the broker's files written since the
// last pass, off the broker's own loop: without fsync per batch, what a
// power loss can take is then bounded by about interval (the class of
// Cassandra's periodic commit log, and of a Kafka broker's page cache
// with replication), while kill -9 takes nothing (every batch is written
// to its file before it is acknowledged). kfake's per-batch fsync
// (StartEmbedded's fsync) runs inside its one request loop, where each
// fsync holds up every client: 5,500 appends/s instead of 28,000 in
// BenchmarkEmbeddedAppend. Call it at most once, before Close; it does
// nothing for a broker in memory.
func (e *Embedded) SyncEvery(interval time.Duration) {
	if e.dir == "" || interval <= 0 || e.stopSync != nil {
		return
	}
	e.stopSync = make(chan struct{})
	e.synced.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		since := time.Time{}
		for {
			select {
			case <-e.stopSync:
				return
			case <-t.C:
				since, _ = syncChanged(e.dir, since)
			}
		}
	})
}

// syncChanged fsyncs the files and folders under dir modified at or after
// since (all of them when since is zero), and returns when the pass began,
// a little early so that a write during the pass is taken by the next, and
// how many it fsynced. A file that went away meanwhile (a segment rolled, a
// temporary renamed) is skipped.
func syncChanged(dir string, since time.Time) (time.Time, int) {
	n := 0
	began := time.Now().Add(-time.Second)
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.ModTime().Before(since) {
			return nil
		}
		if f, err := os.Open(path); err == nil {
			if f.Sync() == nil {
				n++
			}
			f.Close()
		}
		return nil
	})
	return began, n
}

// retryListener is the embedded broker's listener. It takes connections
// from two places: the TCP socket (other processes, tools) and dial (the
// clients of this process, through Embedded.Dial).
//
// It keeps kfake's accept loop alive: kfake's loop returns on the first
// error of Accept, so one "too many open files" left the broker deaf until
// the process restarted (every new client connection, and every
// reconnection of an idle one, then hung). The TCP accepts retry such
// errors with a backoff, as net/http does, and remember the last one; only
// Close ends them.
type retryListener struct {
	net.Listener
	closed    chan struct{}
	closeOnce sync.Once
	tcp       chan net.Conn // accepted by pump
	mem       chan net.Conn // the broker's ends of dial's pipes
	pumped    sync.WaitGroup
	memConns  atomic.Int64 // connections accepted from dial
	tcpConns  atomic.Int64 // and from TCP

	mu       sync.Mutex
	failedAt time.Time
	err      error
}

func newRetryListener(ln net.Listener) *retryListener {
	l := &retryListener{Listener: ln, closed: make(chan struct{}), tcp: make(chan net.Conn), mem: make(chan net.Conn)}
	l.pumped.Go(l.pump)
	return l
}

// Accept returns the next connection, from either place.
func (l *retryListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.mem:
		l.memConns.Add(1)
		return c, nil
	case c := <-l.tcp:
		l.tcpConns.Add(1)
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// pump accepts TCP connections until Close.
func (l *retryListener) pump() {
	for {
		c, err := l.acceptTCP()
		if err != nil {
			return
		}
		select {
		case l.tcp <- c:
		case <-l.closed:
			c.Close()
			return
		}
	}
}

func (l *retryListener) acceptTCP() (net.Conn, error) {
	delay := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		select {
		case <-l.closed:
			return nil, err
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		l.mu.Lock()
		l.failedAt, l.err = time.Now(), err
		l.mu.Unlock()
		select {
		case <-l.closed:
			return nil, err
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// dial connects to the broker in memory (pipe): no socket, no system call
// per request or response.
func (l *retryListener) dial(ctx context.Context) (net.Conn, error) {
	broker, client := pipe(l.Addr())
	select {
	case l.mem <- broker:
		return client, nil
	case <-l.closed:
		err := net.ErrClosed
		broker.Close()
		client.Close()
		return nil, err
	case <-ctx.Done():
		broker.Close()
		client.Close()
		return nil, ctx.Err()
	}
}

func (l *retryListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	err := l.Listener.Close()
	l.pumped.Wait()
	return err
}

func (l *retryListener) failedWithin(d time.Duration, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.failedAt.IsZero() && now.Sub(l.failedAt) < d
}

func (l *retryListener) lastErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
