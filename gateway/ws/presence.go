package ws

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
)

// MembershipStore says who shares a channel with whom.
type MembershipStore interface {
	ChannelsOf(ctx context.Context, u domain.UserID) ([]domain.ChannelID, error)
	Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error)
}

// Presence reads the presence topic from its start into memory, answers
// who is online, and pushes each change (after its start) to the connected
// users who share a channel of at most FanoutMax members with the user.
// Larger channels fetch presence on demand (REST).
type Presence struct {
	cfg eventlog.Config
	hub *Hub
	st  MembershipStore
	max int
	log *slog.Logger

	mu    sync.RWMutex
	state map[domain.UserID]domain.PresenceChange
}

// NewPresence returns a presence tail; fanoutMax defaults to 100.
func NewPresence(cfg eventlog.Config, hub *Hub, st MembershipStore, fanoutMax int, log *slog.Logger) *Presence {
	if fanoutMax == 0 {
		fanoutMax = 100
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Presence{cfg: cfg, hub: hub, st: st, max: fanoutMax, log: log, state: map[domain.UserID]domain.PresenceChange{}}
}

// Of returns a user's latest presence; ok is false when the user has never
// been online.
func (p *Presence) Of(u domain.UserID) (domain.PresenceChange, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c, ok := p.state[u]
	return c, ok
}

// Run tails until ctx is cancelled and returns nil then.
func (p *Presence) Run(ctx context.Context) error {
	topic := p.cfg.Topics().Presence
	cl, err := kgo.NewClient(p.cfg.ClientOpts(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("ws: presence end offsets: %w", err)
	}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachRecord(func(r *kgo.Record) {
			_, ev, err := domain.Decode(r.Value)
			if err != nil {
				return
			}
			ch, ok := ev.(domain.PresenceChanged)
			if !ok {
				return
			}
			p.mu.Lock()
			p.state[ch.UserID] = domain.PresenceChange(ch)
			p.mu.Unlock()
			if end, ok := ends.Lookup(r.Topic, r.Partition); ok && r.Offset >= end.Offset {
				p.push(ctx, domain.PresenceChange(ch))
			}
		})
	}
}

// push sends a change to the users who share a small channel with its user.
func (p *Presence) push(ctx context.Context, ch domain.PresenceChange) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, err := p.st.ChannelsOf(ctx, ch.UserID)
	if err != nil {
		p.log.Warn("presence fan-out", "user", ch.UserID, "err", err)
		return
	}
	online, last := ch.Online, ch.LastActiveAt
	f := ServerFrame{Type: TypePresence, UserID: ch.UserID, Online: &online, LastActive: &last}
	sent := map[domain.UserID]bool{ch.UserID: true}
	for _, id := range ids {
		c, err := p.st.Channel(ctx, id)
		if err != nil || len(c.Members) > p.max {
			continue
		}
		for _, m := range c.Members {
			if sent[m] {
				continue
			}
			sent[m] = true
			for _, conn := range p.hub.conns(m) {
				conn.send(f)
			}
		}
	}
}
