package txproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/evchat/evchat/projections/eventlog"
)

const (
	input     = "in"
	changelog = "state"
	output    = "out"
	parts     = 2
)

// newCluster starts kfake with the input, the changelog (compacted) and the
// output topic.
func newCluster(t *testing.T) (*kfake.Cluster, eventlog.Config) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": "900000"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	for topic, configs := range map[string]map[string]string{
		input: nil, changelog: {"cleanup.policy": "compact"}, output: nil,
	} {
		if err := c.CreateTopic(topic, parts, configs); err != nil {
			t.Fatal(err)
		}
	}
	return c, eventlog.Config{Brokers: c.ListenAddrs(), Prefix: "t", Partitions: parts}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// counter is a Handler that counts each input key per partition: every
// input record emits "key:count" and saves the count to the changelog.
type counter struct {
	mu       sync.Mutex
	counts   map[int32]map[string]int
	restored int // records restored, all time
	drops    int
	// fail, if set, is asked before each record; an error aborts the batch.
	fail func(rec *kgo.Record) error
}

func newCounter() *counter { return &counter{counts: map[int32]map[string]int{}} }

func (c *counter) part(p int32) map[string]int {
	if c.counts[p] == nil {
		c.counts[p] = map[string]int{}
	}
	return c.counts[p]
}

func (c *counter) Restore(p int32, key, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := strconv.Atoi(string(value))
	if err != nil {
		panic(err)
	}
	c.part(p)[string(key)] = n
	c.restored++
}

func (c *counter) Process(_ context.Context, p int32, rec *kgo.Record, out *Out) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := string(rec.Key)
	n := c.part(p)[key] + 1
	c.part(p)[key] = n
	if c.fail != nil {
		if err := c.fail(rec); err != nil {
			return err
		}
	}
	out.SaveState(p, rec.Key, []byte(strconv.Itoa(n)))
	out.Emit(&kgo.Record{Topic: output, Key: rec.Key, Value: fmt.Appendf(nil, "%s:%d", key, n)})
	return nil
}

func (c *counter) Drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.counts)
	c.drops++
}

func (c *counter) stats() (restored, drops int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.restored, c.drops
}

// start runs a processor in a goroutine; stop cancels it and waits.
func start(t *testing.T, ctx context.Context, cfg eventlog.Config, instance string, h Handler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Name: "count", Input: input, Changelog: changelog, Log: cfg, Instance: instance,
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("instance", instance)}, h)
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// write appends input records, one per key, keyed so that they spread over
// the partitions.
func write(t *testing.T, ctx context.Context, cfg eventlog.Config, keys ...string) {
	t.Helper()
	cl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, k := range keys {
		recs = append(recs, &kgo.Record{Topic: input, Key: []byte(k), Value: []byte(k)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// outputs tails the output topic (read-committed) until it holds n
// records, and returns them per key in order; it fails the test if more
// than n arrive before the output's end.
type outputs struct {
	cl    *kgo.Client
	byKey map[string][]string
	n     int
}

func newOutputs(t *testing.T, cfg eventlog.Config) *outputs {
	t.Helper()
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.ConsumeTopics(output))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &outputs{cl: cl, byKey: map[string][]string{}}
}

func (o *outputs) await(t *testing.T, ctx context.Context, n int) map[string][]string {
	t.Helper()
	for o.n < n {
		fs := o.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d outputs of %d: %v", o.n, n, o.byKey)
		}
		fs.EachRecord(func(r *kgo.Record) {
			o.byKey[string(r.Key)] = append(o.byKey[string(r.Key)], string(r.Value))
			o.n++
		})
	}
	return o.byKey
}

// counted is what outputs must hold after each key has come n[key] times:
// every count once, in order.
func counted(n map[string]int) map[string][]string {
	out := map[string][]string{}
	for k, c := range n {
		for i := 1; i <= c; i++ {
			out[k] = append(out[k], fmt.Sprintf("%s:%d", k, i))
		}
	}
	return out
}

func equal(a, b map[string][]string) bool { return maps.EqualFunc(a, b, slices.Equal) }

// TestRestoreAcrossRestarts: a second run restores the counts the first
// committed and goes on from them.
func TestRestoreAcrossRestarts(t *testing.T) {
	_, cfg := newCluster(t)
	ctx := testCtx(t)
	outs := newOutputs(t, cfg)
	keys := []string{"a", "b", "c", "d", "e", "f"}
	write(t, ctx, cfg, keys...)
	write(t, ctx, cfg, keys...)
	first := newCounter()
	stop := start(t, ctx, cfg, "0", first)
	outs.await(t, ctx, 12)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	second := newCounter()
	stop = start(t, ctx, cfg, "0", second)
	write(t, ctx, cfg, keys...)
	got := outs.await(t, ctx, 18)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := counted(map[string]int{"a": 3, "b": 3, "c": 3, "d": 3, "e": 3, "f": 3})
	if !equal(got, want) {
		t.Fatalf("outputs %v; want %v", got, want)
	}
	if restored, _ := second.stats(); restored < len(keys) {
		t.Errorf("the second run restored %d records; want at least %d", restored, len(keys))
	}
}

// TestAbortOnHandlerError: a handler error aborts the batch: its outputs
// and state changes are never visible, the state is dropped and restored,
// and the records are processed again, once.
func TestAbortOnHandlerError(t *testing.T) {
	_, cfg := newCluster(t)
	ctx := testCtx(t)
	outs := newOutputs(t, cfg)
	write(t, ctx, cfg, "a", "b", "c", "d")
	h := newCounter()
	stop := start(t, ctx, cfg, "0", h)
	outs.await(t, ctx, 4)
	var failed atomic.Int32
	h.mu.Lock()
	h.fail = func(rec *kgo.Record) error {
		// Fail the batch at the second "x" of its partition, after the
		// first has changed the state and emitted.
		if string(rec.Key) == "x" && string(rec.Value) == "x2" && failed.Add(1) <= 2 {
			return errors.New("injected")
		}
		return nil
	}
	h.mu.Unlock()
	cl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// One produce: both records of x in one batch of one partition.
	if err := cl.ProduceSync(ctx,
		&kgo.Record{Topic: input, Key: []byte("x"), Value: []byte("x1")},
		&kgo.Record{Topic: input, Key: []byte("x"), Value: []byte("x2")},
		&kgo.Record{Topic: input, Key: []byte("a"), Value: []byte("a")},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := outs.await(t, ctx, 7)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := counted(map[string]int{"a": 2, "b": 1, "c": 1, "d": 1, "x": 2})
	if !equal(got, want) {
		t.Fatalf("outputs %v; want %v", got, want)
	}
	if failed.Load() < 2 {
		t.Fatalf("the handler failed %d times; want 2", failed.Load())
	}
	if _, drops := h.stats(); drops < 2 {
		t.Errorf("state dropped %d times; want at least once per failure", drops)
	}
	// The changelog holds each key's final count, nothing of the aborted
	// attempts (which would have counted x to 3 and beyond).
	state := map[string]string{}
	if _, err := eventlog.ReadToEnd(ctx, cfg, changelog, eventlog.ReadRange{}, func(r *kgo.Record) {
		state[string(r.Key)] = string(r.Value)
	}); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"a": "2", "b": "1", "c": "1", "d": "1", "x": "2"}; !maps.Equal(state, want) {
		t.Errorf("changelog %v; want %v", state, want)
	}
}

// TestFencing: a second process with the same instance id fences the
// first; whatever each did, every input is counted once in the output.
func TestFencing(t *testing.T) {
	_, cfg := newCluster(t)
	ctx := testCtx(t)
	outs := newOutputs(t, cfg)
	keys := []string{"a", "b", "c", "d"}
	write(t, ctx, cfg, keys...)
	first := newCounter()
	stopFirst := start(t, ctx, cfg, "0", first)
	outs.await(t, ctx, 4)
	second := newCounter()
	stopSecond := start(t, ctx, cfg, "0", second)
	n := map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}
	for round := range 5 {
		write(t, ctx, cfg, keys...)
		for _, k := range keys {
			n[k]++
		}
		outs.await(t, ctx, 4*(round+2))
	}
	if err := stopFirst(); err != nil && !fenced(err) {
		t.Errorf("the first process stopped with %v; want nil or fenced", err)
	} else {
		t.Logf("the first process stopped with %v", err)
	}
	if err := stopSecond(); err != nil {
		t.Fatal(err)
	}
	got := outs.await(t, ctx, 24)
	if want := counted(n); !equal(got, want) {
		t.Fatalf("outputs %v; want %v", got, want)
	}
}

// testWriter sends a processor's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// TestRestoreCompleteOrFails restores a changelog written in transactions
// (some aborted) while another writer keeps appending to it, the broker
// delays every fetch and list-offsets request, and fetches fail: each
// restore either holds everything written before it started, or fails.
// Delays and retried errors must not fail it; a fetch error must.
func TestRestoreCompleteOrFails(t *testing.T) {
	c, cfg := newCluster(t)
	ctx := testCtx(t)
	w, err := kgo.NewClient(cfg.ClientOpts(kgo.TransactionalID("writer"), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	pad := make([]byte, 2000)
	txn := func(ctx context.Context, commit bool, recs []*kgo.Record) error {
		if err := w.BeginTransaction(); err != nil {
			return err
		}
		if err := w.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			_ = w.EndTransaction(ctx, kgo.TryAbort)
			return err
		}
		return w.EndTransaction(ctx, kgo.TransactionEndTry(commit))
	}
	want := map[int32]map[string]int{0: {}, 1: {}}
	for i := range 120 {
		p := int32(i % parts)
		commit := i%7 != 3
		var recs []*kgo.Record
		for j := range 5 {
			k := fmt.Sprintf("k%d", (i*5+j)%40)
			recs = append(recs, &kgo.Record{Topic: changelog, Partition: p, Key: []byte(k), Value: []byte(strconv.Itoa(i)),
				Headers: []kgo.RecordHeader{{Key: "pad", Value: pad}}}) // several fetches per partition
			if commit {
				want[p][k] = i
			}
		}
		if err := txn(ctx, commit, recs); err != nil {
			t.Fatal(err)
		}
	}

	// A busy broker: another writer appends transactions of other keys
	// to both partitions for as long as the test restores.
	busyCtx, stopBusy := context.WithCancel(ctx)
	var busy sync.WaitGroup
	busy.Go(func() {
		for i := 0; busyCtx.Err() == nil; i++ {
			p := int32(i % parts)
			rec := &kgo.Record{Topic: changelog, Partition: p, Key: []byte(fmt.Sprint("busy", i%50)), Value: []byte(strconv.Itoa(i))}
			if err := txn(busyCtx, i%5 != 0, []*kgo.Record{rec}); err != nil && busyCtx.Err() == nil {
				t.Errorf("busy writer: %v", err)
				return
			}
		}
	})
	defer func() { stopBusy(); busy.Wait() }()

	// Slow requests: while slow is set, the broker holds every fetch and
	// list-offsets request for longer than the old restore's quiet
	// window before answering it.
	var slow atomic.Bool
	for _, key := range []kmsg.Key{kmsg.Fetch, kmsg.ListOffsets} {
		c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			if slow.Load() {
				c.SleepControl(func() { time.Sleep(300 * time.Millisecond) })
			}
			return nil, nil, false
		})
	}

	restore := func() (*counter, error) {
		h := newCounter()
		r := &runner{cfg: Config{Name: "count", Changelog: changelog, Log: cfg}, h: h, log: slog.New(slog.DiscardHandler), restored: map[int32]bool{}}
		for p := range int32(parts) {
			if err := r.restore(ctx, p); err != nil {
				return h, err
			}
		}
		return h, nil
	}
	complete := func(h *counter) error {
		for p, keys := range want {
			for k, v := range keys {
				if got, ok := h.counts[p][k]; !ok || got != v {
					return fmt.Errorf("partition %d key %s: restored %d (%t); want %d", p, k, got, ok, v)
				}
			}
		}
		return nil
	}
	for _, tc := range []struct {
		name    string
		slow    bool
		fault   *kfake.Fault
		succeed bool // else fail
	}{
		{name: "idle", succeed: true},
		{name: "slow", slow: true, succeed: true},
		{name: "retried errors", succeed: true,
			fault: &kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: changelog, Err: kerr.NotLeaderForPartition, Count: 3}},
		{name: "fetch error", fault: &kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: changelog, Err: kerr.UnknownServerError}},
		{name: "slow fetch error", slow: true,
			fault: &kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: changelog, Partitions: []int32{1}, Err: kerr.UnknownServerError}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 {
				slow.Store(tc.slow)
				var h *kfake.FaultHandle
				if tc.fault != nil {
					h = c.Fault(*tc.fault)
				}
				st, err := restore()
				if h != nil {
					h.Remove()
				}
				slow.Store(false)
				switch {
				case err == nil:
					if cerr := complete(st); cerr != nil {
						t.Fatalf("restore returned without error but partially: %v", cerr)
					}
					if !tc.succeed {
						t.Fatal("restore succeeded despite a fetch error")
					}
				case tc.succeed:
					t.Fatalf("restore failed: %v", err)
				default:
					t.Logf("restore failed as it should: %v", err)
				}
			}
		})
	}
}

// TestTransactionTimeout: a batch that outlives the transaction timeout is
// aborted by the coordinator, which bumps the producer's epoch; the
// processor starts a new session instead of stopping or spinning, and every
// input is still counted once.
func TestTransactionTimeout(t *testing.T) {
	_, cfg := newCluster(t)
	ctx := testCtx(t)
	outs := newOutputs(t, cfg)
	keys := []string{"a", "b", "c", "d"}
	write(t, ctx, cfg, keys...)
	h := newCounter()
	var slow atomic.Bool
	var seen atomic.Int32
	slow.Store(true)
	h.fail = func(*kgo.Record) error {
		// The fault: the second record of the first batch, after the
		// first one's output went out (so the transaction is open on
		// the broker), takes past the 1 s timeout.
		if seen.Add(1) == 2 && slow.CompareAndSwap(true, false) {
			time.Sleep(3 * time.Second)
		}
		return nil
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, Config{Name: "count", Input: input, Changelog: changelog, Log: cfg,
			TransactionTimeout: time.Second, MaxBatch: 2,
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}, h)
	}()
	outs.await(t, ctx, 4)
	write(t, ctx, cfg, keys...)
	got := outs.await(t, ctx, 8)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run stopped with %v; want nil after a lost session", err)
	}
	if want := counted(map[string]int{"a": 2, "b": 2, "c": 2, "d": 2}); !equal(got, want) {
		t.Fatalf("outputs %v; want %v", got, want)
	}
	if slow.Load() {
		t.Fatal("the slow batch never ran")
	}
}

// TestHeavyBatchesShrink: every record takes 300 ms, so a batch of eight
// outlives the 1 s transaction timeout every time. The processor must not
// retry that batch forever: smaller batches after each lost session get
// every record through.
func TestHeavyBatchesShrink(t *testing.T) {
	_, cfg := newCluster(t)
	ctx := testCtx(t)
	outs := newOutputs(t, cfg)
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	write(t, ctx, cfg, keys...)
	h := newCounter()
	h.fail = func(*kgo.Record) error {
		time.Sleep(300 * time.Millisecond)
		return nil
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, Config{Name: "count", Input: input, Changelog: changelog, Log: cfg,
			TransactionTimeout: time.Second, MaxBatch: len(keys),
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}, h)
	}()
	got := outs.await(t, ctx, len(keys))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run stopped with %v; want nil", err)
	}
	want := map[string]int{}
	for _, k := range keys {
		want[k] = 1
	}
	if !equal(got, counted(want)) {
		t.Fatalf("outputs %v; want %v", got, counted(want))
	}
}

// idler is a counter that is an Idler too: it sends each call's
// partitions, with the counts restored by then, to calls.
type idler struct {
	*counter
	calls chan idleCall
}

type idleCall struct {
	parts  []int32
	counts map[int32]map[string]int
}

func (i *idler) Idle(_ context.Context, parts []int32) error {
	i.mu.Lock()
	counts := map[int32]map[string]int{}
	for p, m := range i.counts {
		counts[p] = maps.Clone(m)
	}
	i.mu.Unlock()
	select {
	case i.calls <- idleCall{slices.Clone(parts), counts}:
	default: // the test has what it needs
	}
	return nil
}

// TestIdle: with no input coming, an Idler's Idle is called with every
// partition the process owns, each restored from the changelog first.
func TestIdle(t *testing.T) {
	_, cfg := newCluster(t)
	ctx := testCtx(t)
	outs := newOutputs(t, cfg)
	keys := []string{"a", "b", "c", "d", "e", "f"}
	write(t, ctx, cfg, keys...)
	first := newCounter()
	stop := start(t, ctx, cfg, "0", first)
	outs.await(t, ctx, len(keys))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint(map[string]int{"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1})

	// The second run gets no input: its partitions are restored for Idle
	// alone.
	second := &idler{counter: newCounter(), calls: make(chan idleCall, 1)}
	start(t, ctx, cfg, "0", second)
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("Idle was never called with both partitions restored to %s", want)
		case c := <-second.calls:
			all := map[string]int{}
			for _, m := range c.counts {
				maps.Copy(all, m)
			}
			if fmt.Sprint(c.parts) == "[0 1]" && fmt.Sprint(all) == want {
				return
			}
			t.Logf("Idle(%v) with the counts %v; waiting for both partitions with %s", c.parts, c.counts, want)
		}
	}
}

// TestTopUp: a batch takes what the fetch its poll set off brings within
// Config.TopUp: a record written after the poll that began the batch is in
// it (the wait ends when it comes), and without the wait it is not.
func TestTopUp(t *testing.T) {
	for _, tc := range []struct {
		topUp time.Duration
		want  int
	}{{time.Minute, 2}, {-1, 1}} {
		_, cfg := newCluster(t)
		ctx := testCtx(t)
		sess, err := kgo.NewGroupTransactSession(cfg.ClientOpts(append(cfg.GroupOpts("topup", "0"),
			kgo.TransactionalID("topup"), kgo.ConsumeTopics(input), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)...)
		if err != nil {
			t.Fatal(err)
		}
		write(t, ctx, cfg, "a")
		first := sess.PollRecords(ctx, 100)
		if n := first.NumRecords(); n != 1 {
			t.Fatalf("the first poll returned %d records, want 1", n)
		}
		write(t, ctx, cfg, "b")
		r := &runner{cfg: Config{TopUp: tc.topUp}, limit: 100, log: slog.New(slog.DiscardHandler)}
		got := r.topUp(ctx, sess, first)
		var keys []string
		got.EachRecord(func(rec *kgo.Record) { keys = append(keys, string(rec.Key)) })
		if len(keys) != tc.want {
			t.Errorf("top-up %v: the batch holds %v, want %d records", tc.topUp, keys, tc.want)
		}
		sess.Close()
	}
}

// TestLagWhileProcessing: a batch's records count in the processor's lag
// until the batch commits.
func TestLagWhileProcessing(t *testing.T) {
	_, cfg := newCluster(t)
	ctx := testCtx(t)
	cfg.Lag = eventlog.NewLag(prometheus.NewRegistry())
	outs := newOutputs(t, cfg)
	processing, release := make(chan struct{}), make(chan struct{})
	h := newCounter()
	h.fail = func(rec *kgo.Record) error {
		if string(rec.Key) == "y" {
			close(processing)
			<-release
		}
		return nil
	}
	stop := start(t, ctx, cfg, "0", h)
	write(t, ctx, cfg, "y")
	select {
	case <-processing:
	case <-ctx.Done():
		t.Fatal("the record was not processed")
	}
	if got := cfg.Lag.Of("count"); got < 1 {
		t.Errorf("lag %d while the batch of y is processed, want at least 1", got)
	}
	close(release)
	outs.await(t, ctx, 1)
	for cfg.Lag.Of("count") != 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if got := cfg.Lag.Of("count"); got != 0 {
		t.Errorf("lag %d once the batch committed, want 0", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
