// Package projector runs a projection whose state and log positions live in
// the store: it consumes one topic in a consumer group (the group only
// assigns partitions; offsets are never committed to Kafka), hands each
// fetched run of records to the projection's Handler, and writes the
// resulting state changes together with the next offsets in one store.Batch.
//
// On assignment it seeks each partition to the position the store holds, so
// a restart resumes exactly after the last batch it wrote, and a replay is a
// matter of deleting the positions and the state. Before each batch it
// checks that the store still holds the positions it last wrote, and seeks
// to the store's where they moved (see applyChecked).
package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/store"
)

// Handler turns records into state changes.
type Handler interface {
	// Handle adds to b what the records of one partition change. An error
	// means a transient failure (the store did not answer): the runner
	// resets the handler and retries the whole fetch.
	Handle(ctx context.Context, partition int32, recs []*kgo.Record, b *store.Batch) error
	// Reset drops every cached state; the store is the truth.
	Reset()
}

// A Holder is a Handler that may keep records past Handle's return, to
// decide on them later: push keeps each inbox entry until it is due. The
// runner never writes a partition's position past the oldest record the
// handler holds there; once Due has come it calls Handle again, with no
// records, for every partition the handler holds records of; and whenever
// it resets the handler it seeks every partition back to its written
// position and drops what it had fetched, so that the records the handler
// held are fetched again.
type Holder interface {
	Handler
	// Held returns the offset of the oldest record of partition p that
	// the handler holds, if any.
	Held(p int32) (offset int64, ok bool)
	// Due returns when the handler wants Handle called again for the
	// partitions it holds records of; the zero time when it holds none.
	Due() time.Time
}

// Store is what the runner needs of the store.
type Store interface {
	Apply(ctx context.Context, b store.Batch) error
	Positions(ctx context.Context, projection string) (map[int32]int64, error)
}

// PositionReader reads a projection's positions.
type PositionReader interface {
	Positions(ctx context.Context, projection string) (map[int32]int64, error)
}

// Config configures one projection runner.
type Config struct {
	// Name of the projection; its consumer group is Log.Group(Name) and
	// its positions are stored under Name. Required.
	Name string
	// Topic to consume. Required.
	Topic string
	// Log is the log's config. Required.
	Log eventlog.Config
	// Instance identifies this process among the projection's consumers
	// (static group membership). Default "0"; unique per process.
	Instance string
	// Gather is how long a fetch may wait to gather records into one
	// batch (eventlog.Gather). Default 0: a batch as soon as there are
	// records, for projections that readers wait on.
	Gather time.Duration
	// Logger; default discard.
	Logger *slog.Logger
}

// Run consumes until ctx is cancelled and returns nil then.
func Run(ctx context.Context, cfg Config, st Store, h Handler) error {
	if cfg.Name == "" || cfg.Topic == "" {
		return errors.New("projector: name and topic are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("projection", cfg.Name)
	var reset atomic.Bool
	exp := &expected{m: map[int32]position{}}
	onChange := func(context.Context, *kgo.Client, map[string][]int32) { reset.Store(true) }
	opts := append(cfg.Log.GroupOpts(cfg.Name, cfg.Instance),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(onChange),
		kgo.OnPartitionsRevoked(onChange),
		kgo.OnPartitionsLost(onChange),
		kgo.AdjustFetchOffsetsFn(func(ctx context.Context, m map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
			pos, err := st.Positions(ctx, cfg.Name)
			if err != nil {
				return nil, fmt.Errorf("projector %s: positions: %w", cfg.Name, err)
			}
			for t, ps := range m {
				for p := range ps {
					o, ok := pos[p]
					if ok {
						ps[p] = kgo.NewOffset().At(o).WithEpoch(-1)
					} else {
						ps[p] = kgo.NewOffset().AtStart()
					}
					exp.set(p, o, ok)
				}
				m[t] = ps
			}
			return m, nil
		}),
		kgo.ClientID("evchat-"+cfg.Name),
	)
	opts = append(opts, eventlog.Gather(cfg.Gather)...)
	cl, err := kgo.NewClient(cfg.Log.ClientOpts(opts...)...)
	if err != nil {
		return fmt.Errorf("projector %s: client: %w", cfg.Name, err)
	}
	defer cl.Close()

	var hold *holding
	if hd, ok := h.(Holder); ok {
		hold = &holding{h: hd, topic: cfg.Topic, handed: map[int32]int64{}}
	}
	for {
		fetches := poll(ctx, cl, hold)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			if hold != nil && errors.Is(err, context.DeadlineExceeded) {
				return // the wait for Due
			}
			log.Warn("fetch", "topic", t, "partition", p, "err", err)
		})
		if reset.Swap(false) {
			if hold != nil {
				hold.rewind(cl, exp)
				cl.AllowRebalance()
				continue
			}
			h.Reset()
		}
		cfg.Log.Lag.Begin(cfg.Name, fetches)
		for attempt := 0; ; attempt++ {
			if hold != nil {
				attempt = hold.failures // a holder's failed fetch is dropped, not retried
			}
			err := applyChecked(ctx, cfg.Name, st, h, fetches, exp, cl, log, hold)
			if err == nil {
				if hold != nil {
					hold.failures = 0
				}
				break
			}
			if ctx.Err() != nil {
				cl.AllowRebalance()
				return nil
			}
			log.Warn("apply failed; retrying", "attempt", attempt, "err", err)
			if hold != nil {
				hold.rewind(cl, exp) // the fetches are dropped: what follows comes again
				hold.failures++
			} else {
				h.Reset()
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff(attempt)):
			}
			if hold != nil {
				break
			}
		}
		cfg.Log.Lag.Observe(cfg.Name, fetches)
		cl.AllowRebalance()
	}
}

// poll waits for fetches, and for a holder that holds records at most
// until they are due (see holding.due).
func poll(ctx context.Context, cl *kgo.Client, hold *holding) kgo.Fetches {
	if hold != nil {
		if due := hold.due(); !due.IsZero() {
			dctx, cancel := context.WithDeadline(ctx, due)
			defer cancel()
			return cl.PollFetches(dctx)
		}
	}
	return cl.PollFetches(ctx)
}

// holding is the runner's side of a Holder: where each partition's
// records handed to it end, and when it was last handed no records.
type holding struct {
	h      Holder
	topic  string
	handed map[int32]int64 // the offset after the last record handed, per partition
	ticked time.Time
	// failures counts the failed calls since the last good one: the
	// backoff's attempt.
	failures int
}

// holdTick is the least time between two calls of a holder's Handle
// without records: each writes positions, and the next entry held is
// nearly always due a moment after the last one decided.
const holdTick = 100 * time.Millisecond

// due returns when the holder's held partitions are to be handed no
// records next: when Due says, but not within holdTick of the last time;
// zero when it holds nothing.
func (o *holding) due() time.Time {
	due := o.h.Due()
	if due.IsZero() {
		return due
	}
	if next := o.ticked.Add(holdTick); next.After(due) {
		return next
	}
	return due
}

// rewind resets the handler and seeks every partition to the position
// last written (exp): the records it held are fetched again.
func (o *holding) rewind(cl *kgo.Client, exp *expected) {
	o.h.Reset()
	clear(o.handed)
	exp.mu.Lock()
	seeks := map[int32]kgo.EpochOffset{}
	for p, pos := range exp.m {
		// Without a stored position, offset 0: below the log's start it
		// is out of range and the consumer resets to the start.
		seeks[p] = kgo.EpochOffset{Epoch: -1, Offset: pos.off}
	}
	exp.mu.Unlock()
	cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{o.topic: seeks})
}

// position returns what to write as partition p's position: the oldest
// record held there, or else the end of what was handed.
func (o *holding) position(p int32) int64 {
	if off, ok := o.h.Held(p); ok {
		return off
	}
	return o.handed[p]
}

// position is a stored position, or its absence (ok false).
type position struct {
	off int64
	ok  bool
}

// expected holds, per partition this runner consumes, the position it
// expects the store to hold: the one it seeked to on assignment, then the
// one of each batch it wrote.
type expected struct {
	mu sync.Mutex
	m  map[int32]position
}

func (e *expected) set(p int32, off int64, ok bool) {
	e.mu.Lock()
	e.m[p] = position{off, ok}
	e.mu.Unlock()
}

func (e *expected) get(p int32) (position, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	pos, ok := e.m[p]
	return pos, ok
}

// applyChecked applies fetches as apply does, after checking that the
// store still holds, for each fetched partition, the position this runner
// last saw or wrote there: the records fetched follow on from it. A store
// can lose writes it acknowledged (Cassandra's periodic commit log replays,
// after a kill, only up to its last sync marker, up to some 100 ms behind
// the acknowledged writes), and another consumer of the group (this one's
// partition was given away while its batch was in flight) can write its
// own, older or newer, position. The fetch position then no longer follows
// on from the store's: going on from it would leave what the store lost
// missing below a later position for good. So a partition whose stored
// position moved is not applied from this fetch but sought to the stored
// position (the start of the log when there is none), and applied again
// from there: every write is idempotent, and the handler skips what the
// store holds already.
func applyChecked(ctx context.Context, name string, st Store, h Handler, fetches kgo.Fetches, exp *expected, cl *kgo.Client, log *slog.Logger, hold *holding) error {
	stored, err := st.Positions(ctx, name)
	if err != nil {
		return err
	}
	var (
		skip  map[int32]bool
		seeks map[string]map[int32]kgo.EpochOffset
	)
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		want, known := exp.get(p.Partition)
		off, ok := stored[p.Partition]
		if !known || (want == position{off, ok}) {
			return
		}
		log.Warn("the store's position moved under this runner; seeking to it",
			"partition", p.Partition, "stored", off, "stored_exists", ok, "expected", want.off, "expected_exists", want.ok,
			"fetched_from", p.Records[0].Offset)
		if skip == nil {
			skip = map[int32]bool{}
			seeks = map[string]map[int32]kgo.EpochOffset{}
		}
		skip[p.Partition] = true
		if seeks[p.Topic] == nil {
			seeks[p.Topic] = map[int32]kgo.EpochOffset{}
		}
		// Without a stored position, offset 0: below the log's start it
		// is out of range and the consumer resets to the start.
		seeks[p.Topic][p.Partition] = kgo.EpochOffset{Epoch: -1, Offset: off}
		exp.set(p.Partition, off, ok)
	})
	if len(seeks) > 0 && hold != nil {
		hold.rewind(cl, exp) // every partition: the handler drops what it held of all
		return nil
	}
	if len(seeks) > 0 {
		cl.SetOffsets(seeks)
		h.Reset()
	}
	written, err := apply(ctx, name, st, h, fetches, skip, hold)
	if err != nil {
		return err
	}
	for p, off := range written {
		exp.set(p, off, true)
	}
	return nil
}

// apply hands the records of every partition of fetches but those in skip
// to h and writes the batch; it returns the positions written. A holder
// whose records are due is handed, with no records, every partition it
// holds records of that fetches did not bring.
func apply(ctx context.Context, name string, st Store, h Handler, fetches kgo.Fetches, skip map[int32]bool, hold *holding) (map[int32]int64, error) {
	b := store.Batch{Projection: name, Positions: map[int32]int64{}}
	var err error
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if err != nil || len(p.Records) == 0 || skip[p.Partition] {
			return
		}
		if err = h.Handle(ctx, p.Partition, p.Records, &b); err != nil {
			return
		}
		next := p.Records[len(p.Records)-1].Offset + 1
		b.Positions[p.Partition] = next
		if hold != nil {
			hold.handed[p.Partition] = next
		}
	})
	if err == nil && hold != nil {
		if due, now := hold.due(), time.Now(); !due.IsZero() && !due.After(now) {
			hold.ticked = now
			for p := range hold.handed {
				if _, handed := b.Positions[p]; handed || skip[p] {
					continue
				}
				if _, held := hold.h.Held(p); !held {
					continue
				}
				if err = h.Handle(ctx, p, nil, &b); err != nil {
					break
				}
				b.Positions[p] = 0 // set below
			}
		}
		for p := range b.Positions {
			b.Positions[p] = hold.position(p)
		}
	}
	if err != nil {
		return nil, err
	}
	if len(b.Positions) == 0 {
		return nil, nil
	}
	if err := st.Apply(ctx, b); err != nil {
		return nil, err
	}
	return b.Positions, nil
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 6)
	return min(d, 3*time.Second)
}

// WaitApplied waits until projection has applied partition up to and
// including offset: the read-your-writes step of the REST API, which
// appends an event and answers with the state the projection built from it.
func WaitApplied(ctx context.Context, st PositionReader, projection string, partition int32, offset int64) error {
	for {
		pos, err := st.Positions(ctx, projection)
		if err == nil && pos[partition] > offset {
			return nil
		}
		select {
		case <-ctx.Done():
			return &domain.Error{Code: domain.CodeUnavailable, Msg: "the " + projection + " projection is behind", Err: ctx.Err()}
		case <-time.After(5 * time.Millisecond):
		}
	}
}
