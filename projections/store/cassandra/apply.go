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

// Apply writes the batch's state, then its positions. Each write is an
// idempotent upsert, so applying a batch again leaves the same state. Within
// the batch, later entries win over earlier ones with the same key.
//
// The messages of each channel, and the inbox entries of each user and
// epoch, are written in offset order, one bucket after another (see the
// package documentation); channels, memberships, device cursors and read
// marks are written alongside them, in any order. The positions are written
// only after all of that succeeded, as one single-partition batch.
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
//
// The writes are chains of units (see chain): a channel's messages and a
// user's inbox entries are one chain each, every other row a chain of its
// own. The units are executed round by round, each chain's next unit in
// the next round, and the units of a round are packed into as few requests
// as the batch limits allow (see pack): a request costs a Cassandra node
// more than the rows it writes (perf.sh rate real, session 8 in
// deploy/README.md).
func (s *Store) applyState(ctx context.Context, b store.Batch) error {
	var chains []chain
	one := func(q string, size int, args ...any) {
		var c chain
		c.add(stmt{q: q, args: args, size: size, own: true})
		chains = append(chains, c)
	}

	for _, c := range lastByKey(b.Channels, func(c domain.Channel) domain.ChannelID { return c.ID }) {
		members := make([]string, len(c.Members))
		size := indexRowSize + len(c.Name)
		for i, m := range c.Members {
			members[i] = string(m)
			size += len(m) + 8
		}
		one(s.q.insertChannel, size, string(c.ID), string(c.Kind), c.Name, string(c.CreatorID), members, c.CreatedAt, c.Version)
	}

	type memberKey struct {
		ch domain.ChannelID
		u  domain.UserID
	}
	for _, m := range lastByKey(b.Memberships, func(m store.Membership) memberKey { return memberKey{m.ChannelID, m.UserID} }) {
		q := s.q.deleteMembership
		if m.Member {
			q = s.q.insertMembership
		}
		one(q, indexRowSize, string(m.UserID), string(m.ChannelID))
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
		chains = append(chains, s.messageChain(run))
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
		chains = append(chains, s.inboxChains(run)...)
	}

	// Device cursors and read marks: one upsert per key, the batch's last.
	type cursorKey struct {
		u      domain.UserID
		device domain.DeviceID
	}
	for _, c := range lastByKey(b.Cursors, func(c store.DeviceCursor) cursorKey { return cursorKey{c.UserID, c.DeviceID} }) {
		one(s.q.insertCursor, indexRowSize, string(c.UserID), string(c.DeviceID), c.Epoch, c.Position, c.UpdatedAt)
	}
	type readKey struct {
		ch domain.ChannelID
		u  domain.UserID
	}
	for _, r := range lastByKey(b.Reads, func(r store.ReadMark) readKey { return readKey{r.ChannelID, r.UserID} }) {
		one(s.q.insertRead, indexRowSize, string(r.ChannelID), string(r.UserID), r.Seq, int64(r.MessageID), r.UpdatedAt)
	}
	// Send decisions: plain INSERTs, blind (see store.Batch), a key's
	// last decision in the batch.
	for _, d := range lastByKey(b.Decisions, func(d store.SendDecision) store.SendKey { return d.SendKey }) {
		one(s.q.insertSendDecision, indexRowSize+len(d.SenderID)+len(d.ClientMsgID)+len(d.ChannelID)+len(d.TextHash),
			string(d.SenderID), d.ClientMsgID, string(d.ChannelID), int64(d.MessageID), d.TextHash, d.Partition, d.Offset)
	}

	return s.execChains(ctx, chains)
}

// execChains executes the units of chains round by round (see rounds),
// the requests of a round at most Config.WriteConcurrency at a time, and
// a round only once the previous one is written.
func (s *Store) execChains(ctx context.Context, chains []chain) error {
	for _, units := range rounds(chains) {
		g := newGroup(ctx, s.cfg.WriteConcurrency)
		for _, u := range units {
			g.do(func(ctx context.Context) error { return s.execUnit(ctx, u) })
		}
		if err := g.wait(); err != nil {
			return err
		}
	}
	return nil
}

// rounds returns the requests of chains, round by round: each chain's
// first unit in the first round, its second in the second, and so on,
// packed together (see pack).
func rounds(chains []chain) [][]unit {
	var out [][]unit
	for round := 0; ; round++ {
		var units []unit
		for _, c := range chains {
			if round < len(c.units) {
				units = append(units, c.units[round])
			}
		}
		if len(units) == 0 {
			return out
		}
		out = append(out, pack(units))
	}
}

// messageChain is the chain of the messages of one channel, sorted by
// offset: bucket by bucket, each bucket's index row, its rows and their
// message id index rows (one per message, naming its offset).
func (s *Store) messageChain(msgs []store.Message) chain {
	var c chain
	ch := string(msgs[0].ChannelID)
	for run := range runs(msgs, func(a, b store.Message) bool { return bucketOf(a.Offset) == bucketOf(b.Offset) }) {
		bucket := bucketOf(run[0].Offset)
		c.next()
		c.add(stmt{q: s.q.insertChannelBucket, args: []any{ch, bucket}, size: indexRowSize, own: true})
		for _, m := range run {
			c.add(stmt{q: s.q.insertMessage, size: len(m.Text) + len(m.ClientMsgID) + 64, args: []any{
				ch, bucket, m.Offset, int64(m.MessageID), string(m.SenderID), string(m.DeviceID), m.ClientMsgID, m.Text, m.SentAt}})
			c.add(stmt{q: s.q.insertMessageID, args: []any{ch, int64(m.MessageID), m.Offset}, size: indexRowSize, own: true})
		}
	}
	return c
}

// inboxChains returns the chains of the inbox entries of one user and
// epoch, sorted by offset: the entries' (inboxChain), and their index rows
// by message (inboxIndexChains).
func (s *Store) inboxChains(entries []store.InboxEntry) []chain {
	return append([]chain{s.inboxChain(entries)}, s.inboxIndexChains(entries)...)
}

// inboxChain is the chain of the inbox entries of one user and epoch,
// sorted by offset: bucket by bucket, each bucket's index row and its
// entries.
func (s *Store) inboxChain(entries []store.InboxEntry) chain {
	var c chain
	u, epoch := string(entries[0].UserID), entries[0].Epoch
	for run := range runs(entries, func(a, b store.InboxEntry) bool { return bucketOf(a.Offset) == bucketOf(b.Offset) }) {
		bucket := bucketOf(run[0].Offset)
		c.next()
		c.add(stmt{q: s.q.insertInboxBucket, args: []any{u, epoch, bucket}, size: indexRowSize, own: true})
		for _, e := range run {
			m := e.Message
			c.add(stmt{q: s.q.insertInbox, size: len(m.Text) + 128, args: []any{
				u, epoch, bucket, e.Offset, e.Partition, string(m.UserID), string(m.ChannelID), int64(m.MessageID),
				string(m.SenderID), m.Text, m.SentAt, m.ChannelPartition, m.ChannelOffset}})
		}
	}
	return c
}

// inboxIndexChains returns the index rows by message of the inbox entries
// of one user and epoch: a chain per span of message ids (spanOf), each
// row of it in the span's one partition, so that a user's rows in an Apply
// go out as few single-partition batches rather than a partition each.
//
// The index has one row per entry, clustered by (message id, offset) under
// (user, epoch, span), so the lowest offset of a message is the first of
// its rows. That is chosen over the alternatives that keep one offset per
// message. INSERT ... IF NOT EXISTS keeps the first offset written, not the
// lowest (a batch applied again after a crash may come after a later
// copy's), and costs a Paxos round per entry. A read, a compare and a write
// cost a read per entry and are right only because a single projection
// instance writes a given user's inbox. Clustering rows are blind,
// idempotent upserts that commute, so retries, batches applied again and
// concurrent writers all leave the lowest offset first; a second row
// appears only for a second copy. Nothing orders them with the entries:
// InboxByMessage takes an index row without its entry for none, and the
// inbox projection, the only one that reads them, reads after its Apply.
func (s *Store) inboxIndexChains(entries []store.InboxEntry) []chain {
	u, epoch := string(entries[0].UserID), entries[0].Epoch
	var (
		spans []int64 // the span of each chain of cs; nearly always one
		cs    []chain
	)
	for _, e := range entries {
		span := spanOf(e.Message.MessageID)
		i := slices.Index(spans, span)
		if i < 0 {
			i = len(cs)
			spans, cs = append(spans, span), append(cs, chain{})
		}
		cs[i].add(stmt{q: s.q.insertInboxByMessage, args: []any{u, epoch, span, int64(e.Message.MessageID), e.Offset}, size: indexRowSize})
	}
	return cs
}

// spanOf is the span of message ids whose index rows share a partition of
// inbox_by_message_span: message ids are sonyflake ids (39 bits of time in
// units of 10 ms above 24 other bits), so a span is 2^16 units of time,
// about 11 minutes.
func spanOf(id domain.MessageID) int64 { return int64(id >> 40) }

// execUnit executes u's statements: alone as a query if there is one, as
// an unlogged batch otherwise.
func (s *Store) execUnit(ctx context.Context, u unit) error {
	if len(u.stmts) == 1 {
		return s.query(ctx, u.stmts[0].q, u.stmts[0].args...).Exec()
	}
	b := s.session.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
	for _, st := range u.stmts {
		b.Query(st.q, st.args...)
	}
	return s.session.ExecuteBatch(b)
}

// Limits of one request (see within). A mutation must stay well below
// half a commit log segment (16 MiB by default). Cassandra holds a batch
// over more than one partition to batch_size_fail_threshold (50 KiB by
// default) and logs a warning above batch_size_warn_threshold (5 KiB) and
// above unlogged_batch_across_partitions_warn_threshold (10 partitions);
// a batch over one partition is held to none of them.
const (
	maxBatchRows       = 64
	maxBatchBytes      = 1 << 20
	maxPackedBytes     = 4 << 10
	maxBatchPartitions = 10
)

// indexRowSize is what a small row counts for in a request's size.
const indexRowSize = 64

// stmt is one statement of an Apply.
type stmt struct {
	q    string
	args []any
	size int  // about how many bytes it writes
	own  bool // a row of a partition that no other statement of its chain writes
}

// unit is statements executed as one request, a batch or a query.
// Cassandra applies the rows of each partition in a batch as one mutation,
// atomic on a replica, but rows of different partitions in any order, as if
// they had been written concurrently.
type unit struct {
	stmts []stmt
	bytes int
	parts int  // partitions written to
	rows  bool // whether it writes to its chain's bucket partition
}

// within reports whether a request of that many statements, bytes and
// partitions stays within the limits.
func within(stmts, bytes, parts int) bool {
	switch {
	case stmts > maxBatchRows:
		return false
	case parts <= 1:
		return bytes <= maxBatchBytes
	default:
		return parts <= maxBatchPartitions && bytes <= maxPackedBytes
	}
}

// chain is the units of one channel's messages, one user's inbox, or one
// other row, executed one after another: a bucket's units after the
// previous bucket's, so that a reader never sees a bucket's rows without
// the previous bucket's. Units of one bucket are executed one after
// another too, so that a bucket's rows land in order.
type chain struct {
	units []unit
	fresh bool // the next statement starts a unit: a new bucket
}

// next makes the next statement start a new unit (a new bucket).
func (c *chain) next() { c.fresh = true }

// add appends st to the chain's last unit if it fits, to a new unit if not.
// The statements of a chain that are not own all write to one partition,
// its bucket's.
func (c *chain) add(st stmt) {
	if n := len(c.units); n > 0 && !c.fresh {
		last := &c.units[n-1]
		parts := last.parts
		if st.own || !last.rows {
			parts++
		}
		if within(len(last.stmts)+1, last.bytes+st.size, parts) {
			last.stmts = append(last.stmts, st)
			last.bytes += st.size
			last.parts = parts
			last.rows = last.rows || !st.own
			return
		}
	}
	c.fresh = false
	c.units = append(c.units, unit{stmts: []stmt{st}, bytes: st.size, parts: 1, rows: !st.own})
}

// pack merges units of distinct chains, which write to distinct
// partitions, into as few units as fit, first fit in order.
func pack(units []unit) []unit {
	var out []unit
next:
	for _, u := range units {
		for i := range out {
			o := &out[i]
			if within(len(o.stmts)+len(u.stmts), o.bytes+u.bytes, o.parts+u.parts) {
				o.stmts = append(o.stmts, u.stmts...)
				o.bytes += u.bytes
				o.parts += u.parts
				continue next
			}
		}
		out = append(out, unit{stmts: slices.Clone(u.stmts), bytes: u.bytes, parts: u.parts})
	}
	return out
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

func (g *group) fail(err error) {
	g.once.Do(func() { g.err = err; g.cancel() })
}

// wait waits for every function and returns the first error.
func (g *group) wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}
