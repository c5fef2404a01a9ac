package eventlog

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRollForwardTornCommit: a kill in the middle of a commit leaves the
// transaction's COMMIT marker in some of its partitions and none in the
// others (kfake writes them one partition at a time). The next start must
// commit it in the others too, not abort it there: a transaction is
// visible in every partition or in none. A second transaction, open
// without any COMMIT marker, is aborted, and the outcome holds at the
// start after that.
func TestRollForwardTornCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	e, err := StartEmbedded(dir, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	const topic = "torn"
	adm := kadm.NewClient(mustClient(t, kgo.SeedBrokers(e.Addrs()...)))
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	produce := func(txid string, parts []int32, value string) *kgo.Client {
		cl := mustClient(t, kgo.SeedBrokers(e.Addrs()...), kgo.TransactionalID(txid), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte(value)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		return cl
	}
	// One committed transaction first, so the producer's COMMIT markers
	// of an earlier epoch are in the log too.
	cl := produce("torn", []int32{0, 1, 2}, "before")
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	var pid int64
	var epoch int16
	for _, p := range []int32{0, 1, 2} {
		r := &kgo.Record{Topic: topic, Partition: p, Value: []byte("torn")}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		pid, epoch = r.ProducerID, r.ProducerEpoch
	}
	// The commit got as far as partition 1's marker.
	var ts kadm.TopicsSet
	ts.Add(topic, 1)
	resps, err := adm.WriteTxnMarkers(ctx, kadm.TxnMarkers{ProducerID: pid, ProducerEpoch: epoch, Commit: true, Topics: ts})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resps {
		for _, tr := range r.Topics {
			for _, pr := range tr.Partitions {
				if pr.Err != nil {
					t.Fatal(pr.Err)
				}
			}
		}
	}
	// Another producer's transaction never got to its commit.
	produce("open", []int32{0, 2}, "open")
	closeAsKilled(t, e, dir)

	for start := range 2 {
		if e, err = StartEmbedded(dir, 0, false); err != nil {
			t.Fatal(err)
		}
		wantCommitted, wantAborted := 2, 2 // (partition, producer) pairs
		if start > 0 {
			wantCommitted, wantAborted = 0, 0
		}
		if e.CommittedAtStart() != wantCommitted || e.AbortedAtStart() != wantAborted {
			t.Errorf("start %d: committed %d and aborted %d open transactions, want %d and %d",
				start, e.CommittedAtStart(), e.AbortedAtStart(), wantCommitted, wantAborted)
		}
		got := readCommittedParts(ctx, t, e.Addrs(), topic)
		for p := range int32(3) {
			if want := []string{"before", "torn"}; !slices.Equal(got[p], want) {
				t.Errorf("start %d: partition %d reads %q committed, want %q", start, p, got[p], want)
			}
		}
		e.Close()
	}
}

func mustClient(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// readCommittedParts reads topic to its end, read-committed, and returns
// each partition's values.
func readCommittedParts(ctx context.Context, t *testing.T, addrs []string, topic string) map[int32][]string {
	t.Helper()
	got := map[int32][]string{}
	cfg := Config{Brokers: addrs, Prefix: "x", Partitions: 1}
	if _, err := ReadToEnd(ctx, cfg, topic, ReadRange{}, func(r *kgo.Record) {
		got[r.Partition] = append(got[r.Partition], string(r.Value))
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// closeAsKilled closes e and removes what only a clean close writes (each
// partition's snapshot, the groups' and transactions' session state), so
// the next start finds the directory as a kill -9 leaves it: segments and
// append-only logs, the transactions in flight open.
func closeAsKilled(t *testing.T, e *Embedded, dir string) {
	t.Helper()
	e.Close()
	snaps, err := filepath.Glob(filepath.Join(dir, "partitions", "*", "snapshot.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(snaps, filepath.Join(dir, "session_state.json")) {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
}
