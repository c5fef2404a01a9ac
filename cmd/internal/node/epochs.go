package node

import (
	"context"
	"fmt"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/ws"
	"github.com/evchat/evchat/projections/eventlog"
)

// writers returns the roles of this node that write an epoch of output:
// those Table rebuilds into a new epoch, and those rebuilt with them.
func (n *Node) writers(output string) []*Role {
	var out []*Role
	for _, r := range n.roles {
		if r.Output == output && (r.Replay == Rebuild || r.Replay == WithWriter) {
			out = append(out, r)
		}
	}
	return out
}

// rebuild starts writing output's next epoch beside the current one and
// returns the log's config in that epoch. Only "start" is a valid origin:
// an epoch holds the whole output. The next epoch is one above any that
// has topics: a rebuild cut short (by a crash, say) is abandoned, never
// continued by code that may have changed since.
func (n *Node) rebuild(ctx context.Context, output string) (eventlog.Config, error) {
	lc := n.current()
	inboxes, presences, err := eventlog.ExistingEpochs(ctx, lc)
	if err != nil {
		return lc, err
	}
	existing := inboxes
	if output == domain.OutputPresence {
		existing = presences
	}
	next := lc.WithEpoch(output, max(existing[len(existing)-1], eventlog.EpochOf(lc, output))+1)
	if err := eventlog.EnsureTopics(ctx, next); err != nil {
		return next, err
	}
	for _, r := range n.writers(output) {
		n.tasks.ensure(r.task(next), r.run(n, next, false))
	}
	return next, nil
}

// onEpoch switches this node to a new epoch of an output (from the epochs
// topic). Older or current epochs are ignored. The new tailer is made
// (which reads the log) before the node's lock is taken, and the old
// epoch's connections are closed after it is let go.
func (n *Node) onEpoch(ev domain.EpochStarted) {
	ctx, cancel := context.WithTimeout(n.tasks.ctx, time.Minute)
	defer cancel()
	lc := n.current().WithEpoch(ev.Output, ev.Epoch)
	if ev.Epoch <= eventlog.EpochOf(n.current(), ev.Output) {
		return
	}
	var tailer *ws.Tailer
	if ev.Output == domain.OutputInbox && n.gw != nil {
		t, err := ws.NewTailer(ctx, lc, n.st, n.hub, n.texts, n.decoded, n.log)
		if err != nil {
			n.tasks.fail(fmt.Errorf("epoch %s %d: %w", ev.Output, ev.Epoch, err))
			return
		}
		tailer = t
	}

	// The old epoch's connections are closed after the lock is let go:
	// a close can wait on a stuck writer.
	var closeOld func()
	defer func() {
		if closeOld != nil {
			closeOld()
		}
	}()
	n.mu.Lock()
	defer n.mu.Unlock()
	old := eventlog.EpochOf(n.logCfg, ev.Output)
	if ev.Epoch <= old {
		return // only the epochs watcher calls onEpoch: not reached
	}
	prev := n.logCfg
	lc = n.logCfg.WithEpoch(ev.Output, ev.Epoch)
	if tailer != nil {
		n.tasks.start(eventlog.Epoched(taskTailer, ev.Epoch), tailer.Run)
		closeOld = n.gw.SwitchEpoch(tailer)
		n.tasks.stopIf(eventlog.Epoched(taskTailer, old))
	}
	for _, r := range n.roles {
		if r.Output != ev.Output || r.run == nil {
			continue
		}
		if r.Replay == Rebuild || r.Replay == WithWriter {
			// A node that did not rebuild starts the writers now (the
			// rebuild made their topics). One whose body differs once
			// current (presence ticks only then) runs again as current.
			if r.restartWhenCurrent {
				n.tasks.stopIf(r.task(lc))
			}
			n.tasks.ensure(r.task(lc), r.run(n, lc, true))
		}
		if !r.OldEpochsRun {
			n.tasks.stopIf(r.task(prev))
		}
		if r.Replay != Rebuild && r.Replay != WithWriter {
			n.tasks.start(r.task(lc), r.run(n, lc, true))
		}
	}
	if ev.Output == domain.OutputPresence && n.presenceTail != nil {
		n.tasks.stopIf(taskPresenceTail)
		n.presenceTail.Switch(lc)
		n.tasks.start(taskPresenceTail, n.presenceTail.Run)
	}
	n.logCfg = lc
	n.log.Info("epoch started", "output", ev.Output, "epoch", ev.Epoch, "previous", old)
}
