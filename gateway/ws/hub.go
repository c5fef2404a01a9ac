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
	// open counts the connections of each user by device, from reserve
	// to release: the caps, and the devices that get a heartbeat.
	open map[domain.UserID]map[domain.DeviceID]int
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	h := &Hub{seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].conns = map[domain.UserID]map[*conn]struct{}{}
		h.shards[i].open = map[domain.UserID]map[domain.DeviceID]int{}
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
func (h *Hub) conns(u domain.UserID) []*conn { return h.appendConns(nil, u) }

// appendConns appends the user's connections at this moment to dst: the
// tailer reuses one slice for every entry it offers.
func (h *Hub) appendConns(dst []*conn, u domain.UserID) []*conn {
	s := h.shard(u)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for c := range s.conns[u] {
		dst = append(dst, c)
	}
	return dst
}

// Count returns the number of open connections.
func (h *Hub) Count() int { return int(h.count.Load()) }

// reserve counts a new connection of the user's device, unless the user
// already has perUser open or the device perDevice (0: no cap); first is
// true when the device had none. Every reserve that succeeds is matched by
// one release.
func (h *Hub) reserve(u domain.UserID, d domain.DeviceID, perUser, perDevice int) (first bool, err error) {
	s := h.shard(u)
	s.mu.Lock()
	defer s.mu.Unlock()
	devs := s.open[u]
	total := 0
	for _, n := range devs {
		total += n
	}
	if perUser > 0 && total >= perUser {
		return false, domain.Errorf(domain.CodeTooManyConnections, "this user has %d connections open, the most it may", total)
	}
	if perDevice > 0 && devs[d] >= perDevice {
		return false, domain.Errorf(domain.CodeTooManyConnections, "this device has %d connections open, the most it may", devs[d])
	}
	if devs == nil {
		devs = map[domain.DeviceID]int{}
		s.open[u] = devs
	}
	devs[d]++
	return devs[d] == 1, nil
}

// release undoes one reserve.
func (h *Hub) release(u domain.UserID, d domain.DeviceID) {
	s := h.shard(u)
	s.mu.Lock()
	defer s.mu.Unlock()
	devs := s.open[u]
	if devs[d]--; devs[d] <= 0 {
		delete(devs, d)
	}
	if len(devs) == 0 {
		delete(s.open, u)
	}
}

// device is a user's device.
type device struct {
	user   domain.UserID
	device domain.DeviceID
}

// devices returns every device with a connection open, once each.
func (h *Hub) devices() []device {
	var out []device
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for u, devs := range s.open {
			for d := range devs {
				out = append(out, device{u, d})
			}
		}
		s.mu.RUnlock()
	}
	return out
}
