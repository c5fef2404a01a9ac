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
	"github.com/evchat/evchat/projections/inbox"
)

// PositionStore is what the tailer needs of the store.
type PositionStore interface {
	Positions(ctx context.Context, projection string) (map[int32]int64, error)
}

// Bodies resolves the text of inbox entries that point at their message
// (package bodies; gateway/chat tells it the texts this gateway appends).
type Bodies interface {
	Resolve(ctx context.Context, ms []domain.InboxMessage) error
}

// Tailer reads the inbox topic and offers each entry to its user's
// connections, with its text resolved (see resolve). It starts each
// partition at the inbox projection's position, so that everything below
// the tailer's point in a partition is either in the store or was offered
// live: the invariant the sync (sync.go) relies on.
type Tailer struct {
	cfg   eventlog.Config
	topic string
	hub   *Hub
	texts Bodies
	dec   *inbox.Decoded
	log   *slog.Logger
	cl    *kgo.Client
	adm   *kadm.Client // for the log's end at each connection
	part  kgo.TopicPartitioner
	n     int
	parts []partState
	// bodies encodes each message's frame body once for all the
	// connections it goes to, live and in syncs.
	bodies *bodyCache
	// scratch holds one user's connections at a time, for Run's
	// goroutine alone (Run, resolve, delivers).
	scratch []*conn
}

// The body cache's bounds: enough for the messages of a burst in flight
// to every member of a group, small beside the queues it saves.
const (
	bodyCacheEntries = 1024
	bodyCacheBytes   = 16 << 20
)

type partState struct {
	mu   sync.Mutex
	next int64 // every entry below next is in the store or was offered
}

// NewTailer prepares a tailer: it learns the inbox topic's partitions and
// the projection's positions. The tailer and the syncs of its epoch's
// connections resolve texts with texts; it decodes records through dec,
// shared with the process's other readers of the inbox (nil: it decodes
// each itself).
func NewTailer(ctx context.Context, cfg eventlog.Config, st PositionStore, hub *Hub, texts Bodies, dec *inbox.Decoded, log *slog.Logger) (*Tailer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	topic := cfg.Topics().Inbox
	admCl, err := kgo.NewClient(cfg.ClientOpts()...) // owned by Run, through t.adm
	if err != nil {
		return nil, err
	}
	adm := kadm.NewClient(admCl)
	fail := func(err error) (*Tailer, error) {
		admCl.Close()
		return nil, err
	}
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return fail(fmt.Errorf("ws: inbox metadata: %w", err))
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil || len(td.Partitions) == 0 {
		return fail(fmt.Errorf("ws: inbox topic %s: not found (%v)", topic, td.Err))
	}
	n := len(td.Partitions)
	pos, err := st.Positions(ctx, eventlog.Epoched(inbox.Name, cfg.Epoch()))
	if err != nil {
		return fail(fmt.Errorf("ws: inbox positions: %w", err))
	}
	t := &Tailer{cfg: cfg, topic: topic, hub: hub, texts: texts, dec: dec, log: log, n: n, parts: make([]partState, n), adm: adm,
		part: kgo.StickyKeyPartitioner(nil).ForTopic(topic), bodies: newBodyCache(bodyCacheEntries, bodyCacheBytes)}
	start := map[int32]kgo.Offset{}
	for p := range n {
		t.parts[p].next = pos[int32(p)]
		start[int32(p)] = kgo.NewOffset().At(pos[int32(p)])
	}
	t.cl, err = kgo.NewClient(cfg.ClientOpts(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}))...)
	if err != nil {
		return fail(err)
	}
	return t, nil
}

// Epoch returns the inbox epoch the tailer reads.
func (t *Tailer) Epoch() int32 { return t.cfg.Epoch() }

// Partition returns the inbox partition that holds u's entries.
func (t *Tailer) Partition(u domain.UserID) int32 {
	return int32(t.part.Partition(&kgo.Record{Key: []byte(u)}, t.n))
}

// Run tails until ctx is cancelled and returns nil then.
func (t *Tailer) Run(ctx context.Context) error {
	defer t.cl.Close()
	defer t.adm.Close()
	for {
		fs := t.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachError(func(_ string, p int32, err error) { t.log.Warn("inbox fetch", "partition", p, "err", err) })
		var parts []tailed
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) > 0 {
				parts = append(parts, t.decode(fp))
			}
		})
		t.resolve(ctx, parts)
		for _, tp := range parts {
			ps := &t.parts[tp.partition]
			ps.mu.Lock()
			for _, e := range tp.entries {
				if !e.ok {
					continue
				}
				conns := t.userConns(e.m.UserID)
				if len(conns) == 0 {
					continue
				}
				// One frame for every connection of the user, its body
				// shared with the message's other recipients. An entry
				// without its text gets none: the connection catches
				// up from the store.
				var f outFrame
				if e.m.Resolved() {
					var err error
					if f, err = t.bodies.messageFrame(t.Epoch(), e.offset, e.m); err != nil {
						t.log.Warn("skipping unencodable inbox entry", "partition", tp.partition, "offset", e.offset, "err", err)
						continue
					}
				}
				for _, c := range conns {
					if c.gen.tailer == t { // not a connection of another epoch
						c.offer(e.offset, e.m, f)
					}
				}
			}
			ps.next = tp.next
			ps.mu.Unlock()
		}
	}
}

// tailed is one partition's records of a fetch, decoded.
type tailed struct {
	partition int32
	next      int64 // past the last record
	entries   []tailedEntry
}

type tailedEntry struct {
	offset int64
	m      domain.InboxMessage
	ok     bool // an inbox entry (else skipped)
}

func (t *Tailer) decode(fp kgo.FetchTopicPartition) tailed {
	tp := tailed{partition: fp.Partition, entries: make([]tailedEntry, len(fp.Records))}
	for i, rec := range fp.Records {
		tp.next = rec.Offset + 1
		m, ok, err := t.dec.Entry(rec)
		if err != nil {
			t.log.Warn("skipping undecodable inbox entry", "partition", rec.Partition, "offset", rec.Offset, "err", err)
			continue
		}
		tp.entries[i] = tailedEntry{offset: rec.Offset, m: m, ok: ok}
	}
	return tp
}

// resolve fills in the texts of the fetch's entries that go to a
// connection of this gateway that takes live entries (others need none: a
// connection that catches up from the store drops them), in one batch,
// outside the partition locks. An entry it could not resolve in time
// (history stopped) stays without text, and the connections it goes to
// catch up from the store instead (see conn.offer).
func (t *Tailer) resolve(ctx context.Context, parts []tailed) {
	var ms []domain.InboxMessage
	var at []*tailedEntry
	for i := range parts {
		for j := range parts[i].entries {
			e := &parts[i].entries[j]
			if e.ok && !e.m.Resolved() && t.delivers(e.m.UserID) {
				ms = append(ms, e.m)
				at = append(at, e)
			}
		}
	}
	if len(ms) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, LiveTextWait)
	defer cancel()
	if err := t.texts.Resolve(rctx, ms); err != nil && ctx.Err() == nil {
		t.log.Warn("inbox entries without text: their connections catch up from the store", "err", err)
	}
	for i, e := range at {
		e.m.Text = ms[i].Text
	}
}

// LiveTextWait bounds how long the tailer waits for the texts of a fetch's
// entries (history behind the fan-out): it serves every connection of the
// gateway, so it does not wait for history as long as a sync does; the
// connections of the entries it could not resolve catch up from the store.
const LiveTextWait = 5 * time.Second

// userConns returns u's connections in t.scratch: valid until the next
// call.
func (t *Tailer) userConns(u domain.UserID) []*conn {
	clear(t.scratch) // drop the last user's connections
	t.scratch = t.hub.appendConns(t.scratch[:0], u)
	return t.scratch
}

// delivers reports whether u has a connection of this tailer's epoch that
// takes live entries.
func (t *Tailer) delivers(u domain.UserID) bool {
	for _, c := range t.userConns(u) {
		if c.gen.tailer == t && c.takesLive() {
			return true
		}
	}
	return false
}

// mark runs fn with the partition's point held still: no entry of the
// partition is offered while fn runs.
func (t *Tailer) mark(p int32, fn func(next int64)) {
	ps := &t.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	fn(ps.next)
}

// end returns the partition's last stable offset: the present of the
// user's inbox. A connection that has not synced gets live entries from
// there on, never older ones, even while this gateway's tailer still
// catches up (it starts from the inbox projection's positions).
func (t *Tailer) end(ctx context.Context, p int32) (int64, error) {
	ends, err := t.adm.ListCommittedOffsets(ctx, t.topic)
	if err != nil {
		return 0, &domain.Error{Code: domain.CodeUnavailable, Msg: "the log did not answer", Err: err}
	}
	o, ok := ends.Lookup(t.topic, p)
	if !ok || o.Err != nil {
		return 0, domain.Errorf(domain.CodeUnavailable, "the log did not answer for partition %d", p)
	}
	return o.Offset, nil
}
