package node

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/pprof"
	"sync"
)

// tasks starts the node's goroutines, one per running role (or part of
// the gateway), and owns them: every goroutine of the node's long-running
// parts is started here, labelled with its task name (the pprof label
// "task", which the goroutines a task starts inherit: a CPU profile's
// -tagfocus/-tags splits chatd's time by role). The first to fail
// cancels the node; a task can be stopped and started again (a replay)
// while the others run.
type tasks struct {
	ctx  context.Context
	fail context.CancelCauseFunc
	log  *slog.Logger
	wg   sync.WaitGroup

	mu      sync.Mutex
	running map[string]*task
}

type task struct {
	run    func(context.Context) error
	cancel context.CancelFunc
	done   chan struct{}
}

func newTasks(ctx context.Context, fail context.CancelCauseFunc, log *slog.Logger) *tasks {
	return &tasks{ctx: ctx, fail: fail, log: log, running: map[string]*task{}}
}

// start runs fn as the task name until the node stops or the task is
// stopped.
func (r *tasks) start(name string, fn func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.startLocked(name, fn)
}

// ensure starts fn as the task name unless a task of that name runs.
func (r *tasks) ensure(name string, fn func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.running[name]; !ok {
		r.startLocked(name, fn)
	}
}

func (r *tasks) startLocked(name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(r.ctx)
	t := &task{run: fn, cancel: cancel, done: make(chan struct{})}
	r.running[name] = t
	r.wg.Go(func() {
		defer close(t.done)
		var err error
		pprof.Do(ctx, pprof.Labels("task", name), func(ctx context.Context) { err = fn(ctx) })
		if err != nil {
			r.log.Error("stopped", "task", name, "err", err)
			r.fail(fmt.Errorf("%s: %w", name, err))
		}
	})
}

// stopIf stops the task name if it runs.
func (r *tasks) stopIf(name string) { _, _ = r.stop(name) }

// stop stops a task and waits for it; it returns the task's function so
// that the caller can start it again.
func (r *tasks) stop(name string) (func(context.Context) error, error) {
	r.mu.Lock()
	t, ok := r.running[name]
	delete(r.running, name)
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%s does not run on this node", name)
	}
	t.cancel()
	<-t.done
	return t.run, nil
}

// wait waits for every task.
func (r *tasks) wait() { r.wg.Wait() }
