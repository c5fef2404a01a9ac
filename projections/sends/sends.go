// Package sends is the processor that decides sends: it reads the
// send.requested records gateways append to the sends topic (keyed by
// sender) and makes the first request of each (sender, client message id)
// the key's message.sent, once, in the log's order. Every request, first or
// not, is answered on the replies topic with the key's message id, or with
// a conflict when the key was used for another channel or text. A resend
// from any gateway, at any time, gets the first request's id; two attempts
// of one send racing on two gateways are two records of one partition,
// decided one after the other.
//
// It runs on txproc: the message.sent, the answers and the input offsets
// commit in one Kafka transaction, or none of them do, so an answer that
// names a message is never read before its message is in the log (the
// gateway acknowledges the send only on the answer).
//
// Its decisions live in the store (store.SendDecision), written with one
// durable blind write per batch before the transaction commits (Flush);
// its memory holds one batch. Its own progress, per partition of the sends
// topic, is in a changelog (the offset it has processed up to), committed
// in the same transaction: a record below it was processed by a committed
// transaction and is passed over. That holds where the group's committed
// offsets do not: the embedded broker does not make a commit's offsets
// durable when a kill lands in the middle of it (eventlog's endOpenTxns),
// and a broker forgets the offsets of a group stopped for longer than its
// offsets.retention.minutes.
//
// The same progress is written to the store with the decisions, as the
// store's positions of the projection Name, after them. A store that loses
// writes it acknowledged (a one-node Cassandra with the periodic commit log,
// on kill -9, loses the last ones) loses the decisions of batches that
// committed, and the processor would never read their requests again: a
// resend would be decided anew. So before each batch, and when no input
// has come for a while (txproc.Idler), the processor compares the store's
// progress with the changelog's and, where the store's is behind, decides
// the requests in between again from the log (mend): a key without a
// decision gets its first request there, whose message the committed
// transaction appended. Nothing is appended or answered again.
//
// A key is decided from the log alone (the first request's candidate id
// and time), so a batch processed again, by this process after an abort or
// by a fenced one still running, writes the same decisions again. The one
// case the store's decision does not answer by itself is the first request
// read again, past the progress: the transaction that first appended its
// message did not commit, so the message is appended again, in this
// transaction.
package sends

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/txproc"
)

// Name is the processor's name: its consumer group and transactional id.
const Name = "sends"

// Store is what the processor needs of the store: decisions are written
// by Apply, with the processor's progress as the positions of Name.
type Store interface {
	SendDecisions(ctx context.Context, keys []store.SendKey) (map[store.SendKey]store.SendDecision, error)
	Apply(ctx context.Context, b store.Batch) error
	Positions(ctx context.Context, projection string) (map[int32]int64, error)
}

// Config configures the processor.
type Config struct {
	// Log is the log's config. Required.
	Log eventlog.Config
	// InstanceID makes the transactional id unique per process. Default
	// "0".
	InstanceID string
	// Mended, if set, counts the decisions written again from the log
	// because the store had lost them (NewMended).
	Mended prometheus.Counter
	// Logger; default discard.
	Logger *slog.Logger
}

// NewMended returns the counter of Config.Mended, registered with reg.
func NewMended(reg prometheus.Registerer) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "evchat_sends_mended_total",
		Help: "Send decisions the sends processor decided again from the log because the store had lost them (a store that loses writes it acknowledged, such as a one-node Cassandra killed -9).",
	})
	reg.MustRegister(c)
	return c
}

// Processor is the deciding logic: a txproc.Handler, Preparer, Flusher
// and Idler.
type Processor struct {
	cfg    Config
	st     Store
	topics eventlog.Topics
	log    *slog.Logger
	// known holds the decisions of the batch's keys: read from the store
	// by Prepare, made by Process.
	known map[store.SendKey]store.SendDecision
	// decoded holds the batch's requests, decoded once by Prepare.
	decoded map[*kgo.Record]decodedRequest
	// made are the decisions Process made in this batch, for Flush.
	made []store.SendDecision
	// done is, per partition, the offset the committed transactions have
	// processed up to (the changelog's progress record).
	done map[int32]int64
	// next is, per partition, the offset this batch has processed up to.
	next map[int32]int64
}

type decodedRequest struct {
	req domain.SendRequested
	m   domain.Meta
}

// progressKey is the changelog key of a partition's progress: the
// changelog holds nothing else.
var progressKey = []byte("progress")

// New returns the processor.
func New(cfg Config, st Store) (*Processor, error) {
	if err := cfg.Log.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Processor{
		cfg: cfg, st: st, topics: cfg.Log.Topics(), log: cfg.Logger.With("projection", Name),
		known: map[store.SendKey]store.SendDecision{}, done: map[int32]int64{}, next: map[int32]int64{},
		decoded: map[*kgo.Record]decodedRequest{},
	}, nil
}

// Run decides until ctx is cancelled and returns nil then.
func (p *Processor) Run(ctx context.Context) error {
	return txproc.Run(ctx, txproc.Config{
		Name: Name, Input: p.topics.Sends, Changelog: p.topics.SendsState, Log: p.cfg.Log, Instance: p.cfg.InstanceID, Logger: p.cfg.Logger,
	}, p)
}

// TextHash is the digest of a message's text that a decision keeps.
func TextHash(text string) string {
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:16])
}

// Restore loads a partition's progress.
func (p *Processor) Restore(part int32, key, value []byte) {
	if n, ok := progressOf(key, value); ok {
		p.done[part] = n
	}
}

// progressOf reads a changelog record: a partition's progress, or nothing.
func progressOf(key, value []byte) (int64, bool) {
	if string(key) != string(progressKey) {
		return 0, false
	}
	n, err := strconv.ParseInt(string(value), 10, 64)
	return n, err == nil
}

// Progress returns, per partition of the sends topic, the offset the
// processor's committed transactions have processed up to (its changelog):
// every request below it is decided, its decision stored and its message
// in the channel topic. verify compares up to it.
func Progress(ctx context.Context, cfg eventlog.Config) (map[int32]int64, error) {
	pos := map[int32]int64{}
	_, err := eventlog.ReadToEnd(ctx, cfg, cfg.Topics().SendsState, eventlog.ReadRange{}, func(r *kgo.Record) {
		if n, ok := progressOf(r.Key, r.Value); ok {
			pos[r.Partition] = n
		}
	})
	if err != nil {
		return nil, fmt.Errorf("sends: progress: %w", err)
	}
	return pos, nil
}

// Drop forgets the batch and the progress (restored again before the next
// batch).
func (p *Processor) Drop() {
	p.forgetBatch()
	clear(p.done)
}

func (p *Processor) forgetBatch() {
	clear(p.known)
	clear(p.next)
	clear(p.decoded)
	p.made = p.made[:0]
}

// processed reports whether a committed transaction processed rec.
func (p *Processor) processed(rec *kgo.Record) bool { return rec.Offset < p.done[rec.Partition] }

// Prepare reads the decisions of the batch's keys from the store, after
// deciding again what the store lost of the batch's partitions (mend).
func (p *Processor) Prepare(ctx context.Context, recs []*kgo.Record) error {
	p.forgetBatch()
	// The store's progress is read beside the decisions; in the rare batch
	// that must mend first, the decisions are read again after it.
	type positions struct {
		pos map[int32]int64
		err error
	}
	stored := make(chan positions, 1)
	go func() {
		pos, err := p.st.Positions(ctx, Name)
		stored <- positions{pos, err}
	}()
	keys := make([]store.SendKey, 0, len(recs))
	seen := make(map[store.SendKey]bool, len(recs))
	var parts []int32
	for _, rec := range recs {
		if len(parts) == 0 || parts[len(parts)-1] != rec.Partition {
			parts = append(parts, rec.Partition)
		}
		if p.processed(rec) {
			continue
		}
		req, m, ok := p.request(rec)
		if !ok {
			continue
		}
		p.decoded[rec] = decodedRequest{req, m}
		k := store.SendKey{SenderID: req.SenderID, ClientMsgID: req.ClientMsgID}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	var (
		got map[store.SendKey]store.SendDecision
		err error
	)
	if len(keys) > 0 {
		got, err = p.st.SendDecisions(ctx, keys)
	}
	pos := <-stored
	if err != nil {
		return fmt.Errorf("sends: reading decisions: %w", err)
	}
	if pos.err != nil {
		return fmt.Errorf("sends: reading the store's progress: %w", pos.err)
	}
	slices.Sort(parts)
	mended, err := p.mendBehind(ctx, slices.Compact(parts), pos.pos, time.Now().Add(mendBudget))
	if err != nil {
		return err
	}
	if mended && len(keys) > 0 {
		if got, err = p.st.SendDecisions(ctx, keys); err != nil {
			return fmt.Errorf("sends: reading decisions: %w", err)
		}
	}
	for k, d := range got {
		p.known[k] = d
	}
	return nil
}

// Idle decides again what the store lost of the partitions (see mend):
// a partition that gets no input is checked too.
func (p *Processor) Idle(ctx context.Context, parts []int32) error {
	pos, err := p.st.Positions(ctx, Name)
	if err != nil {
		return fmt.Errorf("sends: reading the store's progress: %w", err)
	}
	_, err = p.mendBehind(ctx, parts, pos, time.Now().Add(mendBudget))
	return err
}

// mendBudget bounds the time one Prepare (inside the batch's transaction)
// or one Idle (while sends wait) spends mending: a mend that goes on longer
// (a store that lost much, or the first start on a store written before
// the store held the progress) ends with an error, the batch aborts, and
// the next batch or Idle goes on from where it got.
const mendBudget = 10 * time.Second

// mendStep bounds the offsets of one read of a mend: its memory, and the
// work a failure repeats.
var mendStep int64 = 5000 // a variable for tests

// mendBehind mends each of parts whose progress in the store (stored; a
// partition absent there from the log's start) is behind the changelog's,
// until deadline. It reports whether it mended any.
func (p *Processor) mendBehind(ctx context.Context, parts []int32, stored map[int32]int64, deadline time.Time) (bool, error) {
	mended := false
	for _, part := range parts {
		from, done := stored[part], p.done[part]
		if from >= done {
			continue
		}
		mended = true
		if err := p.mend(ctx, part, from, done, deadline); err != nil {
			return mended, err
		}
	}
	return mended, nil
}

// mend decides again, from the log, the requests of partition part from
// offset from (the store's progress) up to to (the changelog's): the store
// lost their decisions, though the transactions that made them committed.
//
// A key with a decision in the store keeps it. A key without one is
// decided by its first request in the range, as it was then: the store
// writes each batch's progress after its decisions and loses only its
// latest writes, so the decision of a request below the store's progress is
// there, and no earlier request of the key made one. Its message is in the
// channel topic (its transaction committed) and its answers were sent:
// only the decision is written, with the progress after it, one step of
// mendStep offsets at a time.
func (p *Processor) mend(ctx context.Context, part int32, from, to int64, deadline time.Time) error {
	p.log.Warn("the store's progress is behind the processor's: deciding those requests again from the log",
		"partition", part, "store", from, "processor", to)
	decided := 0
	for from < to {
		until := min(to, from+mendStep)
		var ds []store.SendDecision
		_, err := eventlog.ReadToEnd(ctx, p.cfg.Log, p.topics.Sends, eventlog.ReadRange{
			Partitions: []int32{part}, From: map[int32]int64{part: from}, Until: map[int32]int64{part: until},
		}, func(rec *kgo.Record) {
			if req, _, ok := p.request(rec); ok {
				ds = append(ds, decision(req, part, rec.Offset))
			}
		})
		if err != nil {
			return fmt.Errorf("sends: partition %d: reading the requests the store lost: %w", part, err)
		}
		keys := make([]store.SendKey, len(ds))
		for i, d := range ds {
			keys[i] = d.SendKey
		}
		known, err := p.st.SendDecisions(ctx, keys)
		if err != nil {
			return fmt.Errorf("sends: partition %d: reading decisions: %w", part, err)
		}
		var made []store.SendDecision
		for _, d := range ds {
			if _, ok := known[d.SendKey]; !ok {
				known[d.SendKey] = d
				made = append(made, d)
			}
		}
		err = p.st.Apply(ctx, store.Batch{Projection: Name, Decisions: made, Positions: map[int32]int64{part: until}, Replayable: true})
		if err != nil {
			return fmt.Errorf("sends: partition %d: saving %d decisions again: %w", part, len(made), err)
		}
		decided += len(made)
		if p.cfg.Mended != nil {
			p.cfg.Mended.Add(float64(len(made)))
		}
		from = until
		if from < to && time.Now().After(deadline) {
			return fmt.Errorf("sends: partition %d: decided again up to offset %d of %d (%d decisions); going on next time",
				part, from, to, decided)
		}
	}
	p.log.Warn("decided again from the log what the store lost", "partition", part, "decisions", decided)
	return nil
}

// decision is the decision req makes as the first request of its key, at
// offset of partition part.
func decision(req domain.SendRequested, part int32, offset int64) store.SendDecision {
	return store.SendDecision{
		SendKey:   store.SendKey{SenderID: req.SenderID, ClientMsgID: req.ClientMsgID},
		ChannelID: req.ChannelID, MessageID: req.MessageID, TextHash: TextHash(req.Text),
		Partition: part, Offset: offset,
	}
}

// request decodes a send.requested; anything else is skipped, logged.
func (p *Processor) request(rec *kgo.Record) (domain.SendRequested, domain.Meta, bool) {
	m, ev, err := domain.Decode(rec.Value)
	if err != nil {
		p.log.Warn("skipping a record that is not a send request", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return domain.SendRequested{}, m, false
	}
	req, ok := ev.(domain.SendRequested)
	if !ok {
		p.log.Warn("skipping an event that is not a send request", "type", ev.EventType(), "partition", rec.Partition, "offset", rec.Offset)
	}
	return req, m, ok
}

// Process decides one request and answers it.
func (p *Processor) Process(_ context.Context, part int32, rec *kgo.Record, out *txproc.Out) error {
	if p.processed(rec) {
		return nil // answered, and its message appended, in a committed transaction
	}
	p.next[part] = rec.Offset + 1
	dr, ok := p.decoded[rec]
	if !ok {
		return nil // not a request (Prepare logged it)
	}
	req, m := dr.req, dr.m
	k := store.SendKey{SenderID: req.SenderID, ClientMsgID: req.ClientMsgID}
	d, decided := p.known[k]
	first := decided && d.Partition == part && d.Offset == rec.Offset
	if first {
		// Its first request read again (its transaction aborted after
		// the decision was written): the decision is written again,
		// with the batch that now commits its message. Otherwise its
		// only write is as old as the failed attempt (a whole Kafka
		// outage, in TestChaosServers), and a store that loses its
		// latest acknowledged writes (a one-node Cassandra on kill -9)
		// can lose it after its message committed.
		p.made = append(p.made, d)
	}
	if !decided {
		d = decision(req, part, rec.Offset)
		p.known[k] = d
		p.made = append(p.made, d)
		first = true
	}
	reply := domain.SendDecided{RequestID: m.EventID, MessageID: d.MessageID}
	switch {
	case first:
		v, err := domain.Encode(req.MessageSent, domain.Meta{EventID: req.MessageID.String(), Time: m.Time})
		if err != nil {
			return err
		}
		out.Emit(&kgo.Record{Topic: p.topics.Channels, Key: []byte(req.ChannelID), Value: v})
	case d.ChannelID != req.ChannelID:
		reply = refused(m.EventID, fmt.Sprintf("client_msg_id %q was used for another channel", req.ClientMsgID))
	case d.TextHash != TextHash(req.Text):
		reply = refused(m.EventID, fmt.Sprintf("client_msg_id %q was used for another text", req.ClientMsgID))
	}
	v, err := domain.Encode(reply, domain.Meta{EventID: m.EventID, Time: m.Time})
	if err != nil {
		return err
	}
	out.Emit(&kgo.Record{Topic: p.topics.SendReplies, Key: []byte(req.ReplyTo), Value: v})
	return nil
}

func refused(request, msg string) domain.SendDecided {
	return domain.SendDecided{RequestID: request, Code: domain.CodeConflict, Message: msg}
}

// Flush writes the batch's new decisions and its progress to the store,
// and its progress to the changelog, before the transaction commits: a
// committed answer's decision is in the store, or, after a crash took the
// store's latest writes, mended from the log before the next batch (see
// mend). So the batch is replayable (store.Batch.Replayable): the embedded
// store does not fsync it before the commit.
func (p *Processor) Flush(ctx context.Context, out *txproc.Out) error {
	if len(p.made) > 0 || len(p.next) > 0 {
		if err := p.st.Apply(ctx, store.Batch{Projection: Name, Decisions: p.made, Positions: p.next, Replayable: true}); err != nil {
			return fmt.Errorf("sends: saving %d decisions: %w", len(p.made), err)
		}
	}
	for part, next := range p.next {
		out.SaveState(part, progressKey, strconv.AppendInt(nil, next, 10))
	}
	// p.done moves when the transaction commits: a new batch restores it
	// after an abort (Drop), and until then the batch's records are not
	// read again.
	for part, next := range p.next {
		p.done[part] = next
	}
	p.forgetBatch()
	return nil
}
