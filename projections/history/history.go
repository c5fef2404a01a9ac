// Package history is the projection that reads the channel topic and keeps
// each channel's state, its members and its messages in the store: the
// source of REST history pages and of the gateway's membership checks.
//
// It admits events with domain.Admit against the state at their position in
// the log, so events the gateway decided on stale state (a sender removed
// meanwhile) are dropped here exactly as the fan-out drops them. A message
// id seen before (a resend re-appended after a crash) is dropped too: every
// message appears in history once. Whether a message is stored already is
// answered from the projection's memory of the messages it stored
// (package firstcopy), and from the store only where that memory cannot
// know: a point read per message before.
package history

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/firstcopy"
	"github.com/evchat/evchat/projections/store"
)

// Name is the projection's name: its consumer group and position key.
const Name = "history"

// Store is what the projection reads while it decides.
type Store interface {
	Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error)
	MessageByID(ctx context.Context, ch domain.ChannelID, id domain.MessageID) (store.Message, error)
}

// Projection implements projector.Handler. It is used by one goroutine.
type Projection struct {
	st     Store
	limits domain.Limits
	log    *slog.Logger
	now    func() time.Time
	began  time.Time // this run's start: New, or the last Reset
	cache  map[domain.ChannelID]domain.Channel

	stored    map[int32]*firstcopy.Memory[chanMsg] // by partition
	maxStored int
}

type chanMsg struct {
	ch domain.ChannelID
	id domain.MessageID
}

// New returns the projection.
func New(st Store, limits domain.Limits, log *slog.Logger) *Projection {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Projection{st: st, limits: limits, log: log, now: time.Now, began: time.Now(), cache: map[domain.ChannelID]domain.Channel{},
		stored: map[int32]*firstcopy.Memory[chanMsg]{}, maxStored: firstcopy.Max}
}

// Reset drops the cached channel states and what the projection remembers
// of the messages it stored: the projector calls it when it resumes from
// the store's positions (at a rebalance, after a failed apply). The run
// begins again then: whatever lies below the offsets it resumes from was
// in the log before.
func (p *Projection) Reset() {
	clear(p.cache)
	clear(p.stored)
	p.began = p.now()
}

// Handle applies records of one partition of the channel topic.
func (p *Projection) Handle(ctx context.Context, partition int32, recs []*kgo.Record, b *store.Batch) error {
	// Messages are a function of the log (a replay writes them again,
	// identically), so the store need not fsync a batch of them alone;
	// one with channels or memberships it fsyncs all the same (see
	// store.Batch.Replayable).
	b.Replayable = true
	seen := map[domain.MessageID]bool{}
	changed := map[domain.ChannelID]bool{}
	type decoded struct {
		rec  *kgo.Record
		meta domain.Meta
		ev   domain.Event
	}
	evs := make([]decoded, 0, len(recs))
	for _, rec := range recs {
		meta, ev, err := domain.Decode(rec.Value)
		if err != nil {
			p.log.Warn("skipping undecodable record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
			continue
		}
		evs = append(evs, decoded{rec, meta, ev})
	}
	mem := p.stored[partition]
	if mem == nil {
		mem = firstcopy.New[chanMsg](p.began, p.maxStored)
		p.stored[partition] = mem
	}
	first := map[chanMsg]int64{} // the offset of a message's stored copy, or -1
	var ask []domain.MessageSent // the messages the store must answer
	for _, d := range evs {
		if m, ok := d.ev.(domain.MessageSent); ok {
			k := chanMsg{m.ChannelID, m.MessageID}
			if off, known := mem.Lookup(k, d.meta.Time); known {
				first[k] = off
			} else {
				ask = append(ask, m)
			}
		}
	}
	stored, err := storedMessages(ctx, p.st, ask)
	if err != nil {
		return err
	}
	for i, m := range ask {
		first[chanMsg{m.ChannelID, m.MessageID}] = stored[i]
	}
	for _, d := range evs {
		rec, meta, ev := d.rec, d.meta, d.ev
		id := domain.ChannelOf(ev)
		if id == "" {
			continue
		}
		c, err := p.channel(ctx, id)
		if err != nil {
			return err
		}
		if c.Version > rec.Offset {
			// A state from later in the log: the projection is being
			// rebuilt (replayed from the start). Start this channel
			// afresh; the store's row is overwritten as the replay moves.
			c = domain.Channel{ID: id}
		}
		if !domain.Admit(c, ev, p.limits) {
			p.log.Debug("event not admitted", "type", ev.EventType(), "channel", id, "offset", rec.Offset)
			continue
		}
		if m, ok := ev.(domain.MessageSent); ok {
			if seen[m.MessageID] {
				continue
			}
			k := chanMsg{m.ChannelID, m.MessageID}
			if off := first[k]; off >= 0 && off != rec.Offset {
				mem.Add(k, off, meta.Time)
				continue // a resend that reached the log twice
			}
			seen[m.MessageID] = true
			mem.Add(k, rec.Offset, meta.Time)
			b.Messages = append(b.Messages, store.Message{
				ChannelID: id, Offset: rec.Offset, MessageID: m.MessageID, SenderID: m.SenderID,
				DeviceID: m.DeviceID, ClientMsgID: m.ClientMsgID, Text: m.Text, SentAt: meta.Time,
			})
			continue
		}
		next := domain.EvolveAt(c, ev, meta.Time, rec.Offset)
		for _, u := range next.Members {
			if !c.IsMember(u) {
				b.Memberships = append(b.Memberships, store.Membership{ChannelID: id, UserID: u, Member: true})
			}
		}
		for _, u := range c.Members {
			if !next.IsMember(u) {
				b.Memberships = append(b.Memberships, store.Membership{ChannelID: id, UserID: u, Member: false})
			}
		}
		p.cache[id] = next
		changed[id] = true
	}
	for id := range changed {
		b.Channels = append(b.Channels, p.cache[id])
	}
	slices.SortFunc(b.Channels, func(a, b domain.Channel) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return nil
}

func (p *Projection) channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error) {
	if c, ok := p.cache[id]; ok {
		return c, nil
	}
	c, err := p.st.Channel(ctx, id)
	if errors.Is(err, domain.ErrNotFound) {
		c, err = domain.Channel{ID: id}, nil
	}
	if err != nil {
		return domain.Channel{}, err
	}
	p.cache[id] = c
	return c, nil
}

// storedMessages returns, for each of msgs, the offset at which the store
// holds it, or -1, looking them up store.Lookups at a time (the lookups do
// not depend on the channel states the batch builds).
func storedMessages(ctx context.Context, st Store, msgs []domain.MessageSent) ([]int64, error) {
	at := make([]int64, len(msgs))
	err := store.EachParallel(len(msgs), func(i int) error {
		m, err := st.MessageByID(ctx, msgs[i].ChannelID, msgs[i].MessageID)
		at[i] = m.Offset
		if errors.Is(err, domain.ErrNotFound) {
			at[i] = -1
			return nil
		}
		return err
	})
	return at, err
}
