// Package fanout is the projection that copies each message of a channel
// into the inbox of every member: the inbox topic, keyed by recipient, where
// each entry's offset becomes the recipient's position.
//
// It is exactly once. It consumes the channel topic in a consumer group
// through a kgo.GroupTransactSession: the inbox records, the changes to its
// own state and the group's offsets are committed in one Kafka transaction,
// or none of them are. Its state (each channel's members at the current
// point of the log) is kept in memory and written, as it changes, to a
// changelog topic partitioned like the channel topic; on assignment of a
// partition the state is restored by reading that changelog partition, the
// way Kafka Streams restores a state store. An aborted transaction (a
// rebalance in the middle of a batch) drops the in-memory state, which is
// restored from the changelog, where the aborted writes are invisible.
package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
)

// Name is the projection's name; its consumer group is Log.Group(Name).
const Name = "fanout"

// Config configures the fan-out.
type Config struct {
	// Log is the log's config. Required.
	Log eventlog.Config
	// Limits are the chat's rules, for domain.Admit. Default
	// domain.DefaultLimits().
	Limits domain.Limits
	// InstanceID makes the transactional id unique per process; two
	// processes with the same id fence each other. Default "0".
	InstanceID string
	// Logger; default discard.
	Logger *slog.Logger
	// Hooks are extra client hooks (kprom metrics).
	Hooks []kgo.Hook
}

// Projection is the fan-out. Run it once per process.
type Projection struct {
	cfg    Config
	topics eventlog.Topics
	log    *slog.Logger

	mu    sync.Mutex                                    // guards dirty
	dirty bool                                          // assignment changed: drop state
	state map[int32]map[domain.ChannelID]domain.Channel // owned by Run's goroutine
}

// New returns the fan-out.
func New(cfg Config) (*Projection, error) {
	if err := cfg.Log.Validate(); err != nil {
		return nil, err
	}
	if cfg.Limits == (domain.Limits{}) {
		cfg.Limits = domain.DefaultLimits()
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = "0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Projection{
		cfg: cfg, topics: cfg.Log.Topics(), log: cfg.Logger.With("projection", Name),
		state: map[int32]map[domain.ChannelID]domain.Channel{},
	}, nil
}

// Run consumes until ctx is cancelled and returns nil then.
func (p *Projection) Run(ctx context.Context) error {
	markDirty := func(context.Context, *kgo.Client, map[string][]int32) {
		p.mu.Lock()
		p.dirty = true
		p.mu.Unlock()
	}
	opts := append(p.cfg.Log.GroupOpts(Name, p.cfg.InstanceID),
		kgo.TransactionalID(p.cfg.Log.Group(Name)+"-"+p.cfg.InstanceID),
		kgo.TransactionTimeout(30*time.Second),
		kgo.ConsumeTopics(p.topics.Channels),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(markDirty),
		kgo.OnPartitionsRevoked(markDirty),
		kgo.OnPartitionsLost(markDirty),
		kgo.WithHooks(p.cfg.Hooks...),
	)
	sess, err := kgo.NewGroupTransactSession(p.cfg.Log.ClientOpts(opts...)...)
	if err != nil {
		return fmt.Errorf("fanout: session: %w", err)
	}
	defer sess.Close()

	for attempt := 0; ; {
		fetches := sess.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(t string, part int32, err error) {
			p.log.Warn("fetch", "topic", t, "partition", part, "err", err)
		})
		if fetches.NumRecords() == 0 {
			continue
		}
		committed, err := p.batch(ctx, sess, fetches)
		if err == nil && committed {
			attempt = 0
			continue
		}
		// Not committed: the transaction was aborted (a rebalance, or a
		// failure). The records will be fetched again from the committed
		// offsets; the state must go back to what the changelog says.
		p.dropState()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			p.log.Warn("batch aborted", "err", err)
			attempt++
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(min(50*time.Millisecond<<min(attempt, 6), 3*time.Second)):
			}
		}
	}
}

func (p *Projection) dropState() { clear(p.state) }

func (p *Projection) batch(ctx context.Context, sess *kgo.GroupTransactSession, fetches kgo.Fetches) (bool, error) {
	p.mu.Lock()
	if p.dirty {
		p.dirty = false
		p.dropState()
	}
	p.mu.Unlock()

	if err := sess.Begin(); err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	var (
		produceErr error
		errMu      sync.Mutex
		wg         sync.WaitGroup
	)
	produce := func(r *kgo.Record) {
		wg.Add(1)
		sess.Produce(ctx, r, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				errMu.Lock()
				produceErr = errors.Join(produceErr, err)
				errMu.Unlock()
			}
		})
	}
	var err error
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if err != nil {
			return
		}
		err = p.partition(ctx, fp.Partition, fp.Records, produce)
	})
	wg.Wait()
	if err == nil {
		err = produceErr
	}
	if err != nil {
		_, endErr := sess.End(ctx, kgo.TryAbort)
		return false, errors.Join(err, endErr)
	}
	return sess.End(ctx, kgo.TryCommit)
}

// partition fans out one partition's records, producing through produce.
func (p *Projection) partition(ctx context.Context, part int32, recs []*kgo.Record, produce func(*kgo.Record)) error {
	st, ok := p.state[part]
	if !ok {
		var err error
		if st, err = p.restore(ctx, part); err != nil {
			return err
		}
		p.state[part] = st
	}
	for _, rec := range recs {
		meta, ev, err := domain.Decode(rec.Value)
		if err != nil {
			p.log.Warn("skipping undecodable record", "partition", part, "offset", rec.Offset, "err", err)
			continue
		}
		id := domain.ChannelOf(ev)
		if id == "" {
			continue
		}
		c, ok := st[id]
		if !ok {
			c = domain.Channel{ID: id}
		}
		if !domain.Admit(c, ev, p.cfg.Limits) {
			continue
		}
		m, isMsg := ev.(domain.MessageSent)
		if !isMsg {
			c = domain.Evolve(c, ev, meta.Time)
			st[id] = c
			v, err := json.Marshal(c)
			if err != nil {
				return err
			}
			produce(&kgo.Record{Topic: p.topics.FanoutState, Key: []byte(id), Value: v})
			continue
		}
		for _, u := range c.Members {
			in := domain.InboxMessage{
				UserID: u, ChannelID: id, MessageID: m.MessageID, SenderID: m.SenderID,
				Text: m.Text, SentAt: meta.Time, ChannelPartition: part, ChannelOffset: rec.Offset,
			}
			r, err := eventlog.Record(p.topics.Inbox, string(u), in, domain.Meta{
				EventID: m.MessageID.String() + "." + string(u), Time: meta.Time,
			})
			if err != nil {
				return err
			}
			produce(r)
		}
	}
	return nil
}

// restore reads the changelog partition to its end (the last stable offset)
// and returns the channel states it holds.
func (p *Projection) restore(ctx context.Context, part int32) (map[domain.ChannelID]domain.Channel, error) {
	st := map[domain.ChannelID]domain.Channel{}
	cl, err := kgo.NewClient(p.cfg.Log.ClientOpts(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			p.topics.FanoutState: {part: kgo.NewOffset().AtStart()},
		}),
		kgo.FetchMaxWait(50*time.Millisecond),
	)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, p.topics.FanoutState)
	if err != nil {
		return nil, fmt.Errorf("fanout: changelog end: %w", err)
	}
	end, ok := ends.Lookup(p.topics.FanoutState, part)
	if !ok || end.Err != nil {
		return nil, fmt.Errorf("fanout: changelog end of partition %d: %v", part, end.Err)
	}
	if end.Offset == 0 {
		return st, nil
	}
	// Read until a record at or past end-1, or until the log has nothing
	// more to give: transaction markers take offsets but are never
	// returned, so the last readable record may sit below end-1.
	idle := 0
	for idle < 3 {
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if fs.NumRecords() == 0 {
			idle++
			continue
		}
		idle = 0
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			var c domain.Channel
			if err := json.Unmarshal(r.Value, &c); err == nil {
				st[domain.ChannelID(r.Key)] = c
			}
			if r.Offset >= end.Offset-1 {
				done = true
			}
		})
		if done {
			break
		}
	}
	p.log.Debug("restored", "partition", part, "channels", len(st), "end", strconv.FormatInt(end.Offset, 10))
	return st, nil
}
