package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/ws"
	"github.com/evchat/evchat/projections/cursors"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/fanout"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/inbox"
	"github.com/evchat/evchat/projections/presence"
	"github.com/evchat/evchat/projections/projector"
	"github.com/evchat/evchat/projections/push"
	"github.com/evchat/evchat/projections/store"
)

// proc (this process, one node of a deployment) holds what a node's roles are built from, and the epochs they run
// in. Roles of an output's epoch are named eventlog.Epoched(role, epoch):
//
//   - inbox epoch E: fanout.eE (writes chat.inbox.eE), inbox.eE (stores
//     it), push.eE and tailer.eE (read it). The inbox projections of older
//     epochs keep running (idle once their topic no longer grows), so that
//     the store holds every entry of theirs: a device that comes back with
//     a position of an older epoch is carried over.
//   - presence epoch P: presence.eP (writes chat.presence.eP); the
//     presence tail reads it.
//
// A rebuild (chatd replay fanout|presence) starts the next epoch's writer
// beside the current one; when it has caught up, epoch.started goes on the
// epochs topic, and every node (this one too) switches in onEpoch.
type proc struct {
	cfg          config
	log          *slog.Logger
	st           store.Store
	instance     string
	hub          *ws.Hub
	gw           *ws.Server
	presenceTail *ws.Presence
	sender       push.Sender
	roles        *roles

	mu     sync.Mutex
	logCfg eventlog.Config // with the current epochs
}

// current returns the log's config with the current epochs.
func (n *proc) current() eventlog.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logCfg
}

// startRoles starts every projection and reader of the current epochs,
// the inbox projections of the older inbox epochs (olderInboxes), and the
// watcher of the epochs topic.
func (n *proc) startRoles(tailer *ws.Tailer, olderInboxes []int32) {
	lc := n.current()
	e := lc.Epoch()
	for _, name := range []string{history.Name, cursors.Name} {
		n.roles.start(name, n.projectorRun(name, name, lc))
	}
	n.roles.start(eventlog.Epoched(fanout.Name, e), n.fanoutRun(lc))
	n.roles.start(eventlog.Epoched(inbox.Name, e), n.inboxRun(lc))
	for _, o := range olderInboxes {
		if o < e {
			n.roles.start(eventlog.Epoched(inbox.Name, o), n.inboxRun(lc.WithEpoch(domain.OutputInbox, o)))
		}
	}
	n.roles.start(eventlog.Epoched(push.Name, e), n.pushRun(lc))
	n.roles.start(eventlog.Epoched("tailer", e), tailer.Run)
	n.roles.start(eventlog.Epoched(presence.Name, lc.PresenceEpoch), n.presenceRun(lc, true))
	n.roles.start("presence-tail", n.presenceTail.Run)
	n.roles.start("heartbeats", n.gw.RunHeartbeats)
	n.roles.start("epochs", func(ctx context.Context) error { return eventlog.WatchEpochs(ctx, lc, n.onEpoch) })
}

// projectorRun runs a store-positioned projection: positions under name,
// its handler by the projection's kind.
func (n *proc) projectorRun(kind, name string, lc eventlog.Config) func(context.Context) error {
	return func(ctx context.Context) error {
		var h projector.Handler
		topic := lc.Topics().Inbox
		switch kind {
		case history.Name:
			h, topic = history.New(n.st, n.cfg.Limits, n.log), lc.Topics().Channels
		case cursors.Name:
			h, topic = cursors.New(n.st, n.log), lc.Topics().Sessions
		case inbox.Name:
			h = inbox.New(n.st, lc.Epoch(), n.log)
		case push.Name:
			h = push.New(push.Config{Epoch: lc.Epoch(), Delay: n.cfg.PushDelay, MaxAge: n.cfg.PushMaxAge, Logger: n.log},
				n.st, n.presenceTail, n.sender)
		default:
			return fmt.Errorf("no projection %s", kind)
		}
		return projector.Run(ctx, projector.Config{Name: name, Topic: topic, Log: lc, Instance: n.instance, Logger: n.log}, n.st, h)
	}
}

func (n *proc) inboxRun(lc eventlog.Config) func(context.Context) error {
	return n.projectorRun(inbox.Name, eventlog.Epoched(inbox.Name, lc.Epoch()), lc)
}

func (n *proc) pushRun(lc eventlog.Config) func(context.Context) error {
	return n.projectorRun(push.Name, eventlog.Epoched(push.Name, lc.Epoch()), lc)
}

func (n *proc) fanoutRun(lc eventlog.Config) func(context.Context) error {
	return func(ctx context.Context) error {
		fan, err := fanout.New(fanout.Config{Log: lc, Limits: n.cfg.Limits, InstanceID: n.instance, Logger: n.log})
		if err != nil {
			return err
		}
		return fan.Run(ctx)
	}
}

// presenceRun runs the presence projection of lc's presence epoch; a
// rebuild runs without ticks (the current epoch's projection puts time on
// the log; the rebuild reads it).
func (n *proc) presenceRun(lc eventlog.Config, tick bool) func(context.Context) error {
	return func(ctx context.Context) error {
		t := min(time.Second, n.cfg.PresenceWindow/4)
		if !tick {
			t = -1
		}
		pres, err := presence.New(presence.Config{Log: lc, Window: n.cfg.PresenceWindow, Tick: t, Instance: n.instance, Logger: n.log})
		if err != nil {
			return err
		}
		return pres.Run(ctx)
	}
}

// rebuild starts writing output's next epoch beside the current one and
// returns the log's config in that epoch. Only "start" is a valid origin:
// an epoch holds the whole output. The next epoch is one above any that
// has topics: a rebuild cut short (by a crash, say) is abandoned, never
// continued by code that may have changed since.
func (n *proc) rebuild(ctx context.Context, output string) (eventlog.Config, error) {
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
	n.startWriters(next, output)
	return next, nil
}

// startWriters starts the roles that write lc's epoch of output, unless
// they run: the fan-out and the inbox projection, or presence (without
// ticks: only a current epoch's projection puts time on the log).
func (n *proc) startWriters(lc eventlog.Config, output string) {
	switch output {
	case domain.OutputInbox:
		n.roles.ensure(eventlog.Epoched(fanout.Name, lc.Epoch()), n.fanoutRun(lc))
		n.roles.ensure(eventlog.Epoched(inbox.Name, lc.Epoch()), n.inboxRun(lc))
	case domain.OutputPresence:
		n.roles.ensure(eventlog.Epoched(presence.Name, lc.PresenceEpoch), n.presenceRun(lc, false))
	}
}

// onEpoch switches this node to a new epoch of an output (from the epochs
// topic). Older or current epochs are ignored.
func (n *proc) onEpoch(ev domain.EpochStarted) {
	n.mu.Lock()
	defer n.mu.Unlock()
	old := eventlog.EpochOf(n.logCfg, ev.Output)
	if ev.Epoch <= old {
		return
	}
	lc := n.logCfg.WithEpoch(ev.Output, ev.Epoch)
	ctx, cancel := context.WithTimeout(n.roles.ctx, time.Minute)
	defer cancel()
	switch ev.Output {
	case domain.OutputInbox:
		e := ev.Epoch
		n.startWriters(lc, ev.Output) // the rebuild made their topics
		t, err := ws.NewTailer(ctx, lc, n.st, n.hub, n.log)
		if err != nil {
			n.roles.fail(fmt.Errorf("epoch %s %d: %w", ev.Output, ev.Epoch, err))
			return
		}
		n.roles.start(eventlog.Epoched("tailer", e), t.Run)
		n.gw.SwitchEpoch(t)
		n.roles.stopIf(eventlog.Epoched("tailer", old))
		n.roles.stopIf(eventlog.Epoched(fanout.Name, old))
		n.roles.stopIf(eventlog.Epoched(push.Name, old))
		n.roles.start(eventlog.Epoched(push.Name, e), n.pushRun(lc))
	case domain.OutputPresence:
		// The writer runs without ticks: run it with them now, and stop
		// the old epoch's.
		n.roles.stopIf(eventlog.Epoched(presence.Name, ev.Epoch))
		n.roles.start(eventlog.Epoched(presence.Name, ev.Epoch), n.presenceRun(lc, true))
		n.roles.stopIf(eventlog.Epoched(presence.Name, old))
		n.roles.stopIf("presence-tail")
		n.presenceTail.Switch(lc)
		n.roles.start("presence-tail", n.presenceTail.Run)
	}
	n.logCfg = lc
	n.log.Info("epoch started", "output", ev.Output, "epoch", ev.Epoch, "previous", old)
}
