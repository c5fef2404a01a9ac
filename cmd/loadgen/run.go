package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// password is every load user's password.
const password = "loadgen-password-0"

// runner is one load run. run owns it: every goroutine it starts (the
// progress line, setup workers, one reader per connection, the pacer's
// senders) is waited for before run returns.
type runner struct {
	cfg      Config
	api      *api
	out      io.Writer // progress lines
	start    time.Time
	users    []*user
	channels []*channel
	conns    []*wsConn
	tr       *tracker
	errs     errorCounts
	closing  atomic.Bool
	dropped  atomic.Int64 // connections the server closed
	readers  sync.WaitGroup
	phase    atomic.Pointer[func() string]

	serverCores, ownCores atomic.Uint64 // float64 bits: CPU cores used over the window
}

// run carries out one load run against cfg.Server and returns its result.
// A result with an error is as far as the run got.
func run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	r := &runner{cfg: cfg, api: newAPI(cfg.Server, cfg.Concurrency), out: progress, start: time.Now(), tr: newTracker()}
	defer r.api.close()
	res := newResult(cfg, r.start)
	res.Limits.NoFileSoft, res.Limits.NoFileHard = raiseNoFile(uint64(cfg.Connections()) + 512)
	if soft := res.Limits.NoFileSoft; soft != 0 && soft < uint64(cfg.Connections())+64 {
		fmt.Fprintf(progress, "loadgen: warning: open-files limit %d is below the %d connections asked for\n", soft, cfg.Connections())
	}

	pctx, pstop := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Go(func() { r.progressLoop(pctx) })
	defer func() { pstop(); pwg.Wait() }()
	defer r.closeAll() // before the progress line stops: deferred calls run last first

	err := r.run(ctx, res)
	res.Errors = r.errs.snapshot()
	return res, err
}

func (r *runner) run(ctx context.Context, res *Result) error {
	cfg := r.cfg
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := r.api.healthy(hctx)
	cancel()
	if err != nil {
		return fmt.Errorf("server %s not ready: %w", cfg.Server, err)
	}
	r.layout()
	res.Channels = len(r.channels)

	t := time.Now()
	if err := r.signUp(ctx); err != nil {
		return err
	}
	res.Setup.SignUp = seconds(time.Since(t))
	t = time.Now()
	if err := r.login(ctx); err != nil {
		return err
	}
	res.Setup.Login = seconds(time.Since(t))
	if !cfg.Idle {
		t = time.Now()
		if err := r.createChannels(ctx); err != nil {
			return err
		}
		res.Setup.Channels = seconds(time.Since(t))
	}

	res.Memory.WaitedForGC = cfg.Idle && cfg.GCWait > 0
	res.Memory.Before, res.Memory.BeforeAfterGC, err = r.memory(ctx, cfg.Idle, "before connecting")
	if err != nil {
		return err
	}
	t = time.Now()
	opened, stop := r.connect(ctx)
	res.Setup.Connect = seconds(time.Since(t))
	res.Connections = opened
	if stop != nil {
		res.StoppedBy = stop.reason(res.Limits.NoFileSoft)
		if !cfg.Idle || opened == 0 {
			return fmt.Errorf("connecting (%d of %d open): %w", opened, cfg.Connections(), stop)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	held := time.Now()
	r.setPhase(func() string { return fmt.Sprintf("settling: %d connections open", opened) })
	if err := sleep(ctx, cfg.Settle); err != nil {
		return err
	}
	res.Memory.After, res.Memory.AfterAfterGC, err = r.memory(ctx, cfg.Idle, fmt.Sprintf("at %d connections", opened))
	if err != nil {
		return err
	}
	res.Memory.perConnection(opened)

	if cfg.Idle {
		r.setPhase(r.idlePhase(ctx, opened))
		err := sleep(ctx, time.Until(held.Add(cfg.Duration)))
		res.HeldSeconds = seconds(time.Since(held))
		if d := r.dropped.Load(); d > 0 {
			return fmt.Errorf("the server closed %d of %d connections while they were held", d, opened)
		}
		return err
	}
	err = r.load(ctx)
	res.Load = r.loadResult()
	return err
}

// layout builds users, devices, connections and channels, named but not
// yet made.
func (r *runner) layout() {
	cfg := r.cfg
	r.users = make([]*user, cfg.Users)
	for i := range r.users {
		u := &user{name: fmt.Sprintf("%s-u%d", cfg.Prefix, i)}
		for d := range cfg.Devices {
			dev := &device{id: fmt.Sprintf("d%d", d)}
			for range cfg.ConnsPerDevice {
				c := &wsConn{dev: dev}
				dev.conns = append(dev.conns, c)
				r.conns = append(r.conns, c)
			}
			u.devices = append(u.devices, dev)
		}
		r.users[i] = u
	}
	if cfg.Idle {
		return
	}
	size := cfg.GroupSize
	if size == 0 {
		size = 2
	}
	for i := 0; i+size <= len(r.users); i += size {
		ch := &channel{index: len(r.channels), members: r.users[i : i+size]}
		for _, u := range ch.members {
			for _, d := range u.devices {
				for _, c := range d.conns {
					c.ch, c.slot = ch, len(ch.conns)
					ch.conns = append(ch.conns, c)
				}
			}
		}
		r.channels = append(r.channels, ch)
	}
}

func (r *runner) setPhase(f func() string) { r.phase.Store(&f) }

// counter returns a phase line "what: n/total".
func counter(what string, n *atomic.Int64, total int) func() string {
	return func() string { return fmt.Sprintf("%s: %d/%d", what, n.Load(), total) }
}

// memory reads the server's memory. With waitGC it first waits (at most
// cfg.GCWait) for the server's next garbage collection, then (at most
// rssSteadyWait more) for its RSS to stop falling as freed pages go back
// to the system, and says whether a GC was seen.
func (r *runner) memory(ctx context.Context, waitGC bool, when string) (memSample, bool, error) {
	m, err := r.api.metrics(ctx)
	if err != nil || !waitGC || r.cfg.GCWait == 0 {
		return m, false, err
	}
	start := time.Now()
	r.setPhase(func() string {
		return fmt.Sprintf("memory %s: waiting for the server's next GC and a steady RSS (%ds)", when, int(time.Since(start).Seconds()))
	})
	gcs, gc := m.GCs, false
	for !gc && time.Since(start) < r.cfg.GCWait {
		if err := sleep(ctx, time.Second); err != nil {
			return m, false, err
		}
		if m, err = r.api.metrics(ctx); err != nil {
			return m, false, err
		}
		gc = m.GCs > gcs
	}
	steady := 0
	for t := time.Now(); gc && steady < 3 && time.Since(t) < rssSteadyWait; {
		if err := sleep(ctx, time.Second); err != nil {
			return m, false, err
		}
		prev := m.RSS
		if m, err = r.api.metrics(ctx); err != nil {
			return m, false, err
		}
		if prev-m.RSS < rssSteadyStep {
			steady++
		} else {
			steady = 0
		}
	}
	return m, gc, nil
}

// The RSS counts as steady once it fell less than rssSteadyStep in each of
// three seconds running; it is awaited at most rssSteadyWait.
const (
	rssSteadyStep = 256 << 10
	rssSteadyWait = 60 * time.Second
)

// connect dials every connection and starts its reader. It stops at the
// first failure and returns it with the number open.
func (r *runner) connect(ctx context.Context) (int, *dialError) {
	srcs := r.cfg.sourceIPs()
	dialers := make([]*dialer, len(srcs))
	for i, ip := range srcs {
		dialers[i] = newDialer(r.cfg.Server, ip)
	}
	var open atomic.Int64
	r.setPhase(counter("connecting", &open, len(r.conns)))
	err := parallel(ctx, len(r.conns), r.cfg.ConnectConcurrency, func(ctx context.Context, i int) error {
		c := r.conns[i]
		ws, err := dialers[i%len(dialers)].dial(ctx, c.dev.token)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.errs.add(errCode("", err))
			return err
		}
		c.ws = ws
		open.Add(1)
		r.readers.Go(func() { r.read(c) })
		return nil
	})
	var de *dialError
	if errors.As(err, &de) {
		return int(open.Load()), de
	}
	return int(open.Load()), nil
}

// read runs a connection's reader: it matches acks, errors and messages
// to sends until the connection closes.
func (r *runner) read(c *wsConn) {
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			if !r.closing.Load() {
				r.dropped.Add(1)
				if isClosed(err) {
					r.errs.add("conn_closed_by_server")
				} else {
					r.errs.add("conn_read_error")
				}
			}
			return
		}
		now := time.Now()
		var f serverFrame
		if err := json.Unmarshal(data, &f); err != nil {
			r.errs.add("bad_frame")
			continue
		}
		switch f.Type {
		case "ack":
			if id, ok := parseClientMsgID(f.ClientMsgID); ok {
				r.tr.acked(id, now)
			} else {
				r.tr.unexpected()
			}
		case "message":
			id, ok := parseStamp(r.cfg.Prefix, f.Text)
			if !ok || c.ch == nil {
				r.tr.unexpected()
				continue
			}
			r.tr.delivered(id, c.ch.index, c.slot, now)
		case "error":
			r.errs.add(f.Code)
			if id, ok := parseClientMsgID(f.ClientMsgID); ok {
				r.tr.failed(id)
			}
		}
	}
}

// closeAll closes every connection and waits for the readers.
func (r *runner) closeAll() {
	r.closing.Store(true)
	for _, c := range r.conns {
		if c.ws != nil {
			_ = c.ws.Close()
		}
	}
	r.readers.Wait()
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func seconds(d time.Duration) float64 { return d.Seconds() }
