// Package store defines what the chat keeps outside the log: accounts, the
// send de-duplication table, and the state that projections build from the
// log (channels, history, inboxes) together with each projection's position.
//
// Two implementations satisfy Store and run one contract suite
// (store/storetest): the embedded one on Pebble (store/pebblestore) and
// Cassandra (store/cassandra).
//
// Idempotence is the rule for every write: applying the same Batch twice
// leaves the same state, so a projection that crashed between writing its
// state and its position may safely apply a batch again.
package store

import (
	"context"
	"time"

	"github.com/evchat/evchat/domain"
)

// Store is the whole store. Consumers declare the few methods they use.
type Store interface {
	// CreateUser adds an account. A taken name is domain.ErrConflict.
	CreateUser(ctx context.Context, u User) error
	// DeleteUser removes the account u.ID and frees its name, if the name
	// is still u.ID's: sign-up undoes an account whose user.registered did
	// not reach the log. An absent account is no error.
	DeleteUser(ctx context.Context, u User) error
	// UserByName finds an account by name, or domain.ErrNotFound.
	UserByName(ctx context.Context, name string) (User, error)
	// User finds an account by id, or domain.ErrNotFound.
	User(ctx context.Context, id domain.UserID) (User, error)
	// RevokeSession records that session sid of user u (one login's
	// token) is logged out, durably, at least until expires (the token's
	// own expiry; after it the token is refused anyway).
	RevokeSession(ctx context.Context, u domain.UserID, sid string, expires time.Time) error
	// SessionRevoked reports whether RevokeSession recorded (u, sid).
	SessionRevoked(ctx context.Context, u domain.UserID, sid string) (bool, error)

	// SendDecisions returns the decisions recorded for those of keys that
	// have one (Batch.Decisions); a key without one is absent from the
	// map.
	SendDecisions(ctx context.Context, keys []SendKey) (map[SendKey]SendDecision, error)

	// Apply writes a projection's state changes and its new positions.
	// The embedded store writes all of it atomically; Cassandra writes the
	// state first and the positions last, each write idempotent.
	Apply(ctx context.Context, b Batch) error
	// Positions returns, per partition, the next log offset the projection
	// will read; partitions it never wrote are absent.
	Positions(ctx context.Context, projection string) (map[int32]int64, error)

	// Channel returns a channel's state, or domain.ErrNotFound.
	Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error)
	// ChannelsOf lists the channels u is a member of, sorted by id.
	ChannelsOf(ctx context.Context, u domain.UserID) ([]domain.ChannelID, error)

	// MessagesBefore returns up to limit messages of the channel with an
	// offset below before, newest (highest offset) first.
	MessagesBefore(ctx context.Context, ch domain.ChannelID, before int64, limit int) ([]Message, error)
	// MessagesAfter returns up to limit messages of the channel with an
	// offset above after, oldest first.
	MessagesAfter(ctx context.Context, ch domain.ChannelID, after int64, limit int) ([]Message, error)
	// MessageByID finds one message of a channel, or domain.ErrNotFound.
	MessageByID(ctx context.Context, ch domain.ChannelID, id domain.MessageID) (Message, error)

	// Inbox returns up to limit of u's inbox entries of the given epoch with
	// an offset above after, in offset order.
	Inbox(ctx context.Context, u domain.UserID, epoch int32, after int64, limit int) ([]InboxEntry, error)
	// InboxByMessage finds u's inbox entry of the given epoch that copies
	// message id, or domain.ErrNotFound. The inbox projection uses it to
	// keep one entry per message: after a crash, an inbox topic may hold a
	// second copy of an entry at a later offset.
	InboxByMessage(ctx context.Context, u domain.UserID, epoch int32, id domain.MessageID) (InboxEntry, error)

	// DeviceCursors returns every device position of u recorded by the
	// cursors projection, sorted by device id.
	DeviceCursors(ctx context.Context, u domain.UserID) ([]DeviceCursor, error)
	// ChannelReads returns each member's read mark in the channel, sorted
	// by user id.
	ChannelReads(ctx context.Context, ch domain.ChannelID) ([]ReadMark, error)

	// ReservePush records that the push notification of message id for u
	// is being sent, unless it was already: then created is false. Atomic:
	// of two concurrent calls exactly one creates. Reservations are never
	// removed, also not by a projection replay, so no notification is
	// sent twice.
	ReservePush(ctx context.Context, u domain.UserID, id domain.MessageID, at time.Time) (created bool, err error)

	// ResetProjection deletes a projection's positions and the state only
	// it writes, so that it can be rebuilt from the beginning of the log:
	// "history" owns the messages; "inbox" owns the inbox entries;
	// "cursors" owns device cursors and read marks; any other name owns
	// only its positions. Channels and memberships are kept: the gateway
	// checks membership against them while history is rebuilt, and the
	// rebuild overwrites them (see domain.Channel.Version). Accounts, send
	// decisions and push reservations are never deleted. It must not run
	// while the projection applies batches.
	ResetProjection(ctx context.Context, projection string) error

	// Close releases the store.
	Close() error
}

// DeviceCursor is how far one device has received its user's inbox.
type DeviceCursor struct {
	UserID    domain.UserID
	DeviceID  domain.DeviceID
	Epoch     int32
	Position  int64 // offset of the last inbox entry the device has
	UpdatedAt time.Time
}

// ReadMark is how far a member has read a channel.
type ReadMark struct {
	ChannelID domain.ChannelID
	UserID    domain.UserID
	Seq       int64 // the read message's offset in the channel's partition
	MessageID domain.MessageID
	UpdatedAt time.Time
}

// User is an account.
type User struct {
	ID           domain.UserID
	Name         string
	PasswordHash string // PHC-formatted argon2id hash; never on the log
	CreatedAt    time.Time
}

// SendKey names a send: its sender and the client's message id.
type SendKey struct {
	SenderID    domain.UserID
	ClientMsgID string
}

// SendDecision is what the sends processor (projections/sends) decided for
// a SendKey: the message its first request became. A resend of the key is
// answered with MessageID; one with another channel or text is a conflict.
type SendDecision struct {
	SendKey
	ChannelID domain.ChannelID
	MessageID domain.MessageID
	// TextHash is a digest of the text (sends.TextHash).
	TextHash string
	// Partition and Offset are the first request's place in the sends
	// topic: the processor that meets the decision again while it reads
	// that very request (a batch retried after an abort) appends the
	// message again, since the transaction that first did may not have
	// committed.
	Partition int32
	Offset    int64
}

// Batch is what a projection writes for a run of events.
type Batch struct {
	// Projection names the projection ("history", "inbox").
	Projection string
	// Positions are the next offsets to read, per partition.
	Positions map[int32]int64
	// Channels are whole channel states to upsert.
	Channels []domain.Channel
	// Memberships are changes to the user → channels index.
	Memberships []Membership
	// Messages are history entries to upsert (keyed by channel and offset).
	Messages []Message
	// Inbox entries to upsert (keyed by user, epoch and offset).
	Inbox []InboxEntry
	// Cursors to upsert (keyed by user and device). The projection
	// decides; the store writes what it is given.
	Cursors []DeviceCursor
	// Reads to upsert (keyed by channel and user).
	Reads []ReadMark
	// Replayable says that losing the batch in a crash, together with its
	// positions, costs nothing but a replay: the projection writes it
	// again, identically, when it reads the log from the positions before
	// it, and nothing outside the store was decided from it. A store may
	// then write it without waiting for it to be durable (pebblestore: no
	// fsync of its own; it is durable with the next fsynced write or
	// within the store's sync interval). A store writes what follows a
	// batch only after it, so a crash keeps a prefix of the batches and
	// every projection's state agrees with its positions. History's
	// messages, the inbox's entries and the sends processor's decisions
	// are replayable (the processor mends decisions the store lost from
	// the log before its next batch: gateway/chat/SENDS.md): a batch with
	// channels, memberships, cursors or read marks is made durable before
	// Apply returns whatever this says (others act on them at once: a
	// removed member's send is refused from the store's channel state).
	// The Cassandra store ignores it.
	Replayable bool
	// Decisions are send decisions to record (keyed by SendKey). Only
	// the sends processor writes them, and it decides each key from the
	// log alone, so a key written again (a batch retried, a fenced
	// processor still running) is written with the same values: a blind
	// write, no condition. Its positions are its progress in the sends
	// topic, written last like every projection's.
	Decisions []SendDecision
}

// Membership says that UserID is (or is no longer) a member of ChannelID.
type Membership struct {
	ChannelID domain.ChannelID
	UserID    domain.UserID
	Member    bool
}

// Message is one message in a channel's history. Offset is the position of
// its message.sent event in the channel topic's partition: the channel's one
// total order, which message ids (clocks) are not.
type Message struct {
	ChannelID   domain.ChannelID
	Offset      int64
	MessageID   domain.MessageID
	SenderID    domain.UserID
	DeviceID    domain.DeviceID
	ClientMsgID string
	Text        string
	SentAt      time.Time
}

// InboxEntry is one entry of a user's inbox: a copy of a message at the
// position (epoch, offset) the inbox topic's partition gave it.
type InboxEntry struct {
	UserID    domain.UserID
	Epoch     int32
	Partition int32
	Offset    int64
	Message   domain.InboxMessage
}
