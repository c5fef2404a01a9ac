package cassandra

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gocql/gocql"
)

// TestRetryUnavailable: a schema statement that times out (as a CREATE
// TABLE did on a busy node in CI) is run again, within its bound; one
// that fails otherwise is not, and neither is one whose context ended.
func TestRetryUnavailable(t *testing.T) {
	wrong := errors.New("line 1:7 no viable alternative")
	for _, c := range []struct {
		name      string
		errs      []error // do's results, in turn; nil past the end
		attempts  int
		wantCalls int
		wantErr   error
	}{
		{"timeouts, then an answer", []error{gocql.ErrTimeoutNoResponse, gocql.ErrTimeoutNoResponse}, 6, 3, nil},
		{"timeouts past the bound", []error{gocql.ErrTimeoutNoResponse, gocql.ErrTimeoutNoResponse, gocql.ErrTimeoutNoResponse}, 2, 2, gocql.ErrTimeoutNoResponse},
		{"a wrong statement", []error{wrong}, 6, 1, wrong},
	} {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			err := retryUnavailable(context.Background(), c.attempts, time.Millisecond, func() error {
				calls++
				if calls <= len(c.errs) {
					return c.errs[calls-1]
				}
				return nil
			})
			if calls != c.wantCalls || !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
				t.Errorf("%d calls, %v; want %d, %v", calls, err, c.wantCalls, c.wantErr)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	err := retryUnavailable(ctx, 6, time.Millisecond, func() error { calls++; return gocql.ErrTimeoutNoResponse })
	if calls != 1 || !errors.Is(err, gocql.ErrTimeoutNoResponse) {
		t.Errorf("with its context ended: %d calls, %v; want 1 and the timeout", calls, err)
	}
}
