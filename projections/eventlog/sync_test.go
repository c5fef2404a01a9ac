package eventlog

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSyncChanged: a pass fsyncs what changed since the last one and
// leaves the rest alone, so a background pass over a large log stays
// cheap.
func TestSyncChanged(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old")
	if err := os.WriteFile(old, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, long, long); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dir, long, long); err != nil {
		t.Fatal(err)
	}
	if _, n := syncChanged(dir, time.Time{}); n != 2 {
		t.Fatalf("first pass fsynced %d paths, want 2 (the folder and its file)", n)
	}
	since := time.Now().Add(-time.Minute)
	if _, n := syncChanged(dir, since); n != 0 {
		t.Fatalf("a pass with nothing changed fsynced %d paths", n)
	}
	if err := os.WriteFile(filepath.Join(dir, "new"), []byte("y"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, n := syncChanged(dir, since); n != 2 {
		t.Fatalf("after a new file, the pass fsynced %d paths, want 2 (the folder and the new file)", n)
	}
}
