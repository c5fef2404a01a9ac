package store

import "sync"

// Lookups is how many store lookups one caller runs at once. A lookup is
// a round trip (a Cassandra query), so a batch's lookups go in parallel
// rather than in turn.
const Lookups = 16

// EachParallel calls fn(i) for every i in [0, n), at most Lookups at a
// time, waits for all, and returns the error of the lowest i that failed.
func EachParallel(n int, fn func(i int) error) error {
	if n == 1 {
		return fn(0)
	}
	errs := make([]error, n)
	sem := make(chan struct{}, Lookups)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(i)
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
