package cassandra

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/gocql/gocql"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// Limits of one single-partition unlogged batch. Cassandra applies such a
// batch atomically on each replica, and does not hold it to the
// multi-partition batch size limits, but a mutation must stay well below
// half a commit log segment (16 MiB by default).
const (
	maxBatchRows  = 64
	maxBatchBytes = 1 << 20
)

// Apply writes the batch's state, then its positions. Each write is an
// idempotent upsert, so applying a batch again leaves the same state. Within
// the batch, later entries win over earlier ones with the same key.
//
// The messages of each channel, and the inbox entries of each user and
// epoch, are written in offset order, one bucket after another (see the
// package documentation); channels, memberships, the message id index, the
// inbox message index, device cursors and read marks are written
// concurrently with them. The positions are written only after all of that
// succeeded, as one single-partition batch.
func (s *Store) Apply(ctx context.Context, b store.Batch) error {
	if b.Projection == "" && len(b.Positions) > 0 {
		return domain.Errorf(domain.CodeBadRequest, "cassandra: positions without a projection name")
	}
	if err := s.applyState(ctx, b); err != nil {
		return fail("apply "+b.Projection, err)
	}
	if len(b.Positions) == 0 {
		return nil
	}
	batch := s.session.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
	for p, off := range b.Positions {
		batch.Query(s.q.insertPosition, b.Projection, p, off)
	}
	if err := s.session.ExecuteBatch(batch); err != nil {
		return fail("apply "+b.Projection+": positions", err)
	}
	return nil
}

// applyState writes everything of b but its positions.
func (s *Store) applyState(ctx context.Context, b store.Batch) error {
	g := newGroup(ctx, s.cfg.WriteConcurrency)

	for _, c := range lastByKey(b.Channels, func(c domain.Channel) domain.ChannelID { return c.ID }) {
		members := make([]string, len(c.Members))
		for i, m := range c.Members {
			members[i] = string(m)
		}
		g.exec(s.query(g.ctx, s.q.insertChannel,
			string(c.ID), string(c.Kind), c.Name, string(c.CreatorID), members, c.CreatedAt, c.Version))
	}

	type memberKey struct {
		ch domain.ChannelID
		u  domain.UserID
	}
	for _, m := range lastByKey(b.Memberships, func(m store.Membership) memberKey { return memberKey{m.ChannelID, m.UserID} }) {
		stmt := s.q.deleteMembership
		if m.Member {
			stmt = s.q.insertMembership
		}
		g.exec(s.query(g.ctx, stmt, string(m.UserID), string(m.ChannelID)))
	}

	type msgKey struct {
		ch  domain.ChannelID
		off int64
	}
	msgs := lastByKey(b.Messages, func(m store.Message) msgKey { return msgKey{m.ChannelID, m.Offset} })
	slices.SortStableFunc(msgs, func(a, b store.Message) int {
		return cmp.Or(cmp.Compare(a.ChannelID, b.ChannelID), cmp.Compare(a.Offset, b.Offset))
	})
	for run := range runs(msgs, func(a, b store.Message) bool { return a.ChannelID == b.ChannelID }) {
		g.do(func(ctx context.Context) error { return s.writeMessages(ctx, run) })
	}
	for _, m := range msgs {
		g.exec(s.query(g.ctx, s.q.insertMessageID, string(m.ChannelID), int64(m.MessageID), m.Offset))
	}

	type inboxKey struct {
		u     domain.UserID
		epoch int32
		off   int64
	}
	entries := lastByKey(b.Inbox, func(e store.InboxEntry) inboxKey { return inboxKey{e.UserID, e.Epoch, e.Offset} })
	slices.SortStableFunc(entries, func(a, b store.InboxEntry) int {
		return cmp.Or(cmp.Compare(a.UserID, b.UserID), cmp.Compare(a.Epoch, b.Epoch), cmp.Compare(a.Offset, b.Offset))
	})
	for run := range runs(entries, func(a, b store.InboxEntry) bool { return a.UserID == b.UserID && a.Epoch == b.Epoch }) {
		g.do(func(ctx context.Context) error { return s.writeInbox(ctx, run) })
	}
	// The inbox message index: one row per entry, clustered by offset under
	// (user, epoch, message id), so the lowest offset of a message is the
	// first row of its partition. That is chosen over the alternatives that
	// keep one offset per message. INSERT ... IF NOT EXISTS keeps the first
	// offset written, not the lowest (a batch applied again after a crash
	// may come after a later copy's), and costs a Paxos round per entry. A
	// read, a compare and a write cost a read per entry and are right only
	// because a single projection instance writes a given user's inbox.
	// Clustering rows are blind, idempotent upserts that commute, so
	// retries, batches applied again and concurrent writers all leave the
	// lowest offset first; a second row appears only for a second copy.
	for _, e := range entries {
		g.exec(s.query(g.ctx, s.q.insertInboxByMessage, string(e.UserID), e.Epoch, int64(e.Message.MessageID), e.Offset))
	}

	// Device cursors and read marks: one upsert per key, the batch's last.
	type cursorKey struct {
		u      domain.UserID
		device domain.DeviceID
	}
	for _, c := range lastByKey(b.Cursors, func(c store.DeviceCursor) cursorKey { return cursorKey{c.UserID, c.DeviceID} }) {
		g.exec(s.query(g.ctx, s.q.insertCursor, string(c.UserID), string(c.DeviceID), c.Epoch, c.Position, c.UpdatedAt))
	}
	type readKey struct {
		ch domain.ChannelID
		u  domain.UserID
	}
	for _, r := range lastByKey(b.Reads, func(r store.ReadMark) readKey { return readKey{r.ChannelID, r.UserID} }) {
		g.exec(s.query(g.ctx, s.q.insertRead, string(r.ChannelID), string(r.UserID), r.Seq, int64(r.MessageID), r.UpdatedAt))
	}

	return g.wait()
}

// writeMessages writes the messages of one channel, sorted by offset,
// bucket by bucket: the bucket's index row alongside its rows in batches.
func (s *Store) writeMessages(ctx context.Context, msgs []store.Message) error {
	ch := string(msgs[0].ChannelID)
	for run := range runs(msgs, func(a, b store.Message) bool { return bucketOf(a.Offset) == bucketOf(b.Offset) }) {
		bucket := bucketOf(run[0].Offset)
		err := s.withIndexRow(s.query(ctx, s.q.insertChannelBucket, ch, bucket), func() error {
			w := s.partitionWriter(ctx)
			for _, m := range run {
				err := w.add(len(m.Text)+len(m.ClientMsgID)+64, s.q.insertMessage,
					ch, bucket, m.Offset, int64(m.MessageID), string(m.SenderID), string(m.DeviceID), m.ClientMsgID, m.Text, m.SentAt)
				if err != nil {
					return err
				}
			}
			return w.flush()
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// withIndexRow executes index, the bucket index row of a bucket, while
// rows writes the bucket's rows, and returns when both are done. Until the
// index row is written readers skip the bucket, so they see a prefix
// whichever lands first; the next bucket is written only after both.
func (s *Store) withIndexRow(index *gocql.Query, rows func() error) error {
	done := make(chan error, 1)
	go func() { done <- index.Exec() }()
	err := rows()
	if ierr := <-done; err == nil {
		err = ierr
	}
	return err
}

// writeInbox writes the inbox entries of one user and epoch, sorted by
// offset, bucket by bucket: the bucket's index row alongside its rows in
// batches.
func (s *Store) writeInbox(ctx context.Context, entries []store.InboxEntry) error {
	u, epoch := string(entries[0].UserID), entries[0].Epoch
	for run := range runs(entries, func(a, b store.InboxEntry) bool { return bucketOf(a.Offset) == bucketOf(b.Offset) }) {
		bucket := bucketOf(run[0].Offset)
		err := s.withIndexRow(s.query(ctx, s.q.insertInboxBucket, u, epoch, bucket), func() error {
			w := s.partitionWriter(ctx)
			for _, e := range run {
				m := e.Message
				err := w.add(len(m.Text)+128, s.q.insertInbox,
					u, epoch, bucket, e.Offset, e.Partition, string(m.UserID), string(m.ChannelID), int64(m.MessageID),
					string(m.SenderID), m.Text, m.SentAt, m.ChannelPartition, m.ChannelOffset)
				if err != nil {
					return err
				}
			}
			return w.flush()
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// partitionWriter collects writes to one partition into unlogged batches
// of at most maxBatchRows rows and about maxBatchBytes bytes, and executes
// them in order.
type partitionWriter struct {
	s     *Store
	ctx   context.Context
	batch *gocql.Batch
	bytes int
}

func (s *Store) partitionWriter(ctx context.Context) *partitionWriter {
	return &partitionWriter{s: s, ctx: ctx}
}

// add queues one statement of about size bytes, executing the queued ones
// first if it would overflow the batch.
func (w *partitionWriter) add(size int, stmt string, args ...any) error {
	if w.batch != nil && (w.batch.Size() >= maxBatchRows || w.bytes+size > maxBatchBytes) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	if w.batch == nil {
		w.batch = w.s.session.NewBatch(gocql.UnloggedBatch).WithContext(w.ctx)
		w.bytes = 0
	}
	w.batch.Query(stmt, args...)
	w.bytes += size
	return nil
}

// flush executes the queued statements: alone as a query if there is one.
func (w *partitionWriter) flush() error {
	b := w.batch
	w.batch = nil
	switch {
	case b == nil || b.Size() == 0:
		return nil
	case b.Size() == 1:
		e := b.Entries[0]
		return w.s.query(w.ctx, e.Stmt, e.Args...).Exec()
	default:
		return w.s.session.ExecuteBatch(b)
	}
}

// lastByKey returns xs without the entries that a later entry with the same
// key overrides, in their original order.
func lastByKey[T any, K comparable](xs []T, key func(T) K) []T {
	last := make(map[K]int, len(xs))
	for i, x := range xs {
		last[key(x)] = i
	}
	if len(last) == len(xs) {
		return slices.Clone(xs)
	}
	out := make([]T, 0, len(last))
	for i, x := range xs {
		if last[key(x)] == i {
			out = append(out, x)
		}
	}
	return out
}

// runs yields the maximal runs of consecutive elements of xs that belong
// together.
func runs[T any](xs []T, together func(a, b T) bool) func(yield func([]T) bool) {
	return func(yield func([]T) bool) {
		for start := 0; start < len(xs); {
			end := start + 1
			for end < len(xs) && together(xs[start], xs[end]) {
				end++
			}
			if !yield(xs[start:end:end]) {
				return
			}
			start = end
		}
	}
}

// group runs functions on at most n goroutines and returns the first error;
// after it, the context the functions get is canceled and queued functions
// are skipped.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

func newGroup(ctx context.Context, n int) *group {
	ctx, cancel := context.WithCancel(ctx)
	return &group{ctx: ctx, cancel: cancel, sem: make(chan struct{}, n)}
}

// do runs fn on a goroutine once fewer than n run.
func (g *group) do(fn func(ctx context.Context) error) {
	select {
	case g.sem <- struct{}{}:
	case <-g.ctx.Done():
		g.fail(g.ctx.Err())
		return
	}
	g.wg.Add(1)
	go func() {
		defer func() { <-g.sem; g.wg.Done() }()
		if err := fn(g.ctx); err != nil {
			g.fail(err)
		}
	}()
}

// exec runs q, which must be bound to g.ctx.
func (g *group) exec(q *gocql.Query) {
	g.do(func(context.Context) error { return q.Exec() })
}

func (g *group) fail(err error) {
	g.once.Do(func() { g.err = err; g.cancel() })
}

// wait waits for every function and returns the first error.
func (g *group) wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}
