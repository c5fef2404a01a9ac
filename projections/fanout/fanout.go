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
	"strconv"
	"strings"

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
	// done holds, per partition and channel, the offset of the last
	// message fanned out in a committed transaction (changelog key
	// progressPrefix+channel id).
	done map[int32]map[domain.ChannelID]int64
}

// progressPrefix starts the changelog key of a channel's progress; channel
// ids start with a letter, never with it.
const progressPrefix = "o/"

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
		done:  map[int32]map[domain.ChannelID]int64{},
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
func (p *Projection) Drop() {
	clear(p.state)
	clear(p.done)
}

func (p *Projection) progress(n int32) map[domain.ChannelID]int64 {
	d, ok := p.done[n]
	if !ok {
		d = map[domain.ChannelID]int64{}
		p.done[n] = d
	}
	return d
}

func (p *Projection) part(n int32) map[domain.ChannelID]domain.Channel {
	st, ok := p.state[n]
	if !ok {
		st = map[domain.ChannelID]domain.Channel{}
		p.state[n] = st
	}
	return st
}

// Restore loads one channel's state, or its progress, from the changelog.
func (p *Projection) Restore(n int32, key, value []byte) {
	if id, ok := strings.CutPrefix(string(key), progressPrefix); ok {
		off, err := strconv.ParseInt(string(value), 10, 64)
		if err != nil {
			p.log.Warn("skipping undecodable progress", "partition", n, "key", string(key), "err", err)
			return
		}
		p.progress(n)[domain.ChannelID(id)] = off
		return
	}
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
		c = domain.EvolveAt(c, ev, meta.Time, rec.Offset)
		st[id] = c
		v, err := json.Marshal(c)
		if err != nil {
			return err
		}
		out.SaveState(n, []byte(id), v)
		return nil
	}
	// A message at or below the channel's progress was fanned out in a
	// transaction that committed, though the input offsets it committed
	// with did not survive (the embedded broker applies them after the
	// transaction's markers, so a kill between the two loses them): the
	// inbox has its entries already.
	if off, ok := p.progress(n)[id]; ok && rec.Offset <= off {
		p.log.Debug("message fanned out already", "partition", n, "offset", rec.Offset, "channel", id)
		return nil
	}
	// Each entry points at the message (partition n, this offset); the
	// text is written once, here in the channel topic and by history.
	eventPrefix := m.MessageID.String() + "."
	for _, u := range c.Members {
		in := domain.InboxMessage{
			UserID: u, ChannelID: id, MessageID: m.MessageID, SenderID: m.SenderID,
			SentAt: meta.Time, ChannelPartition: n, ChannelOffset: rec.Offset,
		}
		r, err := eventlog.Record(p.topics.Inbox, string(u), in, domain.Meta{
			EventID: eventPrefix + string(u), Time: meta.Time,
		})
		if err != nil {
			return err
		}
		out.Emit(r)
	}
	p.progress(n)[id] = rec.Offset
	out.SaveState(n, []byte(progressPrefix+string(id)), strconv.AppendInt(nil, rec.Offset, 10))
	return nil
}
