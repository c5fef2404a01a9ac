package ws

import (
	"context"
	"fmt"
	"time"
)

// generation is an inbox epoch and the tailer that reads it.
type generation struct {
	epoch  int32
	tailer *Tailer
}

// SwitchEpoch moves the gateway to the inbox epoch that t reads. New
// connections are in the new epoch at once; every connection of an older
// one is closed (1013, with the reason) by closeOld, which the caller
// runs outside its own locks (a close can wait on a stuck writer), and its
// device reconnects with the position it has: the sync carries the
// position over (see sync).
func (s *Server) SwitchEpoch(t *Tailer) (closeOld func()) {
	g := &generation{epoch: t.Epoch(), tailer: t}
	s.gen.Store(g)
	var old []*conn
	for i := range s.hub.shards {
		sh := &s.hub.shards[i]
		sh.mu.RLock()
		for _, m := range sh.conns {
			for c := range m {
				if c.gen != g {
					old = append(old, c)
				}
			}
		}
		sh.mu.RUnlock()
	}
	return func() {
		for _, c := range old {
			c.cut(epochChanged(g.epoch))
		}
		s.cfg.Logger.Info("inbox epoch switched", "epoch", g.epoch, "connections_closed", len(old))
	}
}

func epochChanged(e int32) string {
	return fmt.Sprintf("inbox epoch %d started: reconnect with your position", e)
}

// awaitEpoch waits, a few seconds at most, for this gateway to reach an
// epoch that a device already has from another gateway: during a switch,
// gateways move to the new epoch moments apart.
func (s *Server) awaitEpoch(ctx context.Context, epoch int32) bool {
	deadline := time.Now().Add(min(5*time.Second, s.cfg.CommandTimeout/2))
	for s.gen.Load().epoch < epoch {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}
