package node

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/sends"
)

// TestTable holds the table's rows to what the node does with them.
func TestTable(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Table {
		if r.Name == "" || seen[r.Name] {
			t.Errorf("role %q: empty or twice", r.Name)
		}
		seen[r.Name] = true
		if r.Doc == "" {
			t.Errorf("%s: no Doc for the help text", r.Name)
		}
		if r.Name == GatewayRole {
			if r.run != nil || r.Replay != NotReplayed || r.Verify != nil {
				t.Errorf("%s: the node runs the gateway's parts itself; it is neither replayed nor verified", r.Name)
			}
			continue
		}
		if r.run == nil || r.Input == nil {
			t.Errorf("%s: no body or no input topic", r.Name)
		}
		if r.Output != "" && r.Output != domain.OutputInbox && r.Output != domain.OutputPresence {
			t.Errorf("%s: output %q has no epochs", r.Name, r.Output)
		}
		switch r.Replay {
		case Rebuild:
			if r.Output == "" {
				t.Errorf("%s: rebuilt into a new epoch of no output", r.Name)
			}
		case WithWriter:
			w := RoleNamed(r.RebuiltBy)
			if w == nil || w.Replay != Rebuild || w.Output != r.Output || r.Output == "" {
				t.Errorf("%s: rebuilt with %q, which is no rebuild of its output %q", r.Name, r.RebuiltBy, r.Output)
			}
		case Rewind:
		case NotReplayed:
			// The sends processor's answers were given: deciding again
			// from the log's start would append every message again.
			if r.Name != sends.Name {
				t.Errorf("%s: not replayed", r.Name)
			}
		default:
			t.Errorf("%s: replay %v unknown", r.Name, r.Replay)
		}
		if r.OldEpochsRun && r.Output == "" {
			t.Errorf("%s: old epochs of no output", r.Name)
		}
	}
	if RoleNamed(GatewayRole) == nil {
		t.Errorf("no gateway role")
	}
}

// TestRunWorkers: every worker runs with its own number and its own
// instance name; the first error cancels the others and is returned once
// all have returned.
func TestRunWorkers(t *testing.T) {
	var mu sync.Mutex
	names := map[string]bool{}
	boom := errors.New("boom")
	err := runWorkers(context.Background(), 4, func(ctx context.Context, i int) error {
		mu.Lock()
		names[workerInstance("node-1", i)] = true
		mu.Unlock()
		if i == 2 {
			return boom
		}
		<-ctx.Done() // returns only when cancelled
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("runWorkers returned %v, want the failing worker's error", err)
	}
	want := map[string]bool{"node-1": true, "node-1-w1": true, "node-1-w2": true, "node-1-w3": true}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("workers ran as %v, want %v", names, want)
	}
	if err := runWorkers(context.Background(), 3, func(context.Context, int) error { return nil }); err != nil {
		t.Fatalf("workers that all end cleanly: %v", err)
	}
}
