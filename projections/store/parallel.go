package store

import (
	"sync"
	"sync/atomic"
)

// Lookups is how many store lookups one caller runs at once. A lookup is
// a round trip (a Cassandra query), so a batch's lookups go in parallel
// rather than in turn.
const Lookups = 16

// EachParallel calls fn(i) for every i in [0, n), at most Lookups at a
// time, waits for all, and returns the error of the lowest i that failed.
func EachParallel(n int, fn func(i int) error) error { return EachParallelN(n, Lookups, fn) }

// EachParallelN is EachParallel with at most width calls at a time.
func EachParallelN(n, width int, fn func(i int) error) error {
	if n == 1 {
		return fn(0)
	}
	// min(n, Lookups) workers take the next i in turn: a goroutine per i
	// grew a fresh stack for every lookup (Pebble's read path is deep),
	// 8% of the CPU at 2,000 msg/s.
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, max(width, 1)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				errs[i] = fn(i)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
