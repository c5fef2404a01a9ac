package storetest

import (
	"testing"

	"github.com/evchat/evchat/projections/store/pebblestore"
)

// OpenPebble opens an embedded store in a temporary directory for a test,
// and closes it (failing the test on error) when the test ends: the real
// store that the projections' unit tests run on.
func OpenPebble(tb testing.TB) *pebblestore.Store {
	tb.Helper()
	s, err := pebblestore.Open(tb.TempDir(), pebblestore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}
