// Package presence is the projection that turns logins, logouts and
// heartbeats (the session topic) into online/offline changes on the
// presence topic.
//
// It decides from event time only, never from the wall clock, so a replay
// of the same log gives the same changes at the same times. The absence of
// heartbeats is noticed through clock.ticked events: the projection itself
// appends one to every session partition it owns each second, so the log
// carries the passing of time. Each partition has a presence clock, the
// latest event time seen in it; at each tick, every user whose devices have
// all been silent for the window goes offline, last active at the last
// heartbeat.
//
// It runs on txproc: presence changes, its state (each user's devices and
// the partition's clock, in a changelog topic) and its consumer offsets
// commit together.
package presence

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/txproc"
)

// Name is the projection's name; its consumer group, per presence epoch, is
// Log.Group(eventlog.Epoched(Name, epoch)).
const Name = "presence"

// clockKey is the changelog key of a partition's presence clock; user ids
// are decimal, so it never collides.
const clockKey = "~clock"

// Config configures the projection.
type Config struct {
	// Log is the log's config. Required.
	Log eventlog.Config
	// Window is how long a device stays online after its last heartbeat.
	// Default 30s.
	Window time.Duration
	// Tick is how often the clock of each owned partition is advanced.
	// Default 1s; negative turns the ticker off (tests write the ticks).
	Tick time.Duration
	// Instance identifies this process. Default "0".
	Instance string
	// Logger; default discard.
	Logger *slog.Logger
}

// Projection is the presence logic: a txproc.Handler.
type Projection struct {
	cfg    Config
	topics eventlog.Topics
	log    *slog.Logger
	parts  map[int32]*partState // owned by the txproc goroutine

	mu    sync.Mutex
	owned []int32 // partitions to tick
}

type partState struct {
	clock time.Time
	users map[domain.UserID]domain.Presence
}

// New returns the projection.
func New(cfg Config) (*Projection, error) {
	if err := cfg.Log.Validate(); err != nil {
		return nil, err
	}
	if cfg.Window == 0 {
		cfg.Window = domain.DefaultPresenceWindow
	}
	if cfg.Tick == 0 {
		cfg.Tick = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Projection{cfg: cfg, topics: cfg.Log.Topics(), log: cfg.Logger.With("projection", Name),
		parts: map[int32]*partState{}}, nil
}

// Run processes and ticks until ctx is cancelled; it returns nil then.
func (p *Projection) Run(ctx context.Context) error {
	ticker, err := kgo.NewClient(p.cfg.Log.ClientOpts(kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		return err
	}
	defer ticker.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if p.cfg.Tick > 0 {
		wg.Go(func() { p.tick(ctx, ticker) })
	}
	return txproc.Run(ctx, txproc.Config{
		Name: eventlog.Epoched(Name, eventlog.EpochOf(p.cfg.Log, domain.OutputPresence)), Input: p.topics.Sessions, Changelog: p.topics.PresenceState,
		Log: p.cfg.Log, Instance: p.cfg.Instance, Logger: p.cfg.Logger,
		OnAssigned: func(ps []int32) {
			p.mu.Lock()
			p.owned = append([]int32(nil), ps...)
			p.mu.Unlock()
		},
	}, p)
}

// tick appends clock.ticked to every owned partition each Tick.
func (p *Projection) tick(ctx context.Context, cl *kgo.Client) {
	t := time.NewTicker(p.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.mu.Lock()
			owned := p.owned
			p.mu.Unlock()
			for _, part := range owned {
				rec, err := eventlog.Record(p.topics.Sessions, "", domain.ClockTicked{Partition: part},
					domain.Meta{EventID: "tick", Time: now})
				if err != nil {
					continue
				}
				rec.Key, rec.Partition = nil, part
				cl.Produce(ctx, rec, nil)
			}
		}
	}
}

// Drop forgets all state.
func (p *Projection) Drop() { clear(p.parts) }

func (p *Projection) part(n int32) *partState {
	ps, ok := p.parts[n]
	if !ok {
		ps = &partState{users: map[domain.UserID]domain.Presence{}}
		p.parts[n] = ps
	}
	return ps
}

// Restore loads a user's presence or the partition's clock.
func (p *Projection) Restore(n int32, key, value []byte) {
	ps := p.part(n)
	if string(key) == clockKey {
		_ = ps.clock.UnmarshalText(value)
		return
	}
	if value == nil {
		delete(ps.users, domain.UserID(key))
		return
	}
	var pr domain.Presence
	if err := json.Unmarshal(value, &pr); err == nil {
		ps.users[domain.UserID(key)] = pr
	}
}

// Process applies one record of the session topic.
func (p *Projection) Process(_ context.Context, n int32, rec *kgo.Record, out *txproc.Out) error {
	meta, ev, err := domain.Decode(rec.Value)
	if err != nil {
		p.log.Warn("skipping undecodable record", "partition", n, "offset", rec.Offset, "err", err)
		return nil
	}
	ps := p.part(n)
	if meta.Time.After(ps.clock) {
		ps.clock = meta.Time
	}
	switch ev := ev.(type) {
	case domain.ClockTicked:
		if b, err := ps.clock.MarshalText(); err == nil {
			out.SaveState(n, []byte(clockKey), b)
		}
		// Sorted, so a replay emits the same changes in the same order.
		for _, u := range slices.Sorted(maps.Keys(ps.users)) {
			pr := ps.users[u]
			next, ch := domain.ExpirePresence(pr, ps.clock, p.cfg.Window)
			if ch != nil {
				p.emit(*ch, out)
			}
			if !next.Online {
				// An offline user needs no state: forget it.
				delete(ps.users, u)
				out.SaveState(n, []byte(u), nil)
			} else if len(next.Devices) != len(pr.Devices) {
				ps.users[u] = next
				p.save(n, next, out)
			}
		}
	case domain.DeviceLoggedIn, domain.DeviceHeartbeat, domain.DeviceLoggedOut:
		u := userOf(ev)
		next, ch := domain.ApplyPresence(ps.users[u], ev, meta.Time, p.cfg.Window)
		if ch != nil {
			p.emit(*ch, out)
		}
		if next.Online {
			ps.users[u] = next
			p.save(n, next, out)
		} else if _, ok := ps.users[u]; ok {
			delete(ps.users, u)
			out.SaveState(n, []byte(u), nil)
		}
	}
	return nil
}

func userOf(ev domain.Event) domain.UserID {
	switch ev := ev.(type) {
	case domain.DeviceLoggedIn:
		return ev.UserID
	case domain.DeviceHeartbeat:
		return ev.UserID
	case domain.DeviceLoggedOut:
		return ev.UserID
	}
	return ""
}

func (p *Projection) save(n int32, pr domain.Presence, out *txproc.Out) {
	if b, err := json.Marshal(pr); err == nil {
		out.SaveState(n, []byte(pr.UserID), b)
	}
}

func (p *Projection) emit(ch domain.PresenceChange, out *txproc.Out) {
	rec, err := eventlog.Record(p.topics.Presence, string(ch.UserID), domain.PresenceChanged(ch),
		domain.Meta{EventID: string(ch.UserID) + "@" + ch.At.UTC().Format(time.RFC3339Nano), Time: ch.At})
	if err != nil {
		return
	}
	out.Emit(rec)
}
