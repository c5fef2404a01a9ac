package projector

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/storetest"
)

// gate is a Holder that holds every record it is handed, and decides (in
// offset order) those below open whenever it is handed records or none.
type gate struct {
	mu      sync.Mutex
	open    int64
	held    map[int32][]int64
	decided map[int32][]int64
	handed  map[int32][]int64
	resets  int
	failing int // fail this many calls without records
}

func newGate() *gate {
	return &gate{held: map[int32][]int64{}, decided: map[int32][]int64{}, handed: map[int32][]int64{}}
}

func (g *gate) Handle(_ context.Context, p int32, recs []*kgo.Record, _ *store.Batch) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(recs) == 0 {
		if g.failing > 0 {
			g.failing--
			return errors.New("store down")
		}
	}
	for _, r := range recs {
		g.held[p] = append(g.held[p], r.Offset)
		g.handed[p] = append(g.handed[p], r.Offset)
	}
	for len(g.held[p]) > 0 && g.held[p][0] < g.open {
		g.decided[p] = append(g.decided[p], g.held[p][0])
		g.held[p] = g.held[p][1:]
	}
	return nil
}

func (g *gate) Reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.resets++
	clear(g.held)
}

func (g *gate) Held(p int32) (int64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if q := g.held[p]; len(q) > 0 {
		return q[0], true
	}
	return 0, false
}

// Due is always now while anything is held: the runner's holdTick paces
// the calls.
func (g *gate) Due() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, q := range g.held {
		if len(q) > 0 {
			return time.Now()
		}
	}
	return time.Time{}
}

// set decides, from now on, the records below open.
func (g *gate) set(open int64) {
	g.mu.Lock()
	g.open = open
	g.mu.Unlock()
}

func (g *gate) snapshot() (handed, decided map[int32][]int64, resets int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cp := func(m map[int32][]int64) map[int32][]int64 {
		out := map[int32][]int64{}
		for p, offs := range m {
			out[p] = slices.Clone(offs)
		}
		return out
	}
	return cp(g.handed), cp(g.decided), g.resets
}

// TestRunHolder: the runner never writes a position past a record the
// handler holds; it hands a holder no records once Due has come, so that
// held records get decided without new ones arriving; a restart hands
// again what was held; and after a failed call the holder is reset and
// what it held is fetched again, not skipped.
func TestRunHolder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t, ctx)
	st := storetest.OpenPebble(t)
	f.produce(t, ctx,
		msg("c0", 1, "a"), msg("c1", 2, "a"), msg("c0", 3, "a"),
		msg("c1", 4, "a"), msg("c0", 5, "a"), msg("c1", 6, "a"),
	)
	waitHanded := func(g *gate, p int32, want []int64) {
		t.Helper()
		for {
			handed, _, _ := g.snapshot()
			if reflect.DeepEqual(handed[p], want) {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("partition %d: handed %v, want %v", p, handed[p], want)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	// Everything held: no position written passes the oldest record held.
	first := newGate()
	rs := &recordingStore{Store: st}
	_, stop := f.run(t, ctx, rs, first)
	waitHanded(first, 0, []int64{0, 1, 2})
	waitHanded(first, 1, []int64{0, 1, 2})
	waitPositions(t, ctx, st, map[int32]int64{0: 0, 1: 0})
	for _, pos := range rs.written() {
		for p, off := range pos {
			if off != 0 {
				t.Fatalf("position %d written for partition %d while its record 0 was held", off, p)
			}
		}
	}

	// Two records of each partition decided with no new record coming:
	// only the calls without records can do it.
	first.set(2)
	waitPositions(t, ctx, st, map[int32]int64{0: 2, 1: 2})
	stop()

	// A restart: what was held is handed again, from the position.
	second := newGate()
	_, stop = f.run(t, ctx, st, second)
	waitHanded(second, 0, []int64{2})
	waitHanded(second, 1, []int64{2})
	// The next call without records fails: the holder is reset (it
	// drops what it held) and the runner fetches it again.
	second.mu.Lock()
	second.failing, second.open = 1, 3
	second.mu.Unlock()
	waitPositions(t, ctx, st, f.ends())
	stop()
	handed, decided, resets := second.snapshot()
	if resets == 0 {
		t.Fatal("no reset after the failed call")
	}
	for _, p := range []int32{0, 1} {
		if want := []int64{2}; !reflect.DeepEqual(decided[p], want) {
			t.Errorf("partition %d: decided %v after the restart, want %v", p, decided[p], want)
		}
		if len(handed[p]) < 2 || handed[p][0] != 2 || handed[p][len(handed[p])-1] != 2 {
			t.Errorf("partition %d: handed %v after the restart, want offset 2 again after the failure", p, handed[p])
		}
	}
}

// recordingStore records the positions of every batch applied.
type recordingStore struct {
	Store
	mu  sync.Mutex
	pos []map[int32]int64
}

func (s *recordingStore) Apply(ctx context.Context, b store.Batch) error {
	s.mu.Lock()
	s.pos = append(s.pos, maps.Clone(b.Positions))
	s.mu.Unlock()
	return s.Store.Apply(ctx, b)
}

func (s *recordingStore) written() []map[int32]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pos)
}
