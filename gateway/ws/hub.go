package ws

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/evchat/evchat/domain"
)

const hubShards = 64

// Hub finds the open connections of a user. It is sharded behind RWMutexes
// so that registration and delivery for different users rarely contend.
type Hub struct {
	seed   maphash.Seed
	count  atomic.Int64
	shards [hubShards]hubShard
}

type hubShard struct {
	mu    sync.RWMutex
	conns map[domain.UserID]map[*conn]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	h := &Hub{seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].conns = map[domain.UserID]map[*conn]struct{}{}
	}
	return h
}

func (h *Hub) shard(u domain.UserID) *hubShard {
	return &h.shards[maphash.String(h.seed, string(u))%hubShards]
}

func (h *Hub) add(c *conn) {
	s := h.shard(c.user)
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.conns[c.user]
	if m == nil {
		m = map[*conn]struct{}{}
		s.conns[c.user] = m
	}
	m[c] = struct{}{}
	h.count.Add(1)
}

func (h *Hub) remove(c *conn) {
	s := h.shard(c.user)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c.user][c]; ok {
		h.count.Add(-1)
	}
	delete(s.conns[c.user], c)
	if len(s.conns[c.user]) == 0 {
		delete(s.conns, c.user)
	}
}

// conns returns the user's connections at this moment.
func (h *Hub) conns(u domain.UserID) []*conn {
	s := h.shard(u)
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*conn, 0, len(s.conns[u]))
	for c := range s.conns[u] {
		out = append(out, c)
	}
	return out
}

// Count returns the number of open connections.
func (h *Hub) Count() int { return int(h.count.Load()) }
