package ws

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

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

// Tailer reads the inbox topic and offers each entry to its user's
// connections. It starts each partition at the inbox projection's position,
// so that everything below the tailer's point in a partition is either in
// the store or was offered live: the invariant Conn.sync relies on.
type Tailer struct {
	cfg   eventlog.Config
	topic string
	hub   *Hub
	log   *slog.Logger
	cl    *kgo.Client
	adm   *kadm.Client // for the log's end at each connection
	part  kgo.TopicPartitioner
	n     int
	parts []partState
	// bodies encodes each message's frame body once for all the
	// connections it goes to, live and in syncs.
	bodies *bodyCache
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
// the projection's positions.
func NewTailer(ctx context.Context, cfg eventlog.Config, st PositionStore, hub *Hub, log *slog.Logger) (*Tailer, error) {
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
	t := &Tailer{cfg: cfg, topic: topic, hub: hub, log: log, n: n, parts: make([]partState, n), adm: adm,
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
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			ps := &t.parts[fp.Partition]
			ps.mu.Lock()
			defer ps.mu.Unlock()
			for _, rec := range fp.Records {
				ps.next = rec.Offset + 1
				_, ev, err := domain.Decode(rec.Value)
				if err != nil {
					t.log.Warn("skipping undecodable inbox entry", "partition", rec.Partition, "offset", rec.Offset, "err", err)
					continue
				}
				m, ok := ev.(domain.InboxMessage)
				if !ok {
					continue
				}
				conns := t.hub.conns(m.UserID)
				if len(conns) == 0 {
					continue
				}
				// One frame for every connection of the user, its body
				// shared with the message's other recipients.
				f, err := t.bodies.messageFrame(t.Epoch(), rec.Offset, m)
				if err != nil {
					t.log.Warn("skipping unencodable inbox entry", "partition", rec.Partition, "offset", rec.Offset, "err", err)
					continue
				}
				for _, c := range conns {
					if c.gen.tailer == t { // not a connection of another epoch
						c.offer(rec.Offset, m, f)
					}
				}
			}
		})
	}
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
