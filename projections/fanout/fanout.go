// Package fanout is the projection that gives each message of a channel an
// entry in the inbox of every member: the inbox topic, keyed by recipient,
// where each entry's offset becomes the recipient's position. An entry
// points at the message and does not copy its text (inbox.message version
// 2): a message into a group of 100 is written once, not 100 times.
//
// It runs on txproc, so it is exactly once: the inbox records, the changes
// to its state (each channel's members at the current point of the log,
// kept in a changelog topic) and its consumer offsets commit in one Kafka
// transaction, or none of them do.
//
// A channel it holds no state for is a channel that does not exist (yet),
// and its messages are dropped by domain.Admit; that is sound only because
// absence of state is knowledge here. channel.created is the first event of
// a channel in its partition of the channel topic, and its state change
// commits in the same transaction as the input offset past it, so any
// committed input beyond a channel's creation has the channel's state in
// the changelog. txproc hands the fan-out a partition's records only after
// restoring that partition's changelog to its end (a restore that cannot
// finish fails, and the batch commits nothing), so the fan-out never
// commits input offsets for a channel it has no state for without knowing
// the channel does not exist.
package fanout

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/txproc"
)

// Name is the projection's name; its consumer group, per inbox epoch, is
// Log.Group(eventlog.Epoched(Name, epoch)).
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
}

// Projection is the fan-out's logic: a txproc.Handler.
type Projection struct {
	cfg    Config
	topics eventlog.Topics
	log    *slog.Logger
	state  map[int32]map[domain.ChannelID]domain.Channel
}

// New returns the fan-out.
func New(cfg Config) (*Projection, error) {
	if err := cfg.Log.Validate(); err != nil {
		return nil, err
	}
	if cfg.Limits == (domain.Limits{}) {
		cfg.Limits = domain.DefaultLimits()
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
	return txproc.Run(ctx, txproc.Config{
		Name: eventlog.Epoched(Name, p.cfg.Log.Epoch()), Input: p.topics.Channels, Changelog: p.topics.FanoutState,
		Log: p.cfg.Log, Instance: p.cfg.InstanceID, Logger: p.cfg.Logger,
	}, p)
}

// Drop forgets every channel's state.
func (p *Projection) Drop() { clear(p.state) }

func (p *Projection) part(n int32) map[domain.ChannelID]domain.Channel {
	st, ok := p.state[n]
	if !ok {
		st = map[domain.ChannelID]domain.Channel{}
		p.state[n] = st
	}
	return st
}

// Restore loads one channel's state from the changelog.
func (p *Projection) Restore(n int32, key, value []byte) {
	var c domain.Channel
	if err := json.Unmarshal(value, &c); err != nil {
		p.log.Warn("skipping undecodable state", "partition", n, "key", string(key), "err", err)
		return
	}
	p.part(n)[domain.ChannelID(key)] = c
}

// Process fans out one record of the channel topic.
func (p *Projection) Process(_ context.Context, n int32, rec *kgo.Record, out *txproc.Out) error {
	st := p.part(n)
	meta, ev, err := domain.Decode(rec.Value)
	if err != nil {
		p.log.Warn("skipping undecodable record", "partition", n, "offset", rec.Offset, "err", err)
		return nil
	}
	id := domain.ChannelOf(ev)
	if id == "" {
		return nil
	}
	c, ok := st[id]
	if !ok {
		c = domain.Channel{ID: id}
	}
	if !domain.Admit(c, ev, p.cfg.Limits) {
		return nil
	}
	m, isMsg := ev.(domain.MessageSent)
	if !isMsg {
		c = domain.Evolve(c, ev, meta.Time)
		st[id] = c
		v, err := json.Marshal(c)
		if err != nil {
			return err
		}
		out.SaveState(n, []byte(id), v)
		return nil
	}
	// Each entry points at the message (partition n, this offset); the
	// text is written once, here in the channel topic and by history.
	for _, u := range c.Members {
		in := domain.InboxMessage{
			UserID: u, ChannelID: id, MessageID: m.MessageID, SenderID: m.SenderID,
			SentAt: meta.Time, ChannelPartition: n, ChannelOffset: rec.Offset,
		}
		r, err := eventlog.Record(p.topics.Inbox, string(u), in, domain.Meta{
			EventID: m.MessageID.String() + "." + string(u), Time: meta.Time,
		})
		if err != nil {
			return err
		}
		out.Emit(r)
	}
	return nil
}
