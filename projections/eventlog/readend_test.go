package eventlog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/evchat/evchat/domain"
)

// newCluster starts kfake with topic (of parts partitions, compacted if
// compact) and returns it with a config that reaches it.
func newCluster(t *testing.T, topic string, parts int32, compact bool) (*kfake.Cluster, Config) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var configs map[string]string
	if compact {
		configs = map[string]string{"cleanup.policy": "compact"}
	}
	if err := c.CreateTopic(topic, parts, configs); err != nil {
		t.Fatal(err)
	}
	return c, Config{Brokers: c.ListenAddrs(), Prefix: "t", Partitions: parts}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// producer returns a client that writes to the partition each record
// names, in transactions when txid is not empty.
func producer(t *testing.T, cfg Config, txid string) *kgo.Client {
	t.Helper()
	opts := []kgo.Opt{kgo.RecordPartitioner(kgo.ManualPartitioner())}
	if txid != "" {
		opts = append(opts, kgo.TransactionalID(txid))
	}
	cl, err := kgo.NewClient(cfg.ClientOpts(opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func rec(topic string, p int32, key, value string) *kgo.Record {
	return &kgo.Record{Topic: topic, Partition: p, Key: []byte(key), Value: []byte(value)}
}

// txn writes recs in one transaction and commits or aborts it.
func txn(t *testing.T, ctx context.Context, cl *kgo.Client, commit bool, recs ...*kgo.Record) {
	t.Helper()
	if err := writeTxn(ctx, cl, commit, recs...); err != nil {
		t.Fatal(err)
	}
}

func writeTxn(ctx context.Context, cl *kgo.Client, commit bool, recs ...*kgo.Record) error {
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return err
	}
	return cl.EndTransaction(ctx, kgo.TransactionEndTry(commit))
}

// collect reads with ReadToEnd and returns the values per partition as
// "offset=value", in the order fn saw them.
func collect(t *testing.T, ctx context.Context, cfg Config, topic string, rr ReadRange) (map[int32][]string, map[int32]int64) {
	t.Helper()
	got := map[int32][]string{}
	reached, err := ReadToEnd(ctx, cfg, topic, rr, func(r *kgo.Record) {
		got[r.Partition] = append(got[r.Partition], fmt.Sprintf("%d=%s", r.Offset, r.Value))
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, reached
}

func TestReadToEndRanges(t *testing.T) {
	const topic = "plain"
	_, cfg := newCluster(t, topic, 3, false)
	ctx := testCtx(t)
	cl := producer(t, cfg, "")
	for i := range 5 {
		for _, p := range []int32{0, 1} { // partition 2 stays empty
			if err := cl.ProduceSync(ctx, rec(topic, p, "k", fmt.Sprint(p, ".", i))).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	all := func(p int32, from, until int) []string {
		var out []string
		for i := from; i < until; i++ {
			out = append(out, fmt.Sprintf("%d=%d.%d", i, p, i))
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		rr      ReadRange
		want    map[int32][]string
		reached map[int32]int64
	}{
		{"everything", ReadRange{},
			map[int32][]string{0: all(0, 0, 5), 1: all(1, 0, 5)}, map[int32]int64{0: 5, 1: 5, 2: 0}},
		{"some partitions", ReadRange{Partitions: []int32{1, 2}},
			map[int32][]string{1: all(1, 0, 5)}, map[int32]int64{1: 5, 2: 0}},
		{"from offsets", ReadRange{From: map[int32]int64{0: 3, 1: 5}},
			map[int32][]string{0: all(0, 3, 5)}, map[int32]int64{0: 5, 1: 5, 2: 0}},
		{"until offsets", ReadRange{Until: map[int32]int64{0: 2, 1: 0, 2: 7}},
			map[int32][]string{0: all(0, 0, 2)}, map[int32]int64{0: 2, 1: 0, 2: 0}},
		{"from past until", ReadRange{Partitions: []int32{0}, From: map[int32]int64{0: 4}, Until: map[int32]int64{0: 2}},
			map[int32][]string{}, map[int32]int64{0: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reached := collect(t, ctx, cfg, topic, tc.rr)
			if !maps.EqualFunc(got, tc.want, slices.Equal) {
				t.Errorf("read %v; want %v", got, tc.want)
			}
			if !maps.Equal(reached, tc.reached) {
				t.Errorf("reached %v; want %v", reached, tc.reached)
			}
		})
	}
}

// TestReadToEndTransactions: a partition written in transactions ends in
// a marker, after aborted records: the last record read sits several
// offsets below the end, and the read still ends.
//
// Writing the partition is tried again on a fresh cluster when the
// embedded broker (kfake) refuses the produce after an abort with
// OUT_OF_ORDER_SEQUENCE_NUMBER: CI saw it once, under the whole suite's
// load, and it did not come back in 700 runs alone or under CPU load. The
// read, which this test is about, is held to the same offsets either way.
func TestReadToEndTransactions(t *testing.T) {
	const topic = "tx"
	ctx := testCtx(t)
	var cfg Config
	for attempt := 1; ; attempt++ {
		_, cfg = newCluster(t, topic, 1, false)
		cl := producer(t, cfg, "tx-writer")
		err := errors.Join(
			writeTxn(ctx, cl, true, rec(topic, 0, "a", "1"), rec(topic, 0, "b", "1")),  // 0, 1, marker 2
			writeTxn(ctx, cl, false, rec(topic, 0, "a", "x"), rec(topic, 0, "b", "x")), // 3, 4 aborted, marker 5
			writeTxn(ctx, cl, true, rec(topic, 0, "c", "1")),                           // 6, marker 7
			writeTxn(ctx, cl, false, rec(topic, 0, "c", "x"), rec(topic, 0, "d", "x")), // 8, 9 aborted, marker 10
		)
		if err == nil {
			break
		}
		if attempt == 3 || !errors.Is(err, kerr.OutOfOrderSequenceNumber) {
			t.Fatalf("writing the transactions, attempt %d: %v", attempt, err)
		}
		t.Logf("writing the transactions, attempt %d: %v; again on a fresh cluster", attempt, err)
	}
	got, reached := collect(t, ctx, cfg, topic, ReadRange{})
	if want := []string{"0=1", "1=1", "6=1"}; !slices.Equal(got[0], want) {
		t.Errorf("read %v; want %v", got[0], want)
	}
	if reached[0] != 11 {
		t.Errorf("reached %d; want 11", reached[0])
	}
}

// TestReadToEndWaitsForAbortMarker: a record aborted just below the end,
// whose abort marker was written above it because another transaction was
// open when the end was taken. The reader learns it is done only from what
// comes after, once the open transaction ends.
func TestReadToEndWaitsForAbortMarker(t *testing.T) {
	const topic = "open"
	c, cfg := newCluster(t, topic, 1, false)
	ctx := testCtx(t)
	a, b := producer(t, cfg, "tx-a"), producer(t, cfg, "tx-b")
	if err := b.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := b.ProduceSync(ctx, rec(topic, 0, "b", "aborted")).FirstErr(); err != nil { // 0
		t.Fatal(err)
	}
	if err := a.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := a.ProduceSync(ctx, rec(topic, 0, "a", "committed")).FirstErr(); err != nil { // 1
		t.Fatal(err)
	}
	if err := b.EndTransaction(ctx, kgo.TryAbort); err != nil { // marker 2; the end is 1
		t.Fatal(err)
	}
	fetching := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() { close(fetching) })
		c.DropControl()
		return nil, nil, false
	})
	type result struct {
		got     map[int32][]string
		reached map[int32]int64
	}
	done := make(chan result, 1)
	go func() {
		got, reached := map[int32][]string{}, map[int32]int64(nil)
		reached, err := ReadToEnd(ctx, cfg, topic, ReadRange{}, func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], string(r.Value))
		})
		if err != nil {
			t.Error(err)
		}
		done <- result{got, reached}
	}()
	select {
	case <-fetching: // the end has been taken
	case <-ctx.Done():
		t.Fatal("no fetch")
	}
	if err := a.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if len(r.got) != 0 || r.reached[0] != 1 {
		t.Errorf("read %v up to %v; want nothing up to 1", r.got, r.reached)
	}
}

// TestReadToEndCompacted: compaction leaves gaps in the offsets.
func TestReadToEndCompacted(t *testing.T) {
	const topic = "compacted"
	c, cfg := newCluster(t, topic, 1, true)
	ctx := testCtx(t)
	cl := producer(t, cfg, "tx-compacted")
	for i := range 4 {
		txn(t, ctx, cl, true, rec(topic, 0, "a", fmt.Sprint("a", i)), rec(topic, 0, "b", fmt.Sprint("b", i)))
	}
	txn(t, ctx, cl, true, rec(topic, 0, "a", "a-last"))
	txn(t, ctx, cl, false, rec(topic, 0, "b", "b-aborted"))
	c.Compact()
	state := map[string]string{}
	var offsets []int64
	reached, err := ReadToEnd(ctx, cfg, topic, ReadRange{}, func(r *kgo.Record) {
		state[string(r.Key)] = string(r.Value)
		offsets = append(offsets, r.Offset)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"a": "a-last", "b": "b3"}; !maps.Equal(state, want) {
		t.Errorf("state %v; want %v", state, want)
	}
	if reached[0] != 16 || len(offsets) >= 9 {
		t.Errorf("read offsets %v up to %d; want a compacted few up to 16", offsets, reached[0])
	}
}

func TestReadToEndFails(t *testing.T) {
	const topic = "failing"
	c, cfg := newCluster(t, topic, 2, false)
	ctx := testCtx(t)
	cl := producer(t, cfg, "")
	for _, p := range []int32{0, 1} {
		if err := cl.ProduceSync(ctx, rec(topic, p, "k", "v")).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("fetch error", func(t *testing.T) {
		h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topic, Partitions: []int32{1}, Err: kerr.UnknownServerError})
		defer h.Remove()
		_, err := ReadToEnd(ctx, cfg, topic, ReadRange{}, func(*kgo.Record) {})
		if err == nil || !strings.Contains(err.Error(), "reading failing partition 1") {
			t.Fatalf("err %v; want the fetch error of partition 1", err)
		}
	})
	t.Run("retried fetch errors", func(t *testing.T) {
		h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topic, Err: kerr.NotLeaderForPartition, Count: 3})
		defer h.Remove()
		got, _ := collect(t, ctx, cfg, topic, ReadRange{})
		if len(got[0]) != 1 || len(got[1]) != 1 {
			t.Fatalf("read %v; want a record of each partition", got)
		}
	})
	t.Run("no topic", func(t *testing.T) {
		if _, err := ReadToEnd(ctx, cfg, "missing", ReadRange{}, func(*kgo.Record) {}); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("no partition", func(t *testing.T) {
		if _, err := ReadToEnd(ctx, cfg, topic, ReadRange{Partitions: []int32{5}}, func(*kgo.Record) {}); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := ReadToEnd(cctx, cfg, topic, ReadRange{}, func(*kgo.Record) {}); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestReadEpochs(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	cfg := Config{Brokers: c.ListenAddrs(), Prefix: "e", Partitions: 2}
	if err := EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	got, err := ReadEpochs(ctx, cfg)
	if err != nil || got.Epoch() != 1 || EpochOf(got, domain.OutputPresence) != 1 {
		t.Fatalf("no epochs: inbox %d presence %d, %v; want 1, 1", got.Epoch(), EpochOf(got, domain.OutputPresence), err)
	}
	for _, e := range []struct {
		output string
		epoch  int32
	}{{domain.OutputInbox, 3}, {domain.OutputPresence, 2}, {domain.OutputInbox, 2}} {
		if err := StartEpoch(ctx, cfg, e.output, e.epoch); err != nil {
			t.Fatal(err)
		}
	}
	got, err = ReadEpochs(ctx, cfg)
	if err != nil || got.Epoch() != 3 || EpochOf(got, domain.OutputPresence) != 2 {
		t.Fatalf("inbox %d presence %d, %v; want 3, 2", got.Epoch(), EpochOf(got, domain.OutputPresence), err)
	}
}
