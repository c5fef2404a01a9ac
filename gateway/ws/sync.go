package ws

import (
	"context"
	"fmt"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/inbox"
	"github.com/evchat/evchat/projections/projector"
)

// sync brings the device from position to the present, then leaves it on
// live delivery.
//
// Under the partition's lock, the connection starts buffering live entries
// and notes the tailer's point T. Every entry of the user below T is in the
// store once the inbox projection's position reaches T; every entry at or
// past T arrives in the buffer. So: deliver the store's entries in
// (position, T) as the projection stores them (see fromStore), then the
// buffered ones past the last delivered, and switch back to live delivery.
// The connection's side of this is c.h (see handoff).
//
// A position from an older epoch is carried over: the device had exactly
// the old epoch's entries up to its position, so it gets every entry of the
// current epoch, from the start, whose message is not among those (see
// carryOver). A position from the next epoch (another gateway switched
// first) waits for this gateway to switch too. Only a position the store
// cannot vouch for, or an epoch that does not come, gets resync.
//
// A sync has no deadline: it runs as long as it makes progress (see
// Config.SyncStall), at the pace the client reads and the inbox projection
// stores, while each store call has CommandTimeout.
//
// A sync that fails part way (the projection stopped moving, the store did
// not answer, the client stopped reading) must not go on to live delivery: the entries it did
// not deliver would be skipped for good once the device's position moved
// past them. The connection is closed after the error frame; the client
// reconnects and syncs again from the position it has.
func (s *Server) sync(ctx context.Context, c *conn, part int32, epoch int32, position int64) (err error) {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	g := c.gen
	defer func() {
		if err != nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.h.fail()
			c.sendLocked(errorFrame(err, ""))
			c.cutLocked("sync failed: " + err.Error())
		}
	}()
	if epoch > g.epoch && s.awaitEpoch(ctx, epoch) {
		// Another gateway switched first; this one has now too, and
		// SwitchEpoch closes c: the device reconnects into the epoch.
		c.cut(epochChanged(epoch))
		return nil
	}
	if epoch != g.epoch {
		ok := false
		var had func(domain.MessageID) bool
		if epoch >= 1 && epoch < g.epoch {
			if had, ok, err = s.carryOver(ctx, c, part, epoch, position); err != nil {
				return err
			}
		}
		if !ok {
			e := g.epoch
			c.send(ServerFrame{Type: TypeResync, Epoch: &e})
			return nil
		}
		c.mu.Lock()
		c.h.had = had // for every later sync of this connection too
		c.mu.Unlock()
		position = -1
	}
	// Rounds: a round that dropped live entries (too many arrived) goes
	// round again from where it got to; they are in the store by then.
	for {
		again, err := s.syncRound(ctx, c, part, position)
		if err != nil || !again {
			return err
		}
		c.mu.Lock()
		position = c.h.last
		c.mu.Unlock()
	}
}

// syncRound is one round of a sync; again is true when live entries were
// dropped meanwhile.
func (s *Server) syncRound(ctx context.Context, c *conn, part int32, position int64) (again bool, err error) {
	g := c.gen
	var t int64
	g.tailer.mark(part, func(next int64) {
		t = next
		c.mu.Lock()
		c.h.begin(position)
		c.mu.Unlock()
	})
	if err := s.fromStore(ctx, c, part, position, t); err != nil {
		return false, err
	}
	// Then what arrived live meanwhile, until nothing waits.
	for {
		c.mu.Lock()
		batch, step := c.h.next()
		switch step {
		case stepAgain:
			c.mu.Unlock()
			return true, nil
		case stepSynced:
			last, e := c.h.last, g.epoch
			c.sendLocked(ServerFrame{Type: TypeSynced, Epoch: &e, Position: &last})
			c.mu.Unlock()
			return false, nil
		}
		c.mu.Unlock()
		if err := s.deliver(ctx, c, batch, true); err != nil {
			return false, err
		}
	}
}

// storeCall bounds one store call of a sync: a store that hangs is an
// error, not progress.
func (s *Server) storeCall(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.CommandTimeout)
}

// fromStore delivers the user's entries in (after, t) from the store, as
// the inbox projection stores them: every entry of the partition below the
// projection's position is in the store. So a device gets its backlog
// while the projection still works through a burst, and the sync waits
// for the projection only as long as it moves: one whose position has not
// moved for SyncStall, while the sync waited for it, fails the sync. Each
// store call has CommandTimeout; a failed one is not progress.
func (s *Server) fromStore(ctx context.Context, c *conn, part int32, after, t int64) error {
	const page = 500
	name := eventlog.Epoched(inbox.Name, c.gen.epoch)
	var (
		stored  int64 = -1 // the projection has stored every entry below
		moved         = time.Now()
		waited  time.Duration
		lastErr error
	)
	defer func() {
		if waited > time.Second {
			s.cfg.Logger.Info("sync waited for the inbox projection", "user", c.user, "partition", part, "point", t, "waited", waited)
		}
	}()
	for after+1 < t {
		if stored < t {
			sctx, cancel := s.storeCall(ctx)
			pos, err := s.st.Positions(sctx, name)
			cancel()
			switch p := pos[part]; {
			case err != nil:
				lastErr = err
			case p > stored:
				stored, moved = p, time.Now()
			}
		}
		if upto := min(stored, t); after+1 < upto {
			sctx, cancel := s.storeCall(ctx)
			es, err := s.st.Inbox(sctx, c.user, c.gen.epoch, after, page)
			cancel()
			if err != nil {
				return err
			}
			// At most a send queue's bytes of text held at once.
			pend, next := storePage(es, upto, c.q.maxBytes, page)
			if err := s.resolve(ctx, c, pend); err != nil {
				return err
			}
			if err := s.deliver(ctx, c, pend, false); err != nil {
				return err
			}
			after = next
			moved = time.Now() // the time the client took is not the projection's
			continue
		}
		if time.Since(moved) >= s.cfg.SyncStall {
			return &domain.Error{Code: domain.CodeUnavailable,
				Msg: fmt.Sprintf("the %s projection is behind and has not moved for %s", name, s.cfg.SyncStall), Err: lastErr}
		}
		start := time.Now()
		select {
		case <-ctx.Done():
			return &domain.Error{Code: domain.CodeUnavailable, Msg: "the sync was cancelled", Err: ctx.Err()}
		case <-c.done:
			return errClosed
		case <-time.After(5 * time.Millisecond):
		}
		waited += time.Since(start)
	}
	return nil
}

// resolve fills in the texts of a sync's entries (one batch per page):
// from the cache of recent messages, else from history, waiting a bounded
// time for history to store a message that is not there yet. An error
// fails the sync, which the device retries from its position.
func (s *Server) resolve(ctx context.Context, c *conn, ps []pending) error {
	ms := make([]domain.InboxMessage, len(ps))
	for i, p := range ps {
		ms[i] = p.msg
	}
	if err := c.gen.tailer.texts.Resolve(ctx, ms); err != nil {
		return err
	}
	for i := range ps {
		ps[i].msg.Text = ms[i].Text
	}
	return nil
}

// catchUp syncs a connection that fell behind live delivery (see
// conn.offer) from the last position it was sent.
func (s *Server) catchUp(ctx context.Context, c *conn, part int32) {
	c.mu.Lock()
	position := c.h.last
	c.mu.Unlock()
	if err := s.sync(ctx, c, part, c.gen.epoch, position); err != nil && ctx.Err() == nil {
		s.cfg.Logger.Warn("catch-up", "user", c.user, "device", c.device, "err", err)
	}
}

// deliver hands a sync's entries to the connection in order, passing over
// (but moving the position past) those the device had already, a chunk at
// a time as the client reads them.
//
// A chunk is at most a quarter of the send queue's frames and bytes (or
// one frame), encoded before it waits for room, sharing each message's
// body with the other connections it goes to.
func (s *Server) deliver(ctx context.Context, c *conn, ps []pending, live bool) error {
	for len(ps) > 0 {
		var (
			fs    []outFrame
			bytes int
		)
		for len(fs) < len(ps) && len(fs) < max(1, c.q.maxFrames/4) {
			p := ps[len(fs)]
			f, err := c.bodies.messageFrame(c.gen.epoch, p.offset, p.msg)
			if err != nil {
				return err
			}
			if len(fs) > 0 && bytes+f.size() > c.q.maxBytes/4 {
				break
			}
			fs, bytes = append(fs, f), bytes+f.size()
		}
		if err := c.waitRoom(ctx, len(fs), bytes, s.cfg.SyncStall); err != nil {
			return err
		}
		c.mu.Lock()
		for i, p := range ps[:len(fs)] {
			if c.h.take(p.offset, p.msg.MessageID) {
				c.deliverLocked(p.offset, p.msg, &fs[i], live)
			}
		}
		c.mu.Unlock()
		ps = ps[len(fs):]
	}
	return nil
}

// carryOver prepares the sync of a position from an older inbox epoch. The
// device had every entry of that epoch up to its position; had reports
// whether a message is among them (nil: none is). It waits (a few seconds
// at most) for the old epoch's inbox projection to have stored the
// position, since the device may have had the entries live before they
// were stored; ok is false when it never does: the position is unknown.
//
// It reads those entries' message ids in pages (a range read each, far
// cheaper than a lookup per entry) into a sorted slice: 8 bytes per entry
// while the sync runs.
func (s *Server) carryOver(ctx context.Context, c *conn, part, epoch int32, position int64) (had func(domain.MessageID) bool, ok bool, err error) {
	if position < 0 {
		return nil, true, nil // it had nothing
	}
	wctx, cancel := context.WithTimeout(ctx, min(5*time.Second, s.cfg.CommandTimeout/2))
	defer cancel()
	if err := projector.WaitApplied(wctx, s.st, eventlog.Epoched(inbox.Name, epoch), part, position); err != nil {
		if ctx.Err() != nil {
			return nil, false, err
		}
		s.cfg.Logger.Info("position of an older epoch unknown: resync", "user", c.user, "epoch", epoch, "position", position)
		return nil, false, nil
	}
	var ids []domain.MessageID
	for after := int64(-1); after < position; {
		sctx, cancel := s.storeCall(ctx)
		es, err := s.st.Inbox(sctx, c.user, epoch, after, 1000)
		cancel()
		if err != nil {
			return nil, false, err
		}
		for _, e := range es {
			if e.Offset > position {
				break
			}
			ids = append(ids, e.Message.MessageID)
		}
		if len(es) < 1000 {
			break
		}
		after = es[len(es)-1].Offset
	}
	return carried(ids), true, nil
}
