package pebblestore

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// Options configures Open. The zero value is ready to use.
type Options struct {
	// Logger receives Pebble's own messages: background errors at level
	// Error, everything else at Debug. Nil discards them.
	Logger *slog.Logger
	// CacheSize is the size in bytes of Pebble's block cache. Zero means
	// 256 MiB: with 64 MiB the inbox projection's lookups missed it, and
	// reading blocks again took a fifth of the CPU at 2,000 msg/s.
	CacheSize int64
	// SyncInterval bounds how long a replayable batch (store.Batch) may
	// wait to be fsynced: a background sync of the log runs this often
	// while one waits, and any fsynced write makes it durable sooner.
	// Zero means 1 s. A replayable batch not yet durable at a crash is
	// replayed from the log, so this bounds the replay, not a loss.
	SyncInterval time.Duration
	// FS is the file system Pebble writes to; nil means the OS's. For
	// tests (vfs.NewStrictMem forgets what was not synced).
	FS vfs.FS
}

// Validate reports options that make no sense.
func (o Options) Validate() error {
	if o.CacheSize < 0 {
		return domain.Errorf(domain.CodeBadRequest, "pebblestore: cache size %d is negative", o.CacheSize)
	}
	if o.SyncInterval < 0 {
		return domain.Errorf(domain.CodeBadRequest, "pebblestore: sync interval %s is negative", o.SyncInterval)
	}
	return nil
}

const defaultSyncInterval = time.Second

const defaultCacheSize = 256 << 20

// reservationStripes is how many locks guard push reservations:
// reservations of different keys rarely wait for each other.
const reservationStripes = 64

// Store is a store.Store on a Pebble database in one directory. Its methods
// are safe for concurrent use.
type Store struct {
	db     *pebble.DB
	log    *slog.Logger
	closed atomic.Bool

	// userMu serializes CreateUser's check of the name and id with its write.
	userMu sync.Mutex
	// resMu serializes ReservePush per reservation key; seed picks the
	// stripe. Lock order: userMu and resMu are never held together.
	resMu [reservationStripes]sync.Mutex
	seed  maphash.Seed

	// positions keeps each projection's positions in memory once read:
	// this process is the store's only writer, and a scan of the
	// positions walks every version of them still in the memtable (6%
	// of the CPU at 800 msg/s, where every batch checks them). posMu
	// guards the map; each entry's own lock is held from an Apply's
	// commit to its update of the entry, so that it follows the commits.
	posMu     sync.Mutex
	positions map[string]*positionCache

	// channels keeps channel states once read, for the same reason:
	// every send reads its channel (a point read through the memtables
	// and levels, and a JSON decode: 8% of the CPU at 800 msg/s), and
	// only Apply writes them. Apply drops what it writes, and bumps chGen,
	// both before its commit and after it, and marks the channels as
	// being written (writing) in between; a read that missed stores what
	// it read only if chGen did not move meanwhile and the channel is not
	// being written. So a state read before a commit is never kept after
	// it, and none is kept while the commit may be visible (its positions
	// too: a caller that waits for them reads its own write). At most
	// maxCachedChannels are kept.
	chMu     sync.Mutex
	chGen    uint64
	channels map[domain.ChannelID]domain.Channel
	writing  map[domain.ChannelID]int
	// committed, if set, is called after each Apply's commit, before the
	// channels it wrote are marked written: for tests.
	committed func()

	// tops keeps, per (user, epoch), a bound on the message ids in the
	// inbox message index: a lookup of a higher id finds nothing without
	// reading (see inboxIndex).
	tops inboxTops

	// unsynced is set when a replayable batch was written without an
	// fsync; syncLoop fsyncs the log within syncEvery of it. syncs
	// counts those fsyncs (for tests); stop and stopped end the loop.
	unsynced  atomic.Bool
	syncEvery time.Duration
	syncs     atomic.Int64
	stop      chan struct{}
	stopped   chan struct{}
}

// maxCachedChannels bounds Store.channels (a few hundred bytes each).
const maxCachedChannels = 1 << 16

// positionCache is what a projection's positions are in the store, once
// loaded.
type positionCache struct {
	mu     sync.Mutex
	loaded bool
	pos    map[int32]int64
}

func (s *Store) positionCache(projection string) *positionCache {
	s.posMu.Lock()
	defer s.posMu.Unlock()
	if s.positions == nil {
		s.positions = map[string]*positionCache{}
	}
	pc := s.positions[projection]
	if pc == nil {
		pc = &positionCache{}
		s.positions[projection] = pc
	}
	return pc
}

var _ store.Store = (*Store)(nil)

// errClosed is returned by every method after Close.
var errClosed = domain.Errorf(domain.CodeUnavailable, "pebblestore: store is closed")

// Open opens, or creates, the store in dir. Only one Store may have dir
// open at a time; Open fails if another holds it.
func Open(dir string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	size := opts.CacheSize
	if size == 0 {
		size = defaultCacheSize
	}
	cache := pebble.NewCache(size)
	defer cache.Unref() // the DB holds its own reference
	pl := pebbleLogger{log: log}
	po := &pebble.Options{
		Cache:              cache,
		Logger:             pl,
		FormatMajorVersion: pebble.FormatNewest,
		// A bigger memtable than the 4 MiB default: fewer flushes and L0
		// files, so less compaction under a steady stream of inbox entries.
		MemTableSize: 32 << 20,
		// L0 compacts at 8 sublevels, not 4: the inbox's keys lead with
		// the user, so every flushed table spans the keyspace and every
		// compaction out of L0 rewrites the whole of the level below;
		// waiting for twice the tables halves how often.
		// BenchmarkStore/WriteInboxUnordered over 6,000 Applys: CPU
		// 17.9 to 25.3 s -> 14.0 and 15.5 s (deploy/README.md, session
		// 18). Reads merge up to 8 L0 sublevels, and
		// writes stop at 24 (default 12), keeping the margin above the
		// compaction threshold the default had.
		L0CompactionThreshold: 8,
		L0StopWritesThreshold: 24,
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) { log.Error("pebble background error", "err", err) },
		},
	}
	// Bloom filters on every level: the inbox projection looks up every
	// (user, message) it stores, nearly always to find nothing, and without
	// a filter each such miss reads an index block of every table it could
	// be in (a quarter of the CPU at 2,000 msg/s).
	po.Levels = make([]pebble.LevelOptions, 7)
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		po.Levels[i].FilterType = pebble.TableFilter
	}
	if opts.FS != nil {
		po.FS = opts.FS
	}
	po.EnsureDefaults()
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	s := &Store{db: db, log: log, seed: maphash.MakeSeed(),
		syncEvery: cmp.Or(opts.SyncInterval, defaultSyncInterval),
		stop:      make(chan struct{}), stopped: make(chan struct{})}
	go s.syncLoop()
	return s, nil
}

// syncLoop fsyncs the log when a replayable batch waits for it, every
// syncEvery, until Close.
func (s *Store) syncLoop() {
	defer close(s.stopped)
	t := time.NewTicker(s.syncEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.syncLog(); err != nil {
				s.log.Error("pebblestore: sync of replayable batches", "err", err)
			}
		}
	}
}

// syncLog fsyncs the log if a replayable batch was written since the last
// fsync it knows of.
func (s *Store) syncLog() error {
	if !s.unsynced.Swap(false) {
		return nil
	}
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		s.unsynced.Store(true)
		return err
	}
	s.syncs.Add(1)
	return nil
}

// Close flushes and closes the database (Pebble's close fsyncs its log,
// what replayable batches wrote included). Calls after the first return
// an error, as do calls of other methods.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return errClosed
	}
	close(s.stop)
	<-s.stopped
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("pebblestore: close: %w", err)
	}
	return nil
}

// check returns the reason not to start an operation, if any.
func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	return ctx.Err()
}

// Records as stored. They carry their own JSON names so that the on-disk
// format does not follow renames in package store.

type userRecord struct {
	ID           domain.UserID `json:"id"`
	Name         string        `json:"name"`
	PasswordHash string        `json:"password_hash"`
	CreatedAt    time.Time     `json:"created_at"`
}

// decisionRecord is a send decision as stored; its key holds the
// SendKey.
type decisionRecord struct {
	ChannelID domain.ChannelID `json:"channel_id"`
	MessageID domain.MessageID `json:"message_id"`
	TextHash  string           `json:"text_hash"`
	Partition int32            `json:"partition"`
	Offset    int64            `json:"offset"`
}

type messageRecord struct {
	ChannelID   domain.ChannelID `json:"channel_id"`
	Offset      int64            `json:"offset"`
	MessageID   domain.MessageID `json:"message_id"`
	SenderID    domain.UserID    `json:"sender_id"`
	DeviceID    domain.DeviceID  `json:"device_id"`
	ClientMsgID string           `json:"client_msg_id"`
	Text        string           `json:"text"`
	SentAt      time.Time        `json:"sent_at"`
}

// inboxRecord is the JSON form of an inbox entry, written before the
// compact form (inboxcodec.go) and still read.
type inboxRecord struct {
	UserID    domain.UserID       `json:"user_id"`
	Epoch     int32               `json:"epoch"`
	Partition int32               `json:"partition"`
	Offset    int64               `json:"offset"`
	Message   domain.InboxMessage `json:"message"`
}

type cursorRecord struct {
	UserID    domain.UserID   `json:"user_id"`
	DeviceID  domain.DeviceID `json:"device_id"`
	Epoch     int32           `json:"epoch"`
	Position  int64           `json:"position"`
	UpdatedAt time.Time       `json:"updated_at"`
}

type readRecord struct {
	ChannelID domain.ChannelID `json:"channel_id"`
	UserID    domain.UserID    `json:"user_id"`
	Seq       int64            `json:"seq"`
	MessageID domain.MessageID `json:"message_id"`
	UpdatedAt time.Time        `json:"updated_at"`
}

type pushRecord struct {
	ReservedAt time.Time `json:"reserved_at"`
}

// get reads key into v (JSON); found is false if the key is absent.
func (s *Store) get(k []byte, v any) (found bool, err error) {
	b, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("decode %q: %w", k, err)
	}
	return true, nil
}

// getU64 reads the 8-byte big-endian value at k (an offset in an index);
// found is false when k is absent.
func (s *Store) getU64(k []byte) (v uint64, found bool, err error) {
	b, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	if len(b) != 8 {
		return 0, false, fmt.Errorf("malformed value of %q: %d bytes, want 8", k, len(b))
	}
	return binary.BigEndian.Uint64(b), true, nil
}

// has reports whether key is present.
func (s *Store) has(k []byte) (bool, error) {
	_, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// RevokeSession records (u, sid) as logged out, synced to disk. The
// record is kept (a few dozen bytes a logout).
func (s *Store) RevokeSession(ctx context.Context, u domain.UserID, sid string, expires time.Time) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	v, _ := json.Marshal(expires.UTC())
	if err := s.db.Set(revokedKey(u, sid), v, pebble.Sync); err != nil {
		return fmt.Errorf("pebblestore: revoke session: %w", err)
	}
	return nil
}

// SessionRevoked reports whether (u, sid) was revoked.
func (s *Store) SessionRevoked(ctx context.Context, u domain.UserID, sid string) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	found, err := s.has(revokedKey(u, sid))
	if err != nil {
		return false, fmt.Errorf("pebblestore: session revoked: %w", err)
	}
	return found, nil
}

// CreateUser adds an account. A taken name, or a taken id, is
// domain.ErrConflict.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	v, err := json.Marshal(userRecord(u))
	if err != nil {
		return fmt.Errorf("pebblestore: create user: %w", err)
	}
	s.userMu.Lock()
	defer s.userMu.Unlock()
	nameKey := userNameKey(u.Name)
	if taken, err := s.has(nameKey); err != nil {
		return fmt.Errorf("pebblestore: create user: %w", err)
	} else if taken {
		return domain.Errorf(domain.CodeConflict, "user name %q is taken", u.Name)
	}
	idKey := userKey(u.ID)
	if taken, err := s.has(idKey); err != nil {
		return fmt.Errorf("pebblestore: create user: %w", err)
	} else if taken {
		return domain.Errorf(domain.CodeConflict, "user id %s exists", u.ID)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(idKey, v, nil); err != nil {
		return fmt.Errorf("pebblestore: create user: %w", err)
	}
	if err := b.Set(nameKey, []byte(u.ID), nil); err != nil {
		return fmt.Errorf("pebblestore: create user: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("pebblestore: create user: %w", err)
	}
	return nil
}

// DeleteUser removes the account u.ID and frees its name, if the name is
// still u.ID's.
func (s *Store) DeleteUser(ctx context.Context, u store.User) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	s.userMu.Lock()
	defer s.userMu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	nameKey := userNameKey(u.Name)
	owner, closer, err := s.db.Get(nameKey)
	switch {
	case err == nil:
		mine := string(owner) == string(u.ID)
		closer.Close()
		if mine {
			if err := b.Delete(nameKey, nil); err != nil {
				return fmt.Errorf("pebblestore: delete user: %w", err)
			}
		}
	case !errors.Is(err, pebble.ErrNotFound):
		return fmt.Errorf("pebblestore: delete user: %w", err)
	}
	if err := b.Delete(userKey(u.ID), nil); err != nil {
		return fmt.Errorf("pebblestore: delete user: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("pebblestore: delete user: %w", err)
	}
	return nil
}

// UserByName finds an account by name, or domain.ErrNotFound.
func (s *Store) UserByName(ctx context.Context, name string) (store.User, error) {
	if err := s.check(ctx); err != nil {
		return store.User{}, err
	}
	id, closer, err := s.db.Get(userNameKey(name))
	if errors.Is(err, pebble.ErrNotFound) {
		return store.User{}, domain.Errorf(domain.CodeNotFound, "user %q not found", name)
	}
	if err != nil {
		return store.User{}, fmt.Errorf("pebblestore: user by name: %w", err)
	}
	uid := domain.UserID(id)
	closer.Close()
	return s.User(ctx, uid)
}

// User finds an account by id, or domain.ErrNotFound.
func (s *Store) User(ctx context.Context, id domain.UserID) (store.User, error) {
	if err := s.check(ctx); err != nil {
		return store.User{}, err
	}
	var r userRecord
	found, err := s.get(userKey(id), &r)
	if err != nil {
		return store.User{}, fmt.Errorf("pebblestore: user: %w", err)
	}
	if !found {
		return store.User{}, domain.Errorf(domain.CodeNotFound, "user %s not found", id)
	}
	return store.User(r), nil
}

// resLock returns the lock of one reservation key.
func (s *Store) resLock(k []byte) *sync.Mutex {
	return &s.resMu[maphash.Bytes(s.seed, k)%reservationStripes]
}

// SendDecisions returns the decisions recorded for those of keys that have
// one, a point read each.
func (s *Store) SendDecisions(ctx context.Context, keys []store.SendKey) (map[store.SendKey]store.SendDecision, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	out := make(map[store.SendKey]store.SendDecision, len(keys))
	for _, k := range keys {
		var r decisionRecord
		found, err := s.get(sendDecisionKey(k), &r)
		if err != nil {
			return nil, fmt.Errorf("pebblestore: send decisions: %w", err)
		}
		if found {
			out[k] = store.SendDecision{
				SendKey: k, ChannelID: r.ChannelID, MessageID: r.MessageID,
				TextHash: r.TextHash, Partition: r.Partition, Offset: r.Offset,
			}
		}
	}
	return out, nil
}

// Apply writes the batch's state and its positions in one atomic Pebble
// batch, fsynced before it returns unless the batch is replayable (see
// store.Batch.Replayable and Options.SyncInterval). Within the batch,
// later entries win over earlier ones with the same key.
func (s *Store) Apply(ctx context.Context, in store.Batch) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if in.Projection == "" && len(in.Positions) > 0 {
		return domain.Errorf(domain.CodeBadRequest, "pebblestore: positions without a projection name")
	}
	if err := s.apply(in); err != nil {
		return fmt.Errorf("pebblestore: apply %s: %w", in.Projection, err)
	}
	return nil
}

func (s *Store) apply(in store.Batch) error {
	b := s.db.NewBatch()
	defer b.Close()
	if len(in.Channels) > 0 {
		s.writeChannels(in.Channels, 1)
		defer s.writeChannels(in.Channels, -1) // after the commit
	}
	for _, c := range in.Channels {
		v, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if err := b.Set(channelKey(c.ID), v, nil); err != nil {
			return err
		}
	}
	for _, m := range in.Memberships {
		k := membershipKey(m.UserID, m.ChannelID)
		var err error
		if m.Member {
			err = b.Set(k, nil, nil)
		} else {
			err = b.Delete(k, nil)
		}
		if err != nil {
			return err
		}
	}
	var off [8]byte
	for _, m := range in.Messages {
		v, err := json.Marshal(messageRecord(m))
		if err != nil {
			return err
		}
		if err := b.Set(messageKey(m.ChannelID, m.Offset), v, nil); err != nil {
			return err
		}
		binary.BigEndian.PutUint64(off[:], uint64(m.Offset))
		if err := b.Set(messageIDKey(m.ChannelID, m.MessageID), off[:], nil); err != nil {
			return err
		}
	}
	for _, e := range in.Inbox {
		if err := b.Set(inboxKey(e.UserID, e.Epoch, e.Offset), encodeInbox(e), nil); err != nil {
			return err
		}
	}
	for _, c := range in.Cursors {
		v, err := json.Marshal(cursorRecord(c))
		if err != nil {
			return err
		}
		if err := b.Set(cursorKey(c.UserID, c.DeviceID), v, nil); err != nil {
			return err
		}
	}
	for _, r := range in.Reads {
		v, err := json.Marshal(readRecord(r))
		if err != nil {
			return err
		}
		if err := b.Set(readKey(r.ChannelID, r.UserID), v, nil); err != nil {
			return err
		}
	}
	// Send decisions blind, without a lock: a key written twice is
	// written with the same values (see store.Batch).
	for _, d := range in.Decisions {
		v, err := json.Marshal(decisionRecord{
			ChannelID: d.ChannelID, MessageID: d.MessageID,
			TextHash: d.TextHash, Partition: d.Partition, Offset: d.Offset,
		})
		if err != nil {
			return err
		}
		if err := b.Set(sendDecisionKey(d.SendKey), v, nil); err != nil {
			return err
		}
	}
	if err := s.indexInbox(b, in.Inbox); err != nil {
		return err
	}
	for p, o := range in.Positions {
		binary.BigEndian.PutUint64(off[:], uint64(o))
		if err := b.Set(positionKey(in.Projection, p), off[:], nil); err != nil {
			return err
		}
	}
	if b.Empty() {
		return nil
	}
	wo := pebble.Sync
	if lazy(in) {
		wo = pebble.NoSync
	}
	if len(in.Positions) == 0 {
		if err := s.commit(b, wo); err != nil {
			return err
		}
		s.afterCommit()
		return nil
	}
	pc := s.positionCache(in.Projection)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if err := s.commit(b, wo); err != nil {
		pc.loaded = false // not known whether it was written
		return err
	}
	if pc.loaded {
		maps.Copy(pc.pos, in.Positions)
	}
	s.afterCommit()
	return nil
}

// lazy reports whether a batch may be written without an fsync of its
// own: it says it is replayable and holds nothing but messages, inbox
// entries, send decisions and positions (see store.Batch.Replayable).
func lazy(in store.Batch) bool {
	return in.Replayable && len(in.Channels) == 0 && len(in.Memberships) == 0 &&
		len(in.Cursors) == 0 && len(in.Reads) == 0
}

// commit commits b with wo. A commit without an fsync marks the log for
// syncLoop once it is in the log, so that a sync begun before the mark
// leaves it set.
func (s *Store) commit(b *pebble.Batch, wo *pebble.WriteOptions) error {
	err := b.Commit(wo)
	if wo == pebble.NoSync {
		s.unsynced.Store(true)
	}
	return err
}

func (s *Store) afterCommit() {
	if s.committed != nil {
		s.committed()
	}
}

// indexInbox adds to b the inbox message index keys of entries, blind:
// each copy of a message has a key of its own, and the lowest offset is
// the first (inboxMsgKey). The tops are raised before the commit.
func (s *Store) indexInbox(b *pebble.Batch, entries []store.InboxEntry) error {
	for _, e := range entries {
		k := inboxMsgKey(e.UserID, e.Epoch, e.Message.MessageID, e.Offset)
		s.raiseInboxTop(k)
		if err := b.Set(k, nil, nil); err != nil {
			return err
		}
	}
	return nil
}

// inboxIndex returns the offsets of the copies of a message in the inbox
// message index, the lowest first, from the keys under the message's
// prefix: a key written before offsets were in the keys (the prefix
// itself, its value the lowest offset then) and the copies' own. A message
// id above its (user, epoch)'s top is not looked for: the index holds no
// such key (inboxTops).
func (s *Store) inboxIndex(prefix []byte) ([]int64, error) {
	above, err := s.aboveInboxTop(prefix)
	if err != nil || above {
		return nil, err
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	var offs []int64
	for ok := it.First(); ok; ok = it.Next() {
		switch _, _, rest := splitInboxMsgKey(it.Key()); len(rest) {
		case 0:
			if v := it.Value(); len(v) == 8 {
				offs = append(offs, int64(binary.BigEndian.Uint64(v)))
			}
		case 8:
			offs = append(offs, decodeI64(rest))
		}
	}
	slices.Sort(offs)
	return offs, errors.Join(it.Error(), it.Close())
}

// inboxTops keeps, per (user, epoch), a message id at or above every id
// that user's inbox message index holds for the epoch (its top), so that
// a lookup of a higher id (nearly every lookup: ids grow with time, and
// the inbox projection looks up each new entry's message before it
// stores it) skips the read. Without it, the two reads of a key that is
// nearly never there (the projection's InboxByMessage and, before the
// index was written blind, Apply's) were 15% of chatd's CPU at 2,000
// msg/s: a search of the 32 MiB memtable and a table iterator per level.
//
// A top may only be too high (then a lookup reads, as it did before),
// never too low. So:
//   - a top learnt by reading the index is kept as the larger of it and
//     what is known, and only if gen did not move meanwhile;
//   - indexInbox raises the top of every id it writes before its commit;
//     for a (user, epoch) without a known top it moves gen
//     instead, so that no read begun before its commit keeps a top
//     without it;
//   - dropping tops (bound, reset) moves gen.
type inboxTops struct {
	mu  sync.Mutex
	gen uint64
	top map[string]uint64 // by the index's (user, epoch) prefix
}

// maxInboxTops bounds inboxTops.top (some 50 bytes each); past it, all
// are dropped and learnt again, one index read per (user, epoch).
const maxInboxTops = 1 << 18

// aboveInboxTop reports whether the message id of the inbox message
// index key k is above its (user, epoch)'s top.
func (s *Store) aboveInboxTop(k []byte) (bool, error) {
	prefix, id, _ := splitInboxMsgKey(k)
	t := &s.tops
	t.mu.Lock()
	top, known := t.top[string(prefix)]
	gen := t.gen
	t.mu.Unlock()
	if !known {
		var err error
		if top, err = s.readInboxTop(prefix); err != nil {
			return false, err
		}
		s.learnInboxTop(prefix, gen, top)
	}
	return id > top, nil
}

// learnInboxTop keeps top, read from the index after gen was seen, as the
// top of prefix's (user, epoch), unless gen moved meanwhile.
func (s *Store) learnInboxTop(prefix []byte, gen, top uint64) {
	t := &s.tops
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gen != gen {
		return
	}
	if t.top == nil || len(t.top) >= maxInboxTops {
		t.top = make(map[string]uint64)
	}
	t.top[string(prefix)] = max(t.top[string(prefix)], top)
}

// raiseInboxTop makes sure the top of k's (user, epoch) is at least k's
// message id, before k is committed.
func (s *Store) raiseInboxTop(k []byte) {
	prefix, id, _ := splitInboxMsgKey(k)
	t := &s.tops
	t.mu.Lock()
	defer t.mu.Unlock()
	if top, known := t.top[string(prefix)]; known {
		t.top[string(prefix)] = max(top, id)
		return
	}
	t.gen++ // a read of this top begun before the commit would miss k
}

// dropInboxTops forgets every top (the index was deleted).
func (s *Store) dropInboxTops() {
	t := &s.tops
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	t.top = nil
}

// readInboxTop returns the highest message id in the inbox message index
// under prefix, a (user, epoch), or 0 if it holds none.
func (s *Store) readInboxTop(prefix []byte) (uint64, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, err
	}
	var top uint64
	if it.Last() {
		_, top, _ = splitInboxMsgKey(it.Key())
	}
	return top, errors.Join(it.Error(), it.Close())
}

// Positions returns, per partition, the next log offset the projection
// will read; partitions it never wrote are absent.
func (s *Store) Positions(ctx context.Context, projection string) (map[int32]int64, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	pc := s.positionCache(projection)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if !pc.loaded {
		pos, err := s.readPositions(projection)
		if err != nil {
			return nil, err
		}
		pc.pos, pc.loaded = pos, true
	}
	return maps.Clone(pc.pos), nil
}

// readPositions reads the projection's positions from the database.
func (s *Store) readPositions(projection string) (map[int32]int64, error) {
	pos := make(map[int32]int64)
	prefix := positionPrefix(projection)
	err := s.scan(prefix, prefixEnd(prefix), false, -1, func(k, v []byte) error {
		if len(k) != len(prefix)+4 || len(v) != 8 {
			return fmt.Errorf("malformed position %q", k)
		}
		pos[decodeI32(k[len(prefix):])] = int64(binary.BigEndian.Uint64(v))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: positions of %s: %w", projection, err)
	}
	return pos, nil
}

// Channel returns a channel's state, or domain.ErrNotFound.
func (s *Store) Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error) {
	if err := s.check(ctx); err != nil {
		return domain.Channel{}, err
	}
	s.chMu.Lock()
	c, ok := s.channels[id]
	gen := s.chGen
	s.chMu.Unlock()
	if ok {
		c.Members = slices.Clone(c.Members) // the caller's to change
		return c, nil
	}
	found, err := s.get(channelKey(id), &c)
	if err != nil {
		return domain.Channel{}, fmt.Errorf("pebblestore: channel: %w", err)
	}
	if !found {
		return domain.Channel{}, domain.Errorf(domain.CodeNotFound, "channel %s not found", id)
	}
	s.chMu.Lock()
	if s.chGen == gen && s.writing[id] == 0 {
		if s.channels == nil || len(s.channels) >= maxCachedChannels {
			s.channels = map[domain.ChannelID]domain.Channel{}
		}
		kept := c
		kept.Members = slices.Clone(c.Members) // c's are the caller's
		s.channels[id] = kept
	}
	s.chMu.Unlock()
	return c, nil
}

// writeChannels drops the cached states of the channels an Apply writes,
// moves chGen, so that a read that missed before does not keep what it
// read, and counts them as being written (d 1, before the commit) or no
// longer (d -1, after it, committed or not).
func (s *Store) writeChannels(chs []domain.Channel, d int) {
	s.chMu.Lock()
	defer s.chMu.Unlock()
	s.chGen++
	if s.writing == nil {
		s.writing = map[domain.ChannelID]int{}
	}
	for _, c := range chs {
		delete(s.channels, c.ID)
		if s.writing[c.ID] += d; s.writing[c.ID] <= 0 {
			delete(s.writing, c.ID)
		}
	}
}

// ChannelsOf lists the channels u is a member of, sorted by id.
func (s *Store) ChannelsOf(ctx context.Context, u domain.UserID) ([]domain.ChannelID, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	chs := []domain.ChannelID{}
	prefix := membershipPrefix(u)
	err := s.scan(prefix, prefixEnd(prefix), false, -1, func(k, _ []byte) error {
		chs = append(chs, domain.ChannelID(k[len(prefix):]))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: channels of %s: %w", u, err)
	}
	return chs, nil
}

// MessagesBefore returns up to limit messages of the channel with an
// offset below before, newest first. A limit below 1 returns none.
func (s *Store) MessagesBefore(ctx context.Context, ch domain.ChannelID, before int64, limit int) ([]store.Message, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s.messages(messagePrefix(ch), messageKey(ch, before), true, limit)
}

// MessagesAfter returns up to limit messages of the channel with an offset
// above after, oldest first. A limit below 1 returns none.
func (s *Store) MessagesAfter(ctx context.Context, ch domain.ChannelID, after int64, limit int) ([]store.Message, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if after == math.MaxInt64 {
		return []store.Message{}, nil
	}
	prefix := messagePrefix(ch)
	return s.messages(messageKey(ch, after+1), prefixEnd(prefix), false, limit)
}

func (s *Store) messages(lower, upper []byte, reverse bool, limit int) ([]store.Message, error) {
	msgs := make([]store.Message, 0, max(0, min(limit, 256)))
	if limit < 1 {
		return msgs, nil
	}
	err := s.scan(lower, upper, reverse, limit, func(_, v []byte) error {
		var r messageRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		msgs = append(msgs, store.Message(r))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: messages: %w", err)
	}
	return msgs, nil
}

// MessageByID finds one message of a channel, or domain.ErrNotFound.
func (s *Store) MessageByID(ctx context.Context, ch domain.ChannelID, id domain.MessageID) (store.Message, error) {
	if err := s.check(ctx); err != nil {
		return store.Message{}, err
	}
	offset, found, err := s.getU64(messageIDKey(ch, id))
	if err != nil {
		return store.Message{}, fmt.Errorf("pebblestore: message by id: %w", err)
	}
	if !found {
		return store.Message{}, domain.Errorf(domain.CodeNotFound, "message %s not found in channel %s", id, ch)
	}
	var r messageRecord
	found, err = s.get(messageKey(ch, int64(offset)), &r)
	if err != nil {
		return store.Message{}, fmt.Errorf("pebblestore: message by id: %w", err)
	}
	if !found || r.MessageID != id {
		// The index is written with the message, in one batch; this is a
		// later message overwriting the offset with another id.
		return store.Message{}, domain.Errorf(domain.CodeNotFound, "message %s not found in channel %s", id, ch)
	}
	return store.Message(r), nil
}

// Inbox returns up to limit of u's inbox entries of the given epoch with
// an offset above after, in offset order. A limit below 1 returns none.
func (s *Store) Inbox(ctx context.Context, u domain.UserID, epoch int32, after int64, limit int) ([]store.InboxEntry, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	entries := make([]store.InboxEntry, 0, max(0, min(limit, 256)))
	if after == math.MaxInt64 || limit < 1 {
		return entries, nil
	}
	prefix := inboxPrefix(u, epoch)
	err := s.scan(inboxKey(u, epoch, after+1), prefixEnd(prefix), false, limit, func(k, v []byte) error {
		if len(k) < len(prefix)+8 {
			return fmt.Errorf("malformed inbox key %q", k)
		}
		offset := int64(binary.BigEndian.Uint64(k[len(k)-8:]) ^ (1 << 63))
		e, err := decodeInbox(u, epoch, offset, v)
		if err != nil {
			return fmt.Errorf("inbox entry at %d: %w", offset, err)
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: inbox of %s: %w", u, err)
	}
	return entries, nil
}

// InboxByMessage finds u's inbox entry of the given epoch that copies
// message id, or domain.ErrNotFound. Of several such entries it finds the
// one with the lowest offset: the index keeps that one.
func (s *Store) InboxByMessage(ctx context.Context, u domain.UserID, epoch int32, id domain.MessageID) (store.InboxEntry, error) {
	if err := s.check(ctx); err != nil {
		return store.InboxEntry{}, err
	}
	notFound := domain.Errorf(domain.CodeNotFound, "message %s not found in the inbox of %s, epoch %d", id, u, epoch)
	offs, err := s.inboxIndex(inboxMsgPrefix(u, epoch, id))
	if err != nil {
		return store.InboxEntry{}, fmt.Errorf("pebblestore: inbox by message: %w", err)
	}
	for _, offset := range offs {
		v, closer, err := s.db.Get(inboxKey(u, epoch, offset))
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			return store.InboxEntry{}, fmt.Errorf("pebblestore: inbox by message: %w", err)
		}
		e, err := decodeInbox(u, epoch, offset, v)
		closer.Close()
		if err != nil {
			return store.InboxEntry{}, fmt.Errorf("pebblestore: inbox by message: entry at %d: %w", offset, err)
		}
		// The index is written with the entry, in one batch; an entry of
		// another message is a later one overwriting the offset.
		if e.Message.MessageID == id {
			return e, nil
		}
	}
	return store.InboxEntry{}, notFound
}

// DeviceCursors returns every device position of u, sorted by device id.
func (s *Store) DeviceCursors(ctx context.Context, u domain.UserID) ([]store.DeviceCursor, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	cursors := []store.DeviceCursor{}
	prefix := cursorPrefix(u)
	err := s.scan(prefix, prefixEnd(prefix), false, -1, func(_, v []byte) error {
		var r cursorRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		cursors = append(cursors, store.DeviceCursor(r))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: device cursors of %s: %w", u, err)
	}
	return cursors, nil
}

// ChannelReads returns each member's read mark in the channel, sorted by
// user id.
func (s *Store) ChannelReads(ctx context.Context, ch domain.ChannelID) ([]store.ReadMark, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	reads := []store.ReadMark{}
	prefix := readPrefix(ch)
	err := s.scan(prefix, prefixEnd(prefix), false, -1, func(_, v []byte) error {
		var r readRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		reads = append(reads, store.ReadMark(r))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: reads of %s: %w", ch, err)
	}
	return reads, nil
}

// ReservePush records that the push notification of message id for u is
// being sent, unless it was already: then created is false. The check and
// the fsynced write happen under the key's reservation lock.
func (s *Store) ReservePush(ctx context.Context, u domain.UserID, id domain.MessageID, at time.Time) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	k := pushKey(u, id)
	mu := s.resLock(k)
	mu.Lock()
	defer mu.Unlock()
	if found, err := s.has(k); err != nil {
		return false, fmt.Errorf("pebblestore: reserve push: %w", err)
	} else if found {
		return false, nil
	}
	v, err := json.Marshal(pushRecord{ReservedAt: at})
	if err != nil {
		return false, fmt.Errorf("pebblestore: reserve push: %w", err)
	}
	if err := s.db.Set(k, v, pebble.Sync); err != nil {
		return false, fmt.Errorf("pebblestore: reserve push: %w", err)
	}
	return true, nil
}

// scan calls fn for each key in [lower, upper), in reverse order if
// reverse, stopping after limit keys unless limit is negative. A nil upper
// means no upper bound. The slices passed to fn are valid only during the
// call.
func (s *Store) scan(lower, upper []byte, reverse bool, limit int, fn func(k, v []byte) error) (err error) {
	if limit == 0 {
		return nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := it.Close(); err == nil {
			err = cerr
		}
	}()
	ok, step := it.First(), it.Next
	if reverse {
		ok, step = it.Last(), it.Prev
	}
	for n := 0; ok && (limit < 0 || n < limit); ok, n = step(), n+1 {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// pebbleLogger sends Pebble's log to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf logs and panics: Pebble expects it not to return.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg, "component", "pebble")
	panic("pebble: " + msg)
}

// ownedTables are the key prefixes of the state each projection alone
// writes: ResetProjection deletes them.
var ownedTables = map[string][]byte{
	"history": {tMessage, tMessageID}, // channels and memberships are kept (store.Store.ResetProjection)
	"inbox":   {tInbox, tInboxMsg},
	"cursors": {tCursor, tRead},
}

// ResetProjection deletes the projection's positions and the tables it
// alone writes (see store.Store), with range deletions in one atomic,
// fsynced batch. Accounts, send decisions and push reservations are never
// deleted.
func (s *Store) ResetProjection(ctx context.Context, projection string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	pc := s.positionCache(projection)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.loaded = false
	b := s.db.NewBatch()
	defer b.Close()
	prefix := positionPrefix(projection)
	if err := b.DeleteRange(prefix, prefixEnd(prefix), nil); err != nil {
		return fmt.Errorf("pebblestore: reset %s: %w", projection, err)
	}
	for _, t := range ownedTables[projection] {
		if err := b.DeleteRange([]byte{t}, []byte{t + 1}, nil); err != nil {
			return fmt.Errorf("pebblestore: reset %s: %w", projection, err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("pebblestore: reset %s: %w", projection, err)
	}
	s.dropInboxTops() // too high now, which is safe; learnt again tighter
	return nil
}
