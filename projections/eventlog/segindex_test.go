package eventlog

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTornSegmentIndex: a kill -9 between kfake's write of a batch and
// the write of its index entry leaves a transactional batch with no entry.
// The test makes that state from a live broker's files (a copy taken while
// it runs is what a kill leaves), drops the open transaction's index
// entry, and starts a broker on it: the open transaction's record must
// stay invisible, the committed ones visible, and a later transaction of
// the same kind must commit and show normally after another such start.
func TestTornSegmentIndex(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const topic = "torn"
	dir := t.TempDir()
	e, err := StartEmbedded(dir, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	adm, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.CreateTopic(topic, 1, nil); err != nil {
		t.Fatal(err)
	}
	adm.Close()
	txn := func(addrs []string, id string, commit bool, values ...string) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic))
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if commit {
			if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
			cl.Close()
		}
		// Not committed: the client is left as a killed process
		// leaves it, open.
	}
	txn(e.Addrs(), "p", true, "committed-1")
	txn(e.Addrs(), "p", false, "open-1")

	crashed := copyDir(t, dir)
	tearLastIndexEntry(t, crashed)
	e2, err := StartEmbedded(crashed, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if e2.RepairedAtStart() != 1 {
		t.Errorf("repaired %d index files, want 1", e2.RepairedAtStart())
	}
	txn(e2.Addrs(), "p", true, "committed-2")
	txn(e2.Addrs(), "p", false, "open-2")
	if got, want := readCommitted(t, ctx, e2.Addrs(), topic), []string{"committed-1", "committed-2"}; !slices.Equal(got, want) {
		t.Fatalf("after one torn start: read %v, want %v", got, want)
	}

	again := copyDir(t, crashed)
	tearLastIndexEntry(t, again)
	e3, err := StartEmbedded(again, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer e3.Close()
	txn(e3.Addrs(), "p", true, "committed-3")
	if got, want := readCommitted(t, ctx, e3.Addrs(), topic), []string{"committed-1", "committed-2", "committed-3"}; !slices.Equal(got, want) {
		t.Fatalf("after two torn starts: read %v, want %v", got, want)
	}
	e2.Close()
}

// copyDir copies a data directory as it is on disk at this moment.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// tearLastIndexEntry drops the last entry of the test topic's index, as
// a kill between the batch write and the entry write leaves it.
func tearLastIndexEntry(t *testing.T, dir string) {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(dir, "partitions", "torn-0", "*.idx"))
	if len(matches) == 0 {
		t.Fatal("no index file for torn-0")
	}
	slices.Sort(matches)
	idx := matches[len(matches)-1]
	b, err := os.ReadFile(idx)
	if err != nil || len(b) < segIndexEntrySize {
		t.Fatalf("index %s: %d bytes, %v", idx, len(b), err)
	}
	if err := os.WriteFile(idx, b[:len(b)-segIndexEntrySize], 0o644); err != nil {
		t.Fatal(err)
	}
}

// readCommitted reads a topic to its end as a read-committed consumer.
func readCommitted(t *testing.T, ctx context.Context, addrs []string, topic string) []string {
	t.Helper()
	var got []string
	_, err := ReadToEnd(ctx, Config{Brokers: addrs, Prefix: "x", Partitions: 1}, topic, ReadRange{}, func(r *kgo.Record) {
		if !strings.HasPrefix(string(r.Value), "committed") && !strings.HasPrefix(string(r.Value), "open") {
			return
		}
		got = append(got, string(r.Value))
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
