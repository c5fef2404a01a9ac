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
// memory of the entries it handled (recent), and from the store only where
// that memory cannot know: on Cassandra, a read per member per message
// was most of what the inbox cost the store.
package inbox

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
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
	recent    map[int32]*recent // by partition; dropped by Reset
	maxRecent int
}

// New returns the projection for the inbox of the given epoch. It decodes
// records through dec, shared with the process's other readers of the
// inbox (nil: it decodes each itself).
func New(st Store, epoch int32, dec *Decoded, log *slog.Logger) *Projection {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Projection{st: st, epoch: epoch, dec: dec, log: log, now: time.Now, recent: map[int32]*recent{}, maxRecent: MaxRecent}
}

// Reset drops what the projection remembers of the entries it handled.
func (p *Projection) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recent = map[int32]*recent{}
}

// SkewMargin bounds how far the clocks of the gateways (which stamp a
// message's time sent) and of this projection's process may disagree:
// an entry sent this much later than the partition's run began has no
// copy the run did not handle (see recent).
const SkewMargin = 10 * time.Second

// MaxRecent bounds the entries remembered per partition (some 100 bytes
// each).
const MaxRecent = 1 << 16

// recent remembers the entries one partition's run (since the projection
// last began it, at start) has handled, so that the question every entry
// asks, "is there an earlier copy of this message in this inbox?", is
// answered without a store read. The store is read only when the answer
// may lie outside the memory:
//   - an entry below the run's first offset was written before start, so
//     a message sent (by its gateway's clock) at least SkewMargin after
//     start has no copy there;
//   - an entry forgotten to keep the memory bounded was of a message sent
//     at or before horizon, so a message sent after it was never
//     forgotten.
//
// Otherwise (the first SkewMargin of a run, a message sent long ago) the
// store answers, as it did for every entry before: on Cassandra, that
// was one read per member per message.
type recent struct {
	start   time.Time
	horizon time.Time         // the latest time sent among those forgotten
	first   map[userMsg]int64 // the lowest offset handled
	order   []remembered      // ring, oldest at next once full
	next    int
	max     int
}

type remembered struct {
	k    userMsg
	sent time.Time
}

func newRecent(start time.Time, max int) *recent {
	return &recent{start: start, first: map[userMsg]int64{}, max: max}
}

// lookup returns the lowest offset of k's entries that the memory knows
// (-1: none), or known false when the store must say.
func (r *recent) lookup(k userMsg, sent time.Time) (offset int64, known bool) {
	if off, ok := r.first[k]; ok {
		return off, true
	}
	if sent.After(r.horizon) && !sent.Before(r.start.Add(SkewMargin)) {
		return -1, true
	}
	return 0, false
}

// add remembers that k has an entry at offset, forgetting the oldest
// remembered message when full.
func (r *recent) add(k userMsg, offset int64, sent time.Time) {
	if old, ok := r.first[k]; ok {
		r.first[k] = min(old, offset)
		return
	}
	if len(r.order) < r.max {
		r.order = append(r.order, remembered{k, sent})
	} else {
		gone := r.order[r.next]
		delete(r.first, gone.k)
		if gone.sent.After(r.horizon) {
			r.horizon = gone.sent
		}
		r.order[r.next] = remembered{k, sent}
		r.next = (r.next + 1) % r.max
	}
	r.first[k] = offset
}

type userMsg struct {
	u  domain.UserID
	id domain.MessageID
}

// Handle stores the inbox entries of one partition. It drops an entry of
// a message that has an entry at a lower offset already: it knows from
// memory (recent), or looks up the store, store.Lookups at a time.
func (p *Projection) Handle(ctx context.Context, partition int32, recs []*kgo.Record, b *store.Batch) error {
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
		r = newRecent(p.now(), p.maxRecent)
		p.recent[partition] = r
	}
	first := make([]int64, len(cs)) // the offset of the first entry, or -1
	var ask []int                   // the candidates the store must answer
	for i, c := range cs {
		off, known := r.lookup(userMsg{c.m.UserID, c.m.MessageID}, c.m.SentAt)
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
			r.add(k, first[i], c.m.SentAt)
			continue
		}
		r.add(k, c.offset, c.m.SentAt)
		b.Inbox = append(b.Inbox, store.InboxEntry{
			UserID: c.m.UserID, Epoch: p.epoch, Partition: partition, Offset: c.offset, Message: c.m,
		})
	}
	return nil
}
