package ws

import (
	"context"
	"log/slog"
	"sync"
	"time"

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
//
// When the presence epoch switches (Switch, then Run again), it reads the
// new topic from its start while answering from what it has, then takes
// the new state at once and pushes the changes between the two: a rebuild
// shows no flaps, only what it corrected.
type Presence struct {
	hub *Hub
	st  MembershipStore
	max int
	log *slog.Logger

	mu     sync.RWMutex
	cfg    eventlog.Config
	state  map[domain.UserID]domain.PresenceChange
	loaded bool // a state has been read to its end once
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

// Switch makes the next Run read cfg's presence topic (a new epoch).
func (p *Presence) Switch(cfg eventlog.Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg = cfg
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
	p.mu.RLock()
	cfg := p.cfg
	p.mu.RUnlock()
	topic := cfg.Topics().Presence
	// Read the topic to its end into a fresh state, then tail it from
	// there. A read that fails starts again (answering from the old
	// state meanwhile): a state read in part would show users offline.
	var (
		fresh map[domain.UserID]domain.PresenceChange
		ends  map[int32]int64
		err   error
	)
	for attempt := 0; ; attempt++ {
		fresh = map[domain.UserID]domain.PresenceChange{}
		ends, err = eventlog.ReadToEnd(ctx, cfg, topic, eventlog.ReadRange{}, func(r *kgo.Record) {
			if ch, ok := decodePresence(r); ok {
				fresh[ch.UserID] = ch
			}
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		p.log.Warn("reading presence", "topic", topic, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(100*time.Millisecond<<min(attempt, 5), 3*time.Second)):
		}
	}
	from := map[int32]kgo.Offset{}
	for part, end := range ends {
		from[part] = kgo.NewOffset().At(end)
	}
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	p.mu.Lock()
	old, wasLoaded := p.state, p.loaded
	p.state, p.loaded = fresh, true
	p.mu.Unlock()
	if wasLoaded {
		for u, ch := range fresh {
			if o, ok := old[u]; !ok || o.Online != ch.Online {
				p.push(ctx, ch)
			}
		}
	}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachRecord(func(r *kgo.Record) {
			ch, ok := decodePresence(r)
			if !ok {
				return
			}
			p.mu.Lock()
			p.state[ch.UserID] = ch
			p.mu.Unlock()
			p.push(ctx, ch)
		})
	}
}

func decodePresence(r *kgo.Record) (domain.PresenceChange, bool) {
	_, ev, err := domain.Decode(r.Value)
	if err != nil {
		return domain.PresenceChange{}, false
	}
	ch, ok := ev.(domain.PresenceChanged)
	return domain.PresenceChange(ch), ok
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
