// Package bodies resolves the text of inbox entries.
//
// An inbox entry (domain.InboxMessage, version 2) points at its message
// (channel, message id, the partition and offset of its message.sent) and
// does not copy its text: a message into a group of 100 is written once,
// to the channel topic and to history, not 100 times. Whoever shows an
// entry to a person (the gateway's live delivery and syncs, push) asks a
// Resolver for the text.
//
// A Resolver answers from a bounded cache of recent messages, filled with
// what the process itself sees (the messages its gateway appended, and
// every text it looked up), and otherwise from history, a batch of lookups
// at a time, one per message however many of its entries ask, and one
// range read for a run of messages of one channel (a burst). An entry can
// reach a reader before history has stored its message: the fan-out and
// history read the channel topic independently. So a lookup first waits
// until history's position in the message's partition
// is past the message's offset (history stores every admitted message, the
// same ones the fan-out admits), and looks up only then. Waiting on history
// rather than reading the channel topic at the entry's offset keeps one
// place where a message lives, keeps readers off the log's fetch path, and
// costs nothing when history is ahead, as it nearly always is. The wait is
// bounded by history's progress, not by wall time (see Config.Wait): a
// history that has stopped becomes an error the caller handles (the
// gateway's live delivery, which bounds its wait by a few seconds, catches
// the connection up from the store; a sync fails and the device syncs
// again; push retries its batch), never a guess.
package bodies

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/store"
)

// Store is what resolving reads: history's messages and positions.
type Store interface {
	Positions(ctx context.Context, projection string) (map[int32]int64, error)
	MessagesAfter(ctx context.Context, ch domain.ChannelID, after int64, limit int) ([]store.Message, error)
	MessageByID(ctx context.Context, ch domain.ChannelID, id domain.MessageID) (store.Message, error)
}

// Config configures a Resolver. Zero fields take the defaults written
// beside them.
type Config struct {
	// CacheBytes bounds the texts kept of recent messages, counting each
	// text's bytes and entryOverhead. Default 64 MiB; the oldest go first.
	CacheBytes int64
	// Wait is how long Resolve waits for history to store the messages it
	// is asked for while history makes no progress (see lookUp); a caller
	// that must not wait that long bounds Resolve with its context.
	// Default 2 min, like the gateway's SyncStall: history's position
	// moves once per batch it applies.
	Wait time.Duration
}

// Defaults of Config.
const (
	DefaultCacheBytes = 64 << 20
	DefaultWait       = 2 * time.Minute
)

// entryOverhead is what a cached text costs besides its bytes: the map
// entry, the string header, the id in the eviction queue.
const entryOverhead = 64

// Validate refuses negative bounds.
func (c Config) Validate() error {
	if c.CacheBytes < 0 {
		return fmt.Errorf("bodies: cache of %d bytes < 0", c.CacheBytes)
	}
	if c.Wait < 0 {
		return fmt.Errorf("bodies: wait %s < 0", c.Wait)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.CacheBytes == 0 {
		c.CacheBytes = DefaultCacheBytes
	}
	if c.Wait == 0 {
		c.Wait = DefaultWait
	}
	return c
}

// Resolver fills in the text of inbox entries. Safe for concurrent use.
type Resolver struct {
	cfg Config
	st  Store

	mu    sync.Mutex // guards the cache
	texts map[domain.MessageID]string
	order []domain.MessageID // insertion order, oldest first
	bytes int64

	hits, lookups atomic.Int64
}

// New returns a Resolver over st.
func New(cfg Config, st Store) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Resolver{cfg: cfg.withDefaults(), st: st, texts: map[domain.MessageID]string{}}, nil
}

// Put remembers the text of message id: a message this process saw (its
// gateway appended it). A message id has one text, whoever appended it.
func (r *Resolver) Put(id domain.MessageID, text string) {
	if text == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.texts[id]; ok {
		return
	}
	r.texts[id] = text
	r.order = append(r.order, id)
	r.bytes += int64(len(text)) + entryOverhead
	for r.bytes > r.cfg.CacheBytes && len(r.order) > 0 {
		old := r.order[0]
		r.order = r.order[1:]
		r.bytes -= int64(len(r.texts[old])) + entryOverhead
		delete(r.texts, old)
	}
}

func (r *Resolver) cached(id domain.MessageID) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.texts[id]
	return t, ok
}

// Stats returns how many texts were found in the cache, and how many reads
// of history (a range of a channel's messages, or one message) were made,
// since the Resolver was made.
func (r *Resolver) Stats() (hits, lookups int64) { return r.hits.Load(), r.lookups.Load() }

// wanted is one message Resolve looks up, and the entries that need it.
type wanted struct {
	m    domain.InboxMessage
	at   []int
	text string
}

// Resolve fills in the text of every entry of ms that has none (entries
// of version 1 carry theirs), from the cache or from history, waiting for
// history to store what it has not yet while history makes progress (see
// lookUp). On an error (history stopped, the store failed, ctx ended)
// the entries it could resolve are filled in and the others are left
// without text.
func (r *Resolver) Resolve(ctx context.Context, ms []domain.InboxMessage) error {
	var want []*wanted
	byID := map[domain.MessageID]*wanted{}
	for i := range ms {
		if ms[i].Resolved() {
			continue
		}
		id := ms[i].MessageID
		if w, ok := byID[id]; ok {
			w.at = append(w.at, i)
			continue
		}
		if t, ok := r.cached(id); ok {
			r.hits.Add(1)
			ms[i].Text = t
			byID[id] = &wanted{m: ms[i], at: nil, text: t}
			continue
		}
		w := &wanted{m: ms[i], at: []int{i}}
		byID[id] = w
		want = append(want, w)
	}
	// Copies of a cached message later in ms.
	for _, w := range byID {
		if w.text != "" {
			for _, i := range w.at {
				ms[i].Text = w.text
			}
		}
	}
	if len(want) == 0 {
		return nil
	}
	err := r.lookUp(ctx, want)
	for _, w := range want {
		if w.text == "" {
			continue
		}
		for _, i := range w.at {
			ms[i].Text = w.text
		}
	}
	return err
}

// read looks up the texts of ready, messages history has passed: per
// channel, a range read from the lowest offset asked for up to the highest
// (at most rangeLimit messages; the channel's messages in between, asked
// for or not, come with them), then again from the lowest offset still
// unresolved, while a read resolves some; what a range read does not find at the
// offset its entry names (history kept the first copy of a message id at
// another offset) is looked up by id.
func (r *Resolver) read(ctx context.Context, ready []*wanted) error {
	byChannel := map[domain.ChannelID][]*wanted{}
	var channels []domain.ChannelID
	for _, w := range ready {
		if byChannel[w.m.ChannelID] == nil {
			channels = append(channels, w.m.ChannelID)
		}
		byChannel[w.m.ChannelID] = append(byChannel[w.m.ChannelID], w)
	}
	return store.EachParallel(len(channels), func(i int) error {
		ws := byChannel[channels[i]]
		slices.SortFunc(ws, func(a, b *wanted) int { return cmp.Compare(a.m.ChannelOffset, b.m.ChannelOffset) })
		for len(ws) > 0 {
			if len(ws) == 1 {
				return r.byID(ctx, ws[0])
			}
			// The channel has at most span messages from the first
			// offset to the last (the partition's other channels take
			// offsets too).
			span := ws[len(ws)-1].m.ChannelOffset - ws[0].m.ChannelOffset + 1
			ms, err := r.st.MessagesAfter(ctx, ws[0].m.ChannelID, ws[0].m.ChannelOffset-1, int(min(span, rangeLimit)))
			if err != nil {
				return err
			}
			r.lookups.Add(1)
			byID := make(map[domain.MessageID]string, len(ms))
			for _, m := range ms {
				byID[m.MessageID] = m.Text
				r.Put(m.MessageID, m.Text)
			}
			rest := ws[:0]
			for _, w := range ws {
				if t, ok := byID[w.m.MessageID]; ok {
					w.text = t
				} else {
					rest = append(rest, w)
				}
			}
			if len(rest) == len(ws) { // nothing where the entries point
				return r.byID(ctx, ws[0])
			}
			ws = rest
		}
		return nil
	})
}

// rangeLimit bounds the messages of one range read.
const rangeLimit = 500

// byID looks w up by message id; not found leaves it unresolved.
func (r *Resolver) byID(ctx context.Context, w *wanted) error {
	msg, err := r.st.MessageByID(ctx, w.m.ChannelID, w.m.MessageID)
	if errors.Is(err, domain.ErrNotFound) {
		// Past the offset yet not there: a store that lost writes
		// history applies again. Waited for too.
		return nil
	}
	if err != nil {
		return err
	}
	r.lookups.Add(1)
	w.text = msg.Text
	r.Put(w.m.MessageID, msg.Text)
	return nil
}

// lookUp finds the texts of want in history, waiting for history to store
// them: each round reads history's positions and reads the messages whose
// partition history has passed; the others wait for the next round. It
// waits as long as history makes progress (its position in a partition
// asked for moves on, or a text is found) and fails when history has made
// none for Config.Wait: history applies a burst in batches, and one batch
// of tens of thousands of messages takes a while on a loaded machine. Each
// round's store calls are bounded by Config.Wait too.
func (r *Resolver) lookUp(ctx context.Context, want []*wanted) error {
	pause := time.Millisecond
	var (
		lastErr error
		moved   = time.Now()
		seen    = map[int32]int64{}
	)
	for {
		rctx, cancel := context.WithTimeout(ctx, r.cfg.Wait)
		pos, err := r.st.Positions(rctx, history.Name)
		if err != nil {
			lastErr = err
		}
		var ready []*wanted
		for _, w := range want {
			p := w.m.ChannelPartition
			if pos[p] > seen[p] {
				seen[p], moved = pos[p], time.Now()
			}
			if w.text == "" && pos[p] > w.m.ChannelOffset {
				ready = append(ready, w)
			}
		}
		if err := r.read(rctx, ready); err != nil {
			lastErr = err
		}
		cancel()
		left := 0
		var first *wanted
		for _, w := range want {
			if w.text == "" {
				if first == nil {
					first = w
				}
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if left < len(ready) {
			moved = time.Now()
		}
		fail := func(err error) error {
			return &domain.Error{Code: domain.CodeUnavailable,
				Msg: fmt.Sprintf("history has not stored %d message(s), such as %s at %d of partition %d, and has not moved for %s",
					left, first.m.MessageID, first.m.ChannelOffset, first.m.ChannelPartition, time.Since(moved).Round(time.Millisecond)),
				Err: errors.Join(err, lastErr)}
		}
		if time.Since(moved) >= r.cfg.Wait {
			return fail(nil)
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}
