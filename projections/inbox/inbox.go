// Package inbox is the projection that copies the inbox topic into the
// store, so a device that returns after the log's retention still gets what
// it missed, and a reconnecting device catches up without reading a whole
// Kafka partition.
//
// It keeps one entry per (user, message): the fan-out writes in Kafka
// transactions, but a broker that loses a transaction's state in a crash
// (the embedded broker under kill -9) may expose the records of an
// unfinished transaction that the fan-out then writes again. A copy at a
// later offset is dropped here, and so by every reader of the store.
//
// Whether an entry is a second copy is answered from the projection's
// memory of the entries it stored (package firstcopy), and from the store
// only where that memory cannot know: on Cassandra, a read per member per
// message was most of what the inbox cost the store.
package inbox

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/firstcopy"
	"github.com/evchat/evchat/projections/store"
)

// Name is the projection's name: its consumer group and position key.
const Name = "inbox"

// Store is what the projection reads while it decides.
type Store interface {
	InboxByMessage(ctx context.Context, u domain.UserID, epoch int32, id domain.MessageID) (store.InboxEntry, error)
}

// Projection implements projector.Handler. Entries are keyed by (user,
// epoch, offset), so applying one twice is harmless.
type Projection struct {
	st    Store
	epoch int32
	dec   *Decoded
	log   *slog.Logger
	now   func() time.Time

	mu        sync.Mutex
	began     time.Time                            // this run's start: New, or the last Reset
	recent    map[int32]*firstcopy.Memory[userMsg] // by partition; dropped by Reset
	maxRecent int
}

// New returns the projection for the inbox of the given epoch. It decodes
// records through dec, shared with the process's other readers of the
// inbox (nil: it decodes each itself).
func New(st Store, epoch int32, dec *Decoded, log *slog.Logger) *Projection {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Projection{st: st, epoch: epoch, dec: dec, log: log, now: time.Now, began: time.Now(),
		recent: map[int32]*firstcopy.Memory[userMsg]{}, maxRecent: firstcopy.Max}
}

// Reset drops what the projection remembers of the entries it handled: the
// projector calls it when it resumes from the store's positions (at a
// rebalance, after a failed apply). The run begins again then: whatever
// lies below the offsets it resumes from was in the log before.
func (p *Projection) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recent = map[int32]*firstcopy.Memory[userMsg]{}
	p.began = p.now()
}

type userMsg struct {
	u  domain.UserID
	id domain.MessageID
}

// Handle stores the inbox entries of one partition. It drops an entry of
// a message that has an entry at a lower offset already: it knows from
// memory (firstcopy), or looks up the store, store.Lookups at a time.
func (p *Projection) Handle(ctx context.Context, partition int32, recs []*kgo.Record, b *store.Batch) error {
	// The entries are a function of the log (a replay writes them again,
	// identically), so the store need not fsync them before the next
	// batch: see store.Batch.Replayable.
	b.Replayable = true
	type candidate struct {
		offset int64
		m      domain.InboxMessage
	}
	var cs []candidate
	seen := map[userMsg]bool{}
	for _, rec := range recs {
		m, ok, err := p.dec.Entry(rec)
		if err != nil {
			p.log.Warn("skipping undecodable record", "partition", partition, "offset", rec.Offset, "err", err)
			continue
		}
		if !ok {
			continue
		}
		if k := (userMsg{m.UserID, m.MessageID}); !seen[k] { // a second copy in the batch
			seen[k] = true
			cs = append(cs, candidate{rec.Offset, m})
		}
	}
	p.mu.Lock()
	r := p.recent[partition]
	if r == nil {
		r = firstcopy.New[userMsg](p.began, p.maxRecent)
		p.recent[partition] = r
	}
	first := make([]int64, len(cs)) // the offset of the first entry, or -1
	var ask []int                   // the candidates the store must answer
	for i, c := range cs {
		off, known := r.Lookup(userMsg{c.m.UserID, c.m.MessageID}, c.m.SentAt)
		if known {
			first[i] = off
		} else {
			ask = append(ask, i)
		}
	}
	p.mu.Unlock()
	err := store.EachParallel(len(ask), func(j int) error {
		i := ask[j]
		e, err := p.st.InboxByMessage(ctx, cs[i].m.UserID, p.epoch, cs[i].m.MessageID)
		first[i] = e.Offset
		if errors.Is(err, domain.ErrNotFound) {
			first[i] = -1
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, c := range cs {
		k := userMsg{c.m.UserID, c.m.MessageID}
		if first[i] >= 0 && first[i] != c.offset {
			p.log.Warn("dropping a second inbox copy", "user", c.m.UserID, "message", c.m.MessageID, "offset", c.offset, "first", first[i])
			r.Add(k, first[i], c.m.SentAt)
			continue
		}
		r.Add(k, c.offset, c.m.SentAt)
		b.Inbox = append(b.Inbox, store.InboxEntry{
			UserID: c.m.UserID, Epoch: p.epoch, Partition: partition, Offset: c.offset, Message: c.m,
		})
	}
	return nil
}
