package cassandra

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"time"

	"github.com/gocql/gocql"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// bucketShift sets the bucket of an offset: offset >> bucketShift. A bucket
// holds at most 2^20 rows, a range of offsets of one log partition.
const bucketShift = 20

// bucketOf returns the bucket of a log offset.
func bucketOf(offset int64) int64 { return offset >> bucketShift }

// Store is a store.Store on a Cassandra cluster. Its methods are safe for
// concurrent use.
type Store struct {
	session *gocql.Session
	cfg     Config
	serial  gocql.SerialConsistency
	q       queries
}

var _ store.Store = (*Store)(nil)

// Open connects to the cluster that cfg names. It does not create the
// keyspace or the tables: call Migrate for that, once per deployment.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	cons, serial, err := cfg.parse()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cluster := gocql.NewCluster(cfg.Hosts...)
	cluster.ProtoVersion = 4
	cluster.Consistency = cons
	cluster.SerialConsistency = serial
	cluster.Timeout = cfg.Timeout
	cluster.ConnectTimeout = cfg.Timeout
	cluster.PageSize = cfg.PageSize
	cluster.Logger = driverLogger{log: cfg.Logger}
	// Writes other than lightweight transactions are idempotent upserts,
	// so they may be retried; lightweight transactions opt out (see lwt).
	cluster.RetryPolicy = &gocql.SimpleRetryPolicy{NumRetries: 2}
	fallback := gocql.RoundRobinHostPolicy()
	if cfg.LocalDC != "" {
		fallback = gocql.DCAwareRoundRobinPolicy(cfg.LocalDC)
	}
	cluster.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(fallback)
	if cfg.Username != "" {
		cluster.Authenticator = gocql.PasswordAuthenticator{Username: cfg.Username, Password: cfg.Password}
	}
	// gocql.ClusterConfig.CreateSession takes no context; it is bounded by
	// cfg.Timeout.
	session, err := cluster.CreateSession()
	if err != nil {
		// The configuration is valid, so the cluster did not answer (gocql
		// does not wrap the network error).
		return nil, &domain.Error{Code: domain.CodeUnavailable, Msg: "cassandra: open " + strings.Join(cfg.Hosts, ","), Err: err}
	}
	return &Store{session: session, cfg: cfg, serial: serial, q: newQueries(cfg.Keyspace)}, nil
}

// Close closes the session. It is safe to call more than once.
func (s *Store) Close() error {
	s.session.Close()
	return nil
}

// query returns a query of stmt bound to ctx.
func (s *Store) query(ctx context.Context, stmt string, args ...any) *gocql.Query {
	return s.session.Query(stmt, args...).WithContext(ctx)
}

// lwt returns a lightweight transaction of stmt bound to ctx. It is never
// retried by the driver: after a timeout its outcome is unknown, and a blind
// retry would report a row the first attempt wrote as someone else's.
func (s *Store) lwt(ctx context.Context, stmt string, args ...any) *gocql.Query {
	return s.query(ctx, stmt, args...).SerialConsistency(s.serial).RetryPolicy(nil)
}

// fail wraps a driver error. Errors that mean the cluster did not answer
// in time, or not enough replicas did, have code domain.CodeUnavailable.
func fail(op string, err error) error {
	if err == nil {
		return nil
	}
	if unavailable(err) {
		return &domain.Error{Code: domain.CodeUnavailable, Msg: "cassandra: " + op, Err: err}
	}
	return fmt.Errorf("cassandra: %s: %w", op, err)
}

// unavailable reports whether err says the cluster was unreachable, slow
// or short of replicas, rather than that the request was wrong.
func unavailable(err error) bool {
	var (
		unavail    *gocql.RequestErrUnavailable
		writeTO    *gocql.RequestErrWriteTimeout
		readTO     *gocql.RequestErrReadTimeout
		casUnknown *gocql.RequestErrCASWriteUnknown
		netErr     net.Error
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, gocql.ErrNoConnections),
		errors.Is(err, gocql.ErrTimeoutNoResponse),
		errors.Is(err, gocql.ErrConnectionClosed),
		errors.Is(err, gocql.ErrTooManyTimeouts),
		errors.Is(err, gocql.ErrNoStreams),
		errors.Is(err, gocql.ErrNoConnectionsStarted),
		errors.Is(err, gocql.ErrSessionClosed),
		errors.As(err, &unavail), errors.As(err, &writeTO), errors.As(err, &readTO),
		errors.As(err, &casUnknown), errors.As(err, &netErr):
		return true
	}
	var re gocql.RequestError
	if errors.As(err, &re) {
		switch re.Code() {
		case gocql.ErrCodeOverloaded, gocql.ErrCodeBootstrapping, gocql.ErrCodeUnavailable,
			gocql.ErrCodeWriteTimeout, gocql.ErrCodeReadTimeout, gocql.ErrCodeCASWriteUnknown:
			return true
		}
	}
	return false
}

// CreateUser adds an account. A taken name, or a taken id, is
// domain.ErrConflict.
//
// The name is claimed first, with a lightweight transaction on
// users_by_name; then the id, with one on users. If the id is taken, the
// name claimed a moment ago is released again (only if it is still this
// account's).
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	if u.ID == "" || u.Name == "" {
		return domain.Errorf(domain.CodeBadRequest, "cassandra: create user: empty id or name")
	}
	existing := map[string]any{}
	applied, err := s.lwt(ctx, s.q.insertUserByName, u.Name, string(u.ID), u.PasswordHash, u.CreatedAt).MapScanCAS(existing)
	if err != nil {
		return fail("create user", err)
	}
	if !applied {
		return domain.Errorf(domain.CodeConflict, "user name %q is taken", u.Name)
	}
	clear(existing)
	applied, err = s.lwt(ctx, s.q.insertUser, string(u.ID), u.Name, u.PasswordHash, u.CreatedAt).MapScanCAS(existing)
	if err != nil {
		return fail("create user", err)
	}
	if !applied {
		clear(existing)
		if _, err := s.lwt(ctx, s.q.releaseUserName, u.Name, string(u.ID)).MapScanCAS(existing); err != nil {
			return fail("create user: release name", err)
		}
		return domain.Errorf(domain.CodeConflict, "user id %s exists", u.ID)
	}
	return nil
}

// DeleteUser removes the account u.ID and frees its name, if the name is
// still u.ID's (a lightweight transaction, like the name's creation).
func (s *Store) DeleteUser(ctx context.Context, u store.User) error {
	if _, err := s.lwt(ctx, s.q.releaseUserName, u.Name, string(u.ID)).MapScanCAS(map[string]any{}); err != nil {
		return fail("delete user: release name", err)
	}
	if err := s.query(ctx, s.q.deleteUser, string(u.ID)).Exec(); err != nil {
		return fail("delete user", err)
	}
	return nil
}

// UserByName finds an account by name, or domain.ErrNotFound.
func (s *Store) UserByName(ctx context.Context, name string) (store.User, error) {
	u := store.User{Name: name}
	var id string
	err := s.query(ctx, s.q.selectUserByName, name).Scan(&id, &u.PasswordHash, &u.CreatedAt)
	if errors.Is(err, gocql.ErrNotFound) {
		return store.User{}, domain.Errorf(domain.CodeNotFound, "user %q not found", name)
	}
	if err != nil {
		return store.User{}, fail("user by name", err)
	}
	u.ID = domain.UserID(id)
	return u, nil
}

// User finds an account by id, or domain.ErrNotFound.
func (s *Store) User(ctx context.Context, id domain.UserID) (store.User, error) {
	u := store.User{ID: id}
	err := s.query(ctx, s.q.selectUser, string(id)).Scan(&u.Name, &u.PasswordHash, &u.CreatedAt)
	if errors.Is(err, gocql.ErrNotFound) {
		return store.User{}, domain.Errorf(domain.CodeNotFound, "user %s not found", id)
	}
	if err != nil {
		return store.User{}, fail("user", err)
	}
	return u, nil
}

// RevokeSession records (u, sid) as logged out until expires (a TTL:
// the row goes when the token would have expired anyway).
func (s *Store) RevokeSession(ctx context.Context, u domain.UserID, sid string, expires time.Time) error {
	ttl := max(int(time.Until(expires).Seconds())+60, 60)
	if err := s.query(ctx, s.q.insertRevoked, string(u), sid, expires, ttl).Exec(); err != nil {
		return fail("revoke session", err)
	}
	return nil
}

// SessionRevoked reports whether (u, sid) was revoked.
func (s *Store) SessionRevoked(ctx context.Context, u domain.UserID, sid string) (bool, error) {
	var at time.Time
	err := s.query(ctx, s.q.selectRevoked, string(u), sid).Scan(&at)
	if errors.Is(err, gocql.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fail("session revoked", err)
	}
	return true, nil
}

// decisionReads is how many reads of SendDecisions are in flight at once:
// the sends processor asks for a batch's keys (hundreds at a time under
// load) and waits for all of them before it decides; 16 at a time took
// 180 ms a batch at 1,000 msg/s, the processor's whole turn.
const decisionReads = 128

// SendDecisions returns the decisions recorded for those of keys that have
// one: a read of its send_decisions row per key (a key asked twice is read
// once), decisionReads at a time.
func (s *Store) SendDecisions(ctx context.Context, keys []store.SendKey) (map[store.SendKey]store.SendDecision, error) {
	keys = lastByKey(keys, func(k store.SendKey) store.SendKey { return k })
	ds := make([]store.SendDecision, len(keys))
	found := make([]bool, len(keys))
	err := store.EachParallelN(len(keys), decisionReads, func(i int) error {
		k := keys[i]
		d := store.SendDecision{SendKey: k}
		var (
			ch string
			id int64
		)
		err := s.query(ctx, s.q.selectSendDecision, string(k.SenderID), k.ClientMsgID).
			Scan(&ch, &id, &d.TextHash, &d.Partition, &d.Offset)
		if errors.Is(err, gocql.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		d.ChannelID, d.MessageID = domain.ChannelID(ch), domain.MessageID(id)
		ds[i], found[i] = d, true
		return nil
	})
	if err != nil {
		return nil, fail("send decisions", err)
	}
	out := make(map[store.SendKey]store.SendDecision, len(keys))
	for i, d := range ds {
		if found[i] {
			out[d.SendKey] = d
		}
	}
	return out, nil
}

// Positions returns, per partition, the next log offset the projection
// will read; partitions it never wrote are absent.
func (s *Store) Positions(ctx context.Context, projection string) (map[int32]int64, error) {
	pos := make(map[int32]int64)
	iter := s.query(ctx, s.q.selectPositions, projection).Iter()
	var (
		p   int32
		off int64
	)
	for iter.Scan(&p, &off) {
		pos[p] = off
	}
	if err := iter.Close(); err != nil {
		return nil, fail("positions of "+projection, err)
	}
	return pos, nil
}

// Channel returns a channel's state, or domain.ErrNotFound.
func (s *Store) Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error) {
	c := domain.Channel{ID: id}
	var (
		kind, creator string
		members       []string
	)
	err := s.query(ctx, s.q.selectChannel, string(id)).Scan(&kind, &c.Name, &creator, &members, &c.CreatedAt, &c.Version)
	if errors.Is(err, gocql.ErrNotFound) {
		return domain.Channel{}, domain.Errorf(domain.CodeNotFound, "channel %s not found", id)
	}
	if err != nil {
		return domain.Channel{}, fail("channel", err)
	}
	c.Kind = domain.ChannelKind(kind)
	c.CreatorID = domain.UserID(creator)
	if members != nil {
		c.Members = make([]domain.UserID, len(members))
		for i, m := range members {
			c.Members[i] = domain.UserID(m)
		}
	}
	return c, nil
}

// ChannelsOf lists the channels u is a member of, sorted by id. It pages
// through the user's row of user_channels.
func (s *Store) ChannelsOf(ctx context.Context, u domain.UserID) ([]domain.ChannelID, error) {
	chs := []domain.ChannelID{}
	iter := s.query(ctx, s.q.selectUserChannels, string(u)).Iter()
	var ch string
	for iter.Scan(&ch) {
		chs = append(chs, domain.ChannelID(ch))
	}
	if err := iter.Close(); err != nil {
		return nil, fail("channels of "+string(u), err)
	}
	return chs, nil
}

// MessagesBefore returns up to limit messages of the channel with an
// offset below before, newest first. A limit below 1 returns none. It reads
// the channel's non-empty buckets from the newest that may hold such an
// offset down, until it has limit messages.
func (s *Store) MessagesBefore(ctx context.Context, ch domain.ChannelID, before int64, limit int) ([]store.Message, error) {
	msgs := make([]store.Message, 0, max(0, min(limit, 256)))
	if limit < 1 || before == math.MinInt64 {
		return msgs, nil
	}
	msgs, err := s.messages(ctx, ch, s.q.selectBucketsDown, s.q.selectMessagesBefore, bucketOf(before-1), before, limit, msgs)
	if err != nil {
		return nil, fail("messages before", err)
	}
	return msgs, nil
}

// MessagesAfter returns up to limit messages of the channel with an offset
// above after, oldest first. A limit below 1 returns none. It reads the
// channel's non-empty buckets from the oldest that may hold such an offset
// up, until it has limit messages.
func (s *Store) MessagesAfter(ctx context.Context, ch domain.ChannelID, after int64, limit int) ([]store.Message, error) {
	msgs := make([]store.Message, 0, max(0, min(limit, 256)))
	if limit < 1 || after == math.MaxInt64 {
		return msgs, nil
	}
	msgs, err := s.messages(ctx, ch, s.q.selectBucketsUp, s.q.selectMessagesAfter, bucketOf(after+1), after, limit, msgs)
	if err != nil {
		return nil, fail("messages after", err)
	}
	return msgs, nil
}

// messages appends to msgs up to limit messages of ch: it walks the
// channel's buckets with bucketsStmt from bucket on, and reads each with
// msgsStmt bounded by offset.
func (s *Store) messages(ctx context.Context, ch domain.ChannelID, bucketsStmt, msgsStmt string, bucket, offset int64, limit int, msgs []store.Message) ([]store.Message, error) {
	buckets := s.query(ctx, bucketsStmt, string(ch), bucket).PageSize(64).Iter()
	var b int64
	for len(msgs) < limit && buckets.Scan(&b) {
		want := limit - len(msgs)
		iter := s.query(ctx, msgsStmt, string(ch), b, offset, want).PageSize(min(want, s.cfg.PageSize)).Iter()
		var (
			m                        store.Message
			id                       int64
			sender, device, clientID string
		)
		for iter.Scan(&m.Offset, &id, &sender, &device, &clientID, &m.Text, &m.SentAt) {
			m.ChannelID = ch
			m.MessageID = domain.MessageID(id)
			m.SenderID = domain.UserID(sender)
			m.DeviceID = domain.DeviceID(device)
			m.ClientMsgID = clientID
			msgs = append(msgs, m)
		}
		if err := iter.Close(); err != nil {
			buckets.Close()
			return nil, err
		}
	}
	if err := buckets.Close(); err != nil {
		return nil, err
	}
	return msgs, nil
}

// MessageByID finds one message of a channel, or domain.ErrNotFound. It
// looks up the message's offset in messages_by_id, then reads the message.
func (s *Store) MessageByID(ctx context.Context, ch domain.ChannelID, id domain.MessageID) (store.Message, error) {
	notFound := domain.Errorf(domain.CodeNotFound, "message %s not found in channel %s", id, ch)
	var off int64
	err := s.query(ctx, s.q.selectMessageOffset, string(ch), int64(id)).Scan(&off)
	if errors.Is(err, gocql.ErrNotFound) {
		return store.Message{}, notFound
	}
	if err != nil {
		return store.Message{}, fail("message by id", err)
	}
	m := store.Message{ChannelID: ch, Offset: off}
	var (
		got                      int64
		sender, device, clientID string
	)
	err = s.query(ctx, s.q.selectMessage, string(ch), bucketOf(off), off).
		Scan(&got, &sender, &device, &clientID, &m.Text, &m.SentAt)
	if errors.Is(err, gocql.ErrNotFound) || (err == nil && got != int64(id)) {
		// Not written yet (Apply writes the index and the message
		// concurrently), or the offset now holds another message.
		return store.Message{}, notFound
	}
	if err != nil {
		return store.Message{}, fail("message by id", err)
	}
	m.MessageID = id
	m.SenderID = domain.UserID(sender)
	m.DeviceID = domain.DeviceID(device)
	m.ClientMsgID = clientID
	return m, nil
}

// Inbox returns up to limit of u's inbox entries of the given epoch with
// an offset above after, in offset order. A limit below 1 returns none. It
// reads the user's non-empty buckets of the epoch from the oldest that may
// hold such an offset up, until it has limit entries.
func (s *Store) Inbox(ctx context.Context, u domain.UserID, epoch int32, after int64, limit int) ([]store.InboxEntry, error) {
	entries := make([]store.InboxEntry, 0, max(0, min(limit, 256)))
	if limit < 1 || after == math.MaxInt64 {
		return entries, nil
	}
	buckets := s.query(ctx, s.q.selectInboxBuckets, string(u), epoch, bucketOf(after+1)).PageSize(64).Iter()
	var b int64
	for len(entries) < limit && buckets.Scan(&b) {
		want := limit - len(entries)
		iter := s.query(ctx, s.q.selectInbox, string(u), epoch, b, after, want).PageSize(min(want, s.cfg.PageSize)).Iter()
		var (
			e                        store.InboxEntry
			msgUser, channel, sender string
			msgID                    int64
		)
		for iter.Scan(&e.Offset, &e.Partition, &msgUser, &channel, &msgID, &sender, &e.Message.Text,
			&e.Message.SentAt, &e.Message.ChannelPartition, &e.Message.ChannelOffset) {
			e.UserID = u
			e.Epoch = epoch
			e.Message.UserID = domain.UserID(msgUser)
			e.Message.ChannelID = domain.ChannelID(channel)
			e.Message.MessageID = domain.MessageID(msgID)
			e.Message.SenderID = domain.UserID(sender)
			entries = append(entries, e)
		}
		if err := iter.Close(); err != nil {
			buckets.Close()
			return nil, fail("inbox of "+string(u), err)
		}
	}
	if err := buckets.Close(); err != nil {
		return nil, fail("inbox of "+string(u), err)
	}
	return entries, nil
}

// inboxByMessageRows bounds the index rows InboxByMessage reads: a message
// has one, or a few after crashes.
const inboxByMessageRows = 16

// InboxByMessage finds u's inbox entry of the given epoch that copies
// message id, or domain.ErrNotFound. Of several such entries it finds the
// one with the lowest offset. It reads the message's offsets from
// inbox_by_message_span, lowest first, and returns the first entry that
// inbox holds at one of them: Apply writes the index and the entries
// concurrently, so an index row may briefly have no entry, and an entry may
// have been overwritten by one of another message. It reads
// inbox_by_message, which entries stored before version 009 of the schema
// are indexed in, only when the first finds nothing.
func (s *Store) InboxByMessage(ctx context.Context, u domain.UserID, epoch int32, id domain.MessageID) (store.InboxEntry, error) {
	e, err := s.inboxByMessage(ctx, s.query(ctx, s.q.selectInboxByMessage, string(u), epoch, spanOf(id), int64(id), inboxByMessageRows), u, epoch, id)
	if errors.Is(err, domain.ErrNotFound) {
		e, err = s.inboxByMessage(ctx, s.query(ctx, s.q.selectInboxByMessageOld, string(u), epoch, int64(id), inboxByMessageRows), u, epoch, id)
	}
	return e, err
}

// inboxByMessage is InboxByMessage with the offsets that index query
// reads.
func (s *Store) inboxByMessage(ctx context.Context, index *gocql.Query, u domain.UserID, epoch int32, id domain.MessageID) (store.InboxEntry, error) {
	iter := index.Iter()
	var (
		offsets []int64
		off     int64
	)
	for iter.Scan(&off) {
		offsets = append(offsets, off)
	}
	if err := iter.Close(); err != nil {
		return store.InboxEntry{}, fail("inbox by message", err)
	}
	for _, off := range offsets {
		e := store.InboxEntry{UserID: u, Epoch: epoch, Offset: off}
		var (
			msgUser, channel, sender string
			msgID                    int64
		)
		err := s.query(ctx, s.q.selectInboxEntry, string(u), epoch, bucketOf(off), off).Scan(
			&e.Partition, &msgUser, &channel, &msgID, &sender, &e.Message.Text,
			&e.Message.SentAt, &e.Message.ChannelPartition, &e.Message.ChannelOffset)
		if errors.Is(err, gocql.ErrNotFound) || (err == nil && msgID != int64(id)) {
			continue
		}
		if err != nil {
			return store.InboxEntry{}, fail("inbox by message", err)
		}
		e.Message.UserID = domain.UserID(msgUser)
		e.Message.ChannelID = domain.ChannelID(channel)
		e.Message.MessageID = id
		e.Message.SenderID = domain.UserID(sender)
		return e, nil
	}
	return store.InboxEntry{}, domain.Errorf(domain.CodeNotFound, "message %s not found in the inbox of %s, epoch %d", id, u, epoch)
}

// DeviceCursors returns every device position of u, sorted by device id:
// the clustering order of the user's partition of device_cursors.
func (s *Store) DeviceCursors(ctx context.Context, u domain.UserID) ([]store.DeviceCursor, error) {
	cursors := []store.DeviceCursor{}
	iter := s.query(ctx, s.q.selectCursors, string(u)).Iter()
	var (
		c      = store.DeviceCursor{UserID: u}
		device string
	)
	for iter.Scan(&device, &c.Epoch, &c.Position, &c.UpdatedAt) {
		c.DeviceID = domain.DeviceID(device)
		cursors = append(cursors, c)
	}
	if err := iter.Close(); err != nil {
		return nil, fail("device cursors of "+string(u), err)
	}
	return cursors, nil
}

// ChannelReads returns each member's read mark in the channel, sorted by
// user id: the clustering order of the channel's partition of
// channel_reads.
func (s *Store) ChannelReads(ctx context.Context, ch domain.ChannelID) ([]store.ReadMark, error) {
	reads := []store.ReadMark{}
	iter := s.query(ctx, s.q.selectReads, string(ch)).Iter()
	var (
		r    = store.ReadMark{ChannelID: ch}
		user string
		id   int64
	)
	for iter.Scan(&user, &r.Seq, &id, &r.UpdatedAt) {
		r.UserID = domain.UserID(user)
		r.MessageID = domain.MessageID(id)
		reads = append(reads, r)
	}
	if err := iter.Close(); err != nil {
		return nil, fail("reads of "+string(ch), err)
	}
	return reads, nil
}

// ReservePush records that the push notification of message id for u is
// being sent, unless it was already: then created is false. A lightweight
// transaction decides between concurrent calls; like every lightweight
// transaction of the store it is not retried by the driver, and an error (such as a timeout, after which
// the row may or may not exist) leaves the decision to the caller.
func (s *Store) ReservePush(ctx context.Context, u domain.UserID, id domain.MessageID, at time.Time) (bool, error) {
	existing := map[string]any{}
	applied, err := s.lwt(ctx, s.q.insertPush, string(u), int64(id), at).MapScanCAS(existing)
	if err != nil {
		return false, fail("reserve push", err)
	}
	return applied, nil
}
