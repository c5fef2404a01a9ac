// Package projector runs a projection whose state and log positions live in
// the store: it consumes one topic in a consumer group (the group only
// assigns partitions; offsets are never committed to Kafka), hands each
// fetched run of records to the projection's Handler, and writes the
// resulting state changes together with the next offsets in one store.Batch.
//
// On assignment it seeks each partition to the position the store holds, so
// a restart resumes exactly after the last batch it wrote, and a replay is a
// matter of deleting the positions and the state.
package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
					if o, ok := pos[p]; ok {
						ps[p] = kgo.NewOffset().At(o).WithEpoch(-1)
					} else {
						ps[p] = kgo.NewOffset().AtStart()
					}
				}
				m[t] = ps
			}
			return m, nil
		}),
		kgo.ClientID("evchat-"+cfg.Name),
	)
	cl, err := kgo.NewClient(cfg.Log.ClientOpts(opts...)...)
	if err != nil {
		return fmt.Errorf("projector %s: client: %w", cfg.Name, err)
	}
	defer cl.Close()

	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			log.Warn("fetch", "topic", t, "partition", p, "err", err)
		})
		if reset.Swap(false) {
			h.Reset()
		}
		for attempt := 0; ; attempt++ {
			err := apply(ctx, cfg.Name, st, h, fetches)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				cl.AllowRebalance()
				return nil
			}
			log.Warn("apply failed; retrying", "attempt", attempt, "err", err)
			h.Reset()
			select {
			case <-ctx.Done():
			case <-time.After(backoff(attempt)):
			}
		}
		cfg.Log.Lag.Observe(cfg.Name, fetches)
		cl.AllowRebalance()
	}
}

func apply(ctx context.Context, name string, st Store, h Handler, fetches kgo.Fetches) error {
	b := store.Batch{Projection: name, Positions: map[int32]int64{}}
	var err error
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if err != nil || len(p.Records) == 0 {
			return
		}
		if err = h.Handle(ctx, p.Partition, p.Records, &b); err != nil {
			return
		}
		b.Positions[p.Partition] = p.Records[len(p.Records)-1].Offset + 1
	})
	if err != nil {
		return err
	}
	if len(b.Positions) == 0 {
		return nil
	}
	return st.Apply(ctx, b)
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
