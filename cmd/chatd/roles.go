package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// roles starts the node's long-running parts and owns their goroutines.
// The first role to fail cancels the node; a role can be stopped and
// started again (a projection replay) while the others run.
type roles struct {
	ctx  context.Context
	fail context.CancelCauseFunc
	log  *slog.Logger
	wg   sync.WaitGroup

	mu      sync.Mutex
	running map[string]*role
}

type role struct {
	run    func(context.Context) error
	cancel context.CancelFunc
	done   chan struct{}
}

func newRoles(ctx context.Context, fail context.CancelCauseFunc, log *slog.Logger) *roles {
	return &roles{ctx: ctx, fail: fail, log: log, running: map[string]*role{}}
}

// start runs fn as the role name until the node stops or the role is
// stopped.
func (r *roles) start(name string, fn func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.startLocked(name, fn)
}

// ensure starts fn as the role name unless a role of that name runs.
func (r *roles) ensure(name string, fn func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.running[name]; !ok {
		r.startLocked(name, fn)
	}
}

func (r *roles) startLocked(name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(r.ctx)
	ro := &role{run: fn, cancel: cancel, done: make(chan struct{})}
	r.running[name] = ro
	r.wg.Go(func() {
		defer close(ro.done)
		if err := fn(ctx); err != nil {
			r.log.Error("stopped", "role", name, "err", err)
			r.fail(fmt.Errorf("%s: %w", name, err))
		}
	})
}

// stopIf stops the role name if it runs.
func (r *roles) stopIf(name string) { _, _ = r.stop(name) }

// stop stops a role and waits for it; it returns the role's function so
// that the caller can start it again.
func (r *roles) stop(name string) (func(context.Context) error, error) {
	r.mu.Lock()
	ro, ok := r.running[name]
	delete(r.running, name)
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("role %s is not running", name)
	}
	ro.cancel()
	<-ro.done
	return ro.run, nil
}

// wait waits for every role.
func (r *roles) wait() { r.wg.Wait() }
