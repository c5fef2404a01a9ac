// Package txproc runs a projection that reads one topic and writes to
// others exactly once, with its state in memory and a changelog topic: the
// way Kafka Streams runs a stateful processor.
//
// It consumes in a consumer group through a kgo.GroupTransactSession. For
// each poll it begins a transaction, hands every record to the Handler, which
// emits output records and state changes, and commits the outputs, the
// state changes (to the changelog, keyed by the state's key and partitioned
// like the input) and the group's offsets together, or none of them. On
// assignment, and after any aborted transaction, it drops its state and
// restores each partition from the changelog, where aborted writes are
// invisible to its read-committed reader.
//
// A restore is complete or it fails: it reads the changelog partition up to
// the end it takes when it starts (eventlog.ReadToEnd), never stopping
// because nothing came for a while, and a fetch error fails it. A failed
// restore aborts the batch it was for (nothing is processed, nothing
// committed), drops every state and retries with a backoff, logging each
// failure. So the Handler's Process of a partition only ever runs on the
// whole state of that partition as of the committed input offsets: what the
// state does not hold, no committed input has made.
package txproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/projections/eventlog"
)

// Handler is a projection's logic. Run calls it from one goroutine.
type Handler interface {
	// Restore loads one changelog record of partition p (called in log
	// order while restoring, before any Process of p). Process of p
	// runs only after every record of p's changelog up to its end has
	// been restored.
	Restore(p int32, key, value []byte)
	// Process handles one input record of partition p.
	Process(ctx context.Context, p int32, rec *kgo.Record, out *Out) error
	// Drop forgets all state.
	Drop()
}

// Preparer is a Handler that reads ahead: Run hands it every record of a
// batch, after the batch's partitions are restored and before the first
// Process, so that it can look up what the batch needs at once. An error
// aborts the batch.
type Preparer interface {
	Prepare(ctx context.Context, recs []*kgo.Record) error
}

// Flusher is a Handler that ends each batch itself: Run calls Flush after
// the batch's last Process, with the batch's Out, and commits the
// transaction after what Flush emitted and wrote. An error aborts the
// batch, and its records come again. What Flush writes outside the log
// stays written though the transaction may still fail to commit: the
// Handler must meet its own writes again, on the same records, and act as
// if they were not there.
type Flusher interface {
	Flush(ctx context.Context, out *Out) error
}

// Idler is a Handler with work for quiet times. When no input record has
// come for Config.IdleAfter, Run restores every partition this process
// owns that it has not restored yet and calls Idle with the restored ones,
// outside any transaction: the sends processor checks there that the store
// still holds what the committed transactions wrote (projections/sends),
// which it does before each batch too, and a partition that gets no input
// would otherwise never be checked. An error is logged; Idle is called
// again after the next quiet interval.
type Idler interface {
	Idle(ctx context.Context, partitions []int32) error
}

// Out collects what Process emits.
type Out struct {
	changelog string
	produce   func(*kgo.Record)
}

// NewOut returns an Out that hands records to produce: for tests of a
// Handler's Process.
func NewOut(changelog string, produce func(*kgo.Record)) *Out {
	return &Out{changelog: changelog, produce: produce}
}

// Emit writes an output record in the transaction.
func (o *Out) Emit(r *kgo.Record) { o.produce(r) }

// SaveState writes a state change (a key's new value) to the changelog in
// the transaction. Its key must route it to the input's partition: use the
// input record's key, or rely on equal partition counts and the same key.
func (o *Out) SaveState(p int32, key, value []byte) {
	o.produce(&kgo.Record{Topic: o.changelog, Partition: p, Key: key, Value: value})
}

// Config configures a processor.
type Config struct {
	// Name is the role's name: its consumer group and transactional id
	// derive from it. Required.
	Name string
	// Input is the topic consumed. Required.
	Input string
	// Changelog is the state topic, with as many partitions as Input.
	// Required.
	Changelog string
	// Log is the log's config. Required.
	Log eventlog.Config
	// Instance identifies this process (static membership, transactional
	// id). Default "0".
	Instance string
	// OnAssigned, if set, is called with the input partitions this process
	// owns after every assignment.
	OnAssigned func(partitions []int32)
	// MaxBatch bounds the input records of one transaction. Default
	// DefaultMaxBatch. A transaction that outlives its timeout halves the
	// bound for the sessions after it (down to one record), and each
	// committed batch raises it again by a quarter: records heavy enough
	// that a full batch cannot commit in time (a fan-out of large
	// messages on a loaded machine) slow the processor, never stop it.
	MaxBatch int
	// TransactionTimeout is the producer's transaction timeout: a
	// transaction open longer is aborted by the coordinator. Default
	// DefaultTransactionTimeout.
	TransactionTimeout time.Duration
	// Gather is how long a fetch may wait to gather records into one
	// transaction (eventlog.Gather). Default 0: a transaction as soon as
	// there are records.
	Gather time.Duration
	// IdleAfter is how long no input must come before an Idler's Idle
	// is called (and how often while none comes). Default
	// DefaultIdleAfter.
	IdleAfter time.Duration
	// TopUp is how long a batch waits, after the poll that began it, for
	// the fetch that poll set off (see topUp). Default DefaultTopUp;
	// negative: no wait, a batch is what one poll returns.
	TopUp time.Duration
	// Logger; default discard.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultMaxBatch           = 1000
	DefaultTransactionTimeout = 30 * time.Second
	DefaultIdleAfter          = time.Second
	DefaultTopUp              = 2 * time.Millisecond
)

// Run processes until ctx is cancelled and returns nil then.
//
// A session whose transaction state is lost (its transaction ran past the
// transaction timeout and the coordinator aborted it, or the producer is in
// a state no Begin gets out of) is closed and a new one started, which
// restores from the changelog as after any assignment: the records of the
// lost transaction come again from the committed offsets. A process fenced
// by another with the same transactional id stops with an error instead:
// two processes with one id can only fence each other in turn.
func Run(ctx context.Context, cfg Config, h Handler) error {
	if cfg.Name == "" || cfg.Input == "" || cfg.Changelog == "" {
		return errors.New("txproc: name, input and changelog are required")
	}
	if err := cfg.Log.Validate(); err != nil {
		return err
	}
	if cfg.Instance == "" {
		cfg.Instance = "0"
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.TransactionTimeout <= 0 {
		cfg.TransactionTimeout = DefaultTransactionTimeout
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = DefaultIdleAfter
	}
	if cfg.TopUp == 0 {
		cfg.TopUp = DefaultTopUp
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("projection", cfg.Name)
	r := &runner{cfg: cfg, h: h, log: log, restored: map[int32]bool{}, owned: map[int32]bool{}, limit: cfg.MaxBatch}
	for attempt := 0; ; attempt++ {
		err := r.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errSessionLost) {
			return err
		}
		log.Warn("transactional session lost; starting a new one", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(100*time.Millisecond<<min(attempt, 5), 3*time.Second)):
		}
	}
}

// errSessionLost marks an error after which a session can commit nothing
// more, though no other process took its transactional id.
var errSessionLost = errors.New("txproc: transactional session lost")

// session runs one GroupTransactSession until ctx ends (nil), the session
// is lost (errSessionLost) or the process is fenced.
func (r *runner) session(ctx context.Context) error {
	cfg, log := r.cfg, r.log
	r.drop()
	var mu sync.Mutex
	clear(r.owned)
	// own marks the state dirty and adds (or removes) the partitions this
	// process owns: assignments and revocations come as changes (the
	// cooperative balancer), a loss as all that was owned.
	own := func(m map[string][]int32, owned bool) {
		mu.Lock()
		defer mu.Unlock()
		r.dirty = true
		for _, p := range m[cfg.Input] {
			if owned {
				r.owned[p] = true
			} else {
				delete(r.owned, p)
			}
		}
	}
	opts := append(cfg.Log.GroupOpts(cfg.Name, cfg.Instance),
		kgo.TransactionalID(cfg.Log.Group(cfg.Name)+"-"+cfg.Instance),
		kgo.TransactionTimeout(cfg.TransactionTimeout),
		kgo.ConsumeTopics(cfg.Input),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			own(m, true)
			if cfg.OnAssigned != nil {
				cfg.OnAssigned(m[cfg.Input])
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { own(m, false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { own(m, false) }),
		kgo.ClientID("evchat-"+cfg.Name),
	)
	// Changelog records carry their partition; everything else is keyed.
	opts = append(opts, kgo.RecordPartitioner(partitioner{cfg.Changelog}))
	opts = append(opts, eventlog.Gather(cfg.Gather)...)
	sess, err := kgo.NewGroupTransactSession(cfg.Log.ClientOpts(opts...)...)
	if err != nil {
		return fmt.Errorf("txproc %s: session: %w", cfg.Name, err)
	}
	defer sess.Close()
	// Initialise the transactional producer now, not at the first batch:
	// that fences a predecessor with our transactional id (a process
	// killed mid-transaction) and aborts its open transaction. Until then
	// the group's offsets stay unstable and no batch would ever arrive.
	for {
		_, _, err := sess.Client().ProducerID(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("initialising the transactional producer", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}

	idler, _ := r.h.(Idler)
	// clean drops the state after a change of assignment; with owned,
	// it returns the partitions owned now (for Idle, not for each batch).
	clean := func(owned bool) []int32 {
		mu.Lock()
		defer mu.Unlock()
		if r.dirty {
			r.dirty = false
			r.drop()
		}
		if !owned {
			return nil
		}
		return slices.Sorted(maps.Keys(r.owned))
	}
	for attempt := 0; ; {
		// A bounded batch keeps a transaction well inside its timeout
		// however far behind the input is. An Idler's poll waits at
		// most IdleAfter.
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if idler != nil {
			pollCtx, cancel = context.WithTimeout(ctx, cfg.IdleAfter)
		}
		fetches := sess.PollRecords(pollCtx, r.limit)
		quiet := errors.Is(pollCtx.Err(), context.DeadlineExceeded)
		cancel()
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				log.Warn("fetch", "topic", t, "partition", p, "err", err)
			}
		})
		if fetches.NumRecords() == 0 {
			if quiet && idler != nil {
				r.idle(ctx, idler, clean(true))
			}
			continue
		}
		fetches = r.topUp(ctx, sess, fetches)
		cfg.Log.Lag.Begin(cfg.Name, fetches)
		clean(false)
		began := time.Now()
		committed, err := r.batch(ctx, sess, fetches)
		if err == nil && committed {
			cfg.Log.Lag.Observe(cfg.Name, fetches)
			attempt = 0
			r.limit = min(cfg.MaxBatch, r.limit+r.limit/4+1)
			continue
		}
		// Not committed: the records come again from the committed
		// offsets; the state goes back to what the changelog says.
		if err == nil {
			log.Info("batch not committed (the group rebalanced, or its coordinator did not answer); its records come again",
				"records", fetches.NumRecords(), "took", time.Since(began).Round(time.Millisecond))
		}
		r.drop()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case fenced(err) && time.Since(began) >= cfg.TransactionTimeout:
			// Our own transaction outlived its timeout: the
			// coordinator aborted it and bumped the epoch. The
			// next session takes smaller batches.
			r.limit = max(1, min(r.limit, fetches.NumRecords())/2)
			return fmt.Errorf("%w: the transaction took %v, past its timeout of %v: %w",
				errSessionLost, time.Since(began).Round(time.Millisecond), cfg.TransactionTimeout, err)
		case fenced(err):
			// Another process took our transactional id: the
			// session can commit nothing any more, and carrying on
			// would only spin.
			return fmt.Errorf("txproc %s: fenced by another process with transactional id %s: %w",
				cfg.Name, cfg.Log.Group(cfg.Name)+"-"+cfg.Instance, err)
		case errors.Is(err, errBegin):
			// A producer still in a transaction it cannot end.
			return fmt.Errorf("%w: %w", errSessionLost, err)
		}
		if err != nil {
			log.Warn("batch aborted", "err", err)
			attempt++
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(min(50*time.Millisecond<<min(attempt, 6), 3*time.Second)):
			}
		}
	}
}

// errBegin marks a failed Begin.
var errBegin = errors.New("begin")

func fenced(err error) bool {
	// INVALID_TXN_STATE is what a fenced producer's next transactional
	// request gets once its epoch is gone (TestFencing saw it); counting it
	// here keeps a fenced process from starting a new session, which would
	// fence the process that fenced it.
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.FencedInstanceID) || errors.Is(err, kerr.InvalidTxnState)
}

// partitioner sends changelog records to the partition they carry and
// hashes the key of every other record like Kafka's default partitioner.
type partitioner struct{ changelog string }

func (p partitioner) ForTopic(t string) kgo.TopicPartitioner {
	if t == p.changelog {
		return kgo.ManualPartitioner().ForTopic(t)
	}
	return kgo.StickyKeyPartitioner(nil).ForTopic(t)
}

type runner struct {
	cfg      Config
	h        Handler
	log      *slog.Logger
	dirty    bool // guarded by the session's mu
	restored map[int32]bool
	owned    map[int32]bool // guarded by the session's mu
	limit    int            // input records per transaction, at most cfg.MaxBatch
}

// topUp adds to a batch's fetches what the fetch its poll set off brings
// within Config.TopUp. The client holds one fetch per broker until it is
// polled, and fetches again only then: the fetch a batch begins with was
// answered early in the previous batch, with what had come by then, and
// what came during the rest of that batch would wait for the batch after
// this one, two batches' time. The fetch set off by this batch's poll is
// answered at once with it (the broker has it), so a moment's wait adds
// it to this batch: a request waits for one batch in progress, not two.
// Polling during the transaction instead would commit the offsets of
// records not yet processed.
func (r *runner) topUp(ctx context.Context, sess *kgo.GroupTransactSession, fetches kgo.Fetches) kgo.Fetches {
	n := fetches.NumRecords()
	if r.cfg.TopUp < 0 || n >= r.limit {
		return fetches
	}
	tctx, cancel := context.WithTimeout(ctx, r.cfg.TopUp)
	more := sess.PollRecords(tctx, r.limit-n)
	cancel()
	if more.NumRecords() == 0 { // nothing came in time (or only the wait's own error)
		return fetches
	}
	more.EachError(func(t string, p int32, err error) {
		r.log.Warn("fetch", "topic", t, "partition", p, "err", err)
	})
	return append(fetches, more...)
}

// idle restores the owned partitions not restored yet and hands the
// restored ones to the Idler. A failed restore drops every state, as in a
// batch; a failed Idle is only logged.
func (r *runner) idle(ctx context.Context, idler Idler, owned []int32) {
	for _, p := range owned {
		if r.restored[p] {
			continue
		}
		if err := r.restore(ctx, p); err != nil {
			r.log.Warn("restoring while idle", "err", err)
			r.drop()
			return
		}
		r.restored[p] = true
	}
	if len(owned) == 0 {
		return
	}
	if err := idler.Idle(ctx, owned); err != nil && ctx.Err() == nil {
		r.log.Warn("idle", "err", err)
	}
}

func (r *runner) drop() {
	clear(r.restored)
	r.h.Drop()
}

func (r *runner) batch(ctx context.Context, sess *kgo.GroupTransactSession, fetches kgo.Fetches) (bool, error) {
	if err := sess.Begin(); err != nil {
		return false, fmt.Errorf("%w: %w", errBegin, err)
	}
	var (
		errMu      sync.Mutex
		produceErr error
		wg         sync.WaitGroup
	)
	out := &Out{changelog: r.cfg.Changelog, produce: func(rec *kgo.Record) {
		wg.Add(1)
		sess.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				errMu.Lock()
				produceErr = errors.Join(produceErr, err)
				errMu.Unlock()
			}
		})
	}}
	var (
		err    error
		phases [len(phaseNames)]time.Duration
		mark   = time.Now()
	)
	// lap ends phase i: what it took since the previous lap.
	lap := func(i int) {
		now := time.Now()
		phases[i] = now.Sub(mark)
		mark = now
	}
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if err != nil || r.restored[fp.Partition] {
			return
		}
		if err = r.restore(ctx, fp.Partition); err == nil {
			r.restored[fp.Partition] = true
		}
	})
	lap(phaseRestore)
	if p, ok := r.h.(Preparer); ok && err == nil {
		err = p.Prepare(ctx, fetches.Records())
	}
	lap(phasePrepare)
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		for _, rec := range fp.Records {
			if err != nil {
				return
			}
			err = r.h.Process(ctx, fp.Partition, rec, out)
		}
	})
	lap(phaseProcess)
	if f, ok := r.h.(Flusher); ok && err == nil {
		err = f.Flush(ctx, out)
	}
	lap(phaseFlush)
	wg.Wait()
	lap(phaseProduce)
	if err == nil {
		err = produceErr
	}
	if err != nil {
		_, endErr := sess.End(ctx, kgo.TryAbort)
		return false, errors.Join(err, endErr)
	}
	committed, err := sess.End(ctx, kgo.TryCommit)
	lap(phaseCommit)
	if committed && err == nil {
		for i, d := range phases {
			r.cfg.Log.Lag.Phase(r.cfg.Name, phaseNames[i], d)
		}
	}
	return committed, err
}

// The phases of a batch, in order, as evchat_projection_batch_phase_seconds
// names them.
const (
	phaseRestore = iota
	phasePrepare
	phaseProcess
	phaseFlush
	phaseProduce
	phaseCommit
)

var phaseNames = [...]string{"restore", "prepare", "process", "flush", "produce", "commit"}

// restore reads the changelog partition to its end (the last stable
// offset when it starts) into the handler, or fails: a partition restored
// in part would look like channels that do not exist. The caller then
// aborts the batch, commits nothing and drops every state.
func (r *runner) restore(ctx context.Context, part int32) error {
	n := 0
	reached, err := eventlog.ReadToEnd(ctx, r.cfg.Log, r.cfg.Changelog, eventlog.ReadRange{Partitions: []int32{part}}, func(rec *kgo.Record) {
		r.h.Restore(part, rec.Key, rec.Value)
		n++
	})
	if err != nil {
		return fmt.Errorf("txproc %s: restoring partition %d: %w", r.cfg.Name, part, err)
	}
	r.log.Debug("restored", "partition", part, "records", n, "end", reached[part])
	return nil
}
