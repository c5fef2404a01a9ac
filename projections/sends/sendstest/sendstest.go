// Package sendstest holds a store for tests of the sends processor: the
// processor's part of the store (decisions and progress) in memory, able
// to lose its latest writes as a one-node Cassandra does on kill -9.
package sendstest

import (
	"context"
	"maps"
	"sync"

	"github.com/evchat/evchat/projections/store"
)

// Store is what the sends processor writes and reads, in memory. It keeps
// the positions of every projection that writes to it (the processor
// writes its own), and counts the writes of each decision.
type Store struct {
	mu        sync.Mutex
	decisions map[store.SendKey]store.SendDecision
	positions map[string]map[int32]int64
	saves     map[store.SendKey]int
	durable   int // Applys not marked replayable
}

// New returns an empty Store.
func New() *Store {
	return &Store{decisions: map[store.SendKey]store.SendDecision{}, positions: map[string]map[int32]int64{}, saves: map[store.SendKey]int{}}
}

// SendDecisions is store.Store's.
func (s *Store) SendDecisions(_ context.Context, keys []store.SendKey) (map[store.SendKey]store.SendDecision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[store.SendKey]store.SendDecision{}
	for _, k := range keys {
		if d, ok := s.decisions[k]; ok {
			out[k] = d
		}
	}
	return out, nil
}

// Apply writes the batch's decisions and positions; anything else in it is
// ignored.
func (s *Store) Apply(_ context.Context, b store.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !b.Replayable {
		s.durable++
	}
	for _, d := range b.Decisions {
		s.decisions[d.SendKey] = d
		s.saves[d.SendKey]++
	}
	if len(b.Positions) > 0 {
		if s.positions[b.Projection] == nil {
			s.positions[b.Projection] = map[int32]int64{}
		}
		maps.Copy(s.positions[b.Projection], b.Positions)
	}
	return nil
}

// Durable returns how many Applys were not marked replayable
// (store.Batch.Replayable): the embedded store fsyncs each of those.
func (s *Store) Durable() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable
}

// Positions is store.Store's.
func (s *Store) Positions(_ context.Context, projection string) (map[int32]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.positions[projection]), nil
}

// Decision returns the decision of k, or the zero decision.
func (s *Store) Decision(k store.SendKey) store.SendDecision {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.decisions[k]
}

// Saves returns how many times the decision of k was written.
func (s *Store) Saves(k store.SendKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saves[k]
}

// Snapshot is what a Store held at one moment.
type Snapshot struct {
	decisions map[store.SendKey]store.SendDecision
	positions map[string]map[int32]int64
}

// Snapshot copies what the store holds now.
func (s *Store) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Snapshot{maps.Clone(s.decisions), clonePositions(s.positions)}
}

// Lose makes the store lose every write it acknowledged since snap was
// taken, as a one-node Cassandra with the periodic commit log loses the
// writes after its last sync marker on kill -9.
func (s *Store) Lose(snap Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.decisions, s.positions = maps.Clone(snap.decisions), clonePositions(snap.positions)
}

// clonePositions copies every projection's positions.
func clonePositions(pos map[string]map[int32]int64) map[string]map[int32]int64 {
	out := make(map[string]map[int32]int64, len(pos))
	for p, m := range pos {
		out[p] = maps.Clone(m)
	}
	return out
}
