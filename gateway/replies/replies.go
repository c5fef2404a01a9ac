// Package replies reads the sends processor's answers (send.decided) meant
// for this gateway process and hands each to the send that waits for it.
//
// Answers are keyed by the gateway's address, To ("node-<machine id>"), so
// all of a node's answers are in one partition of the replies topic, which
// the reader tails from the end it found when it was made: a send registers
// (Expect) before it appends its request, and the answer is written after
// the request is read, so it lies past that end. Answers are committed in
// the processor's transactions and read committed: an answer that names a
// message is read only once that message is in the log. An answer nobody
// waits for (the send gave up, or it was for an earlier process of this
// node) is dropped; its client resends and gets the same id.
package replies

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
)

// Reader tails this node's partition of the replies topic. It is safe for
// concurrent use.
type Reader struct {
	to  string
	cl  *kgo.Client
	log *slog.Logger

	mu      sync.Mutex
	waiting map[string]chan domain.SendDecided
}

// Address returns the reply address of the node with machine id node.
func Address(node uint16) string { return "node-" + strconv.Itoa(int(node)) }

// New returns a reader of node's answers, positioned at the end of its
// partition. Run reads; until then answers wait in the log.
func New(ctx context.Context, cfg eventlog.Config, node uint16, log *slog.Logger) (*Reader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	topic, to := cfg.Topics().SendReplies, Address(node)
	admCl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		return nil, fmt.Errorf("replies: client: %w", err)
	}
	defer admCl.Close()
	end, err := eventlog.KeyEnd(ctx, kadm.NewClient(admCl), topic, to)
	if err != nil {
		return nil, fmt.Errorf("replies: the end of %s: %w", topic, err)
	}
	cl, err := kgo.NewClient(cfg.ClientOpts(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {end.Partition: kgo.NewOffset().At(end.Offset)}}),
		kgo.ClientID("evchat-replies"),
	)...)
	if err != nil {
		return nil, fmt.Errorf("replies: client: %w", err)
	}
	return &Reader{to: to, cl: cl, log: log, waiting: map[string]chan domain.SendDecided{}}, nil
}

// To is the address requests name for their answers to come here.
func (r *Reader) To() string { return r.to }

// Expect registers a wait for the answer to request id. The channel gets
// the answer once; done unregisters (call it when no longer waiting).
func (r *Reader) Expect(id string) (answer <-chan domain.SendDecided, done func()) {
	c := make(chan domain.SendDecided, 1)
	r.mu.Lock()
	r.waiting[id] = c
	r.mu.Unlock()
	return c, func() {
		r.mu.Lock()
		delete(r.waiting, id)
		r.mu.Unlock()
	}
}

// Run reads answers until ctx is cancelled, and closes the reader.
func (r *Reader) Run(ctx context.Context) error {
	defer r.cl.Close()
	for {
		fetches := r.cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			r.log.Warn("replies: fetch", "topic", t, "partition", p, "err", err)
		})
		fetches.EachRecord(r.handle)
	}
}

func (r *Reader) handle(rec *kgo.Record) {
	if string(rec.Key) != r.to {
		return // another node's, in the same partition
	}
	_, ev, err := domain.Decode(rec.Value)
	if err != nil {
		r.log.Warn("replies: skipping a record", "offset", rec.Offset, "err", err)
		return
	}
	a, ok := ev.(domain.SendDecided)
	if !ok {
		return
	}
	r.mu.Lock()
	c, ok := r.waiting[a.RequestID]
	delete(r.waiting, a.RequestID)
	r.mu.Unlock()
	if ok {
		c <- a // buffered, and sent to once
	}
}
