package chat

import (
	"context"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/evchat/evchat/domain"
)

// leasedChannels holds the channel states a send's membership check may
// use without reading the store: each for Config.ChannelLease after the
// read that fetched it began. A removal is acknowledged only after that
// long (Service.RemoveMember waits it out past the store's applying it),
// so once the caller is told a member is gone, no gateway still holds a
// state that shows the member: every state read before the removal
// applied has expired, and every one read since shows it. A state is
// trusted only to allow: a send it refuses (not a member, a channel it
// does not show) is decided again on a fresh read, so a member added a
// moment ago can send at once.
//
// On the real backend every send read its channel from Cassandra before
// this (fresh.go shared a read between the sends of a moment: 44,244
// reads for 70,000 sends at 2,000 msg/s into 50 groups, 27.6 ms each on
// average, the Cassandra node saturated); now a gateway reads each
// channel it sends to about once a lease.
//
// The lease is a duration on each process's monotonic clock, so the
// guarantee holds across processes whatever their wall clocks say, as
// long as every gateway's lease is no longer than the API's (one
// setting, --channel-lease, for the whole deployment).
type leasedChannels struct {
	lease time.Duration
	fresh *freshReads[domain.ChannelID, domain.Channel]

	mu    sync.Mutex
	cache *lru.Cache[domain.ChannelID, leasedChannel]
}

type leasedChannel struct {
	c domain.Channel
	// until is when the lease ends: the lease after the moment the read
	// was asked for, which is no later than it began (freshReads).
	until time.Time
}

// leasedChannelsMax bounds the states held: a send to a channel past it
// reads the store, as every send did before leases.
const leasedChannelsMax = 100_000

func newLeasedChannels(lease time.Duration, fresh *freshReads[domain.ChannelID, domain.Channel]) *leasedChannels {
	c, err := lru.New[domain.ChannelID, leasedChannel](leasedChannelsMax)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return &leasedChannels{lease: lease, fresh: fresh, cache: c}
}

// get returns the channel's state: a leased one (leased true) if it holds
// one and fresh is false, else a fresh read, which it then holds for the
// lease.
func (l *leasedChannels) get(ctx context.Context, id domain.ChannelID, fresh bool) (c domain.Channel, leased bool, err error) {
	if l.lease > 0 && !fresh {
		if v, ok := l.cache.Get(id); ok && time.Now().Before(v.until) {
			return v.c, true, nil
		}
	}
	asked := time.Now()
	c, err = l.fresh.get(ctx, id)
	if err != nil || l.lease <= 0 {
		return c, false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Keep the later of two reads: a read that began earlier and ended
	// later must not replace a newer state.
	if v, ok := l.cache.Peek(id); !ok || v.until.Before(asked.Add(l.lease)) {
		l.cache.Add(id, leasedChannel{c: c, until: asked.Add(l.lease)})
	}
	return c, false, nil
}

// forget drops the state held for id: this process changed the channel.
func (l *leasedChannels) forget(id domain.ChannelID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cache.Remove(id)
}
