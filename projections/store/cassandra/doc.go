// Package cassandra is the store.Store on Apache Cassandra (or ScyllaDB),
// for running the chat's roles as many processes.
//
// # Schema
//
// The tables are the versioned CQL files of schemas/cassandra, embedded
// through package cql. Open connects; Store.Migrate creates the keyspace and
// applies the files that schema_migrations does not list yet. Every query
// names its table with the keyspace, so one session serves before and after
// Migrate.
//
// History is partitioned by (channel_id, bucket) and clustered by the log
// offset of the message.sent event, newest first; bucket is offset >> 20,
// a range of offsets of the channel topic's partition. Buckets follow log
// order, not clocks, so skewed gateways cannot misplace a message, and they
// bound the size of a Cassandra partition. channel_buckets lists each
// channel's non-empty buckets, so a page that crosses buckets reads only
// buckets that hold messages. Inboxes are bucketed the same way by their
// inbox offset, per (user_id, epoch). inbox_by_message_span finds an inbox
// entry by the message it copies: its partition (user_id, epoch, span),
// span = message_id >> 40, holds the offsets of the entries of a span of
// message ids, clustered by (message_id, log_offset), lowest first, so that
// the index rows of a user's entries in one Apply share a partition.
// inbox_by_message, with a partition per message, held them before schema
// version 009 and is still read for those entries.
// device_cursors (by user, clustered by device) and channel_reads (by
// channel, clustered by user) hold the cursors projection's state;
// push_reservations has one row per (user, message) whose push
// notification was reserved; send_decisions one per (sender, client
// message id) that the sends processor decided. send_reservations and
// send_marks, which send_decisions replaced, are still in the schema but
// no longer read or written.
//
// # Writes
//
// Names and push reservations are unique through lightweight transactions
// (INSERT ... IF NOT EXISTS at the serial consistency), and rows created
// that way are changed only by lightweight transactions. Everything else
// is an idempotent upsert, so applying a Batch twice leaves the same
// state. Send decisions are blind upserts too (rows of an Apply, each a
// partition of its own): only the sends processor writes them, a key always
// with the same values; SendDecisions reads them store.Lookups at a time.
//
// Apply writes a batch's state first and its positions last, so a crash in
// between makes the projection apply the batch again. Within the batch, the
// messages of one channel (and the inbox entries of one user and epoch) are
// written in offset order, one bucket after another: a bucket's index row,
// its rows and (for messages) their index rows by message id go out in
// unlogged batches, one after another, and the next bucket starts when
// they are written; an inbox's index rows by message go out beside them. A
// replica applies the rows of one partition in a batch atomically, and a
// reader skips a bucket whose index row it does not see yet. With quorum
// reads and writes a reader therefore sees a prefix of a channel's (or
// inbox's) rows, never a later row without an earlier one, and a page that
// ends at offset n can be followed from n without skipping. The batches of
// different channels and inboxes, and every other row, are packed together
// into requests of up to 10 partitions and 4 KiB (a batch of one partition
// up to 64 rows and 1 MiB): a request costs a node more than its rows, so
// an Apply sends as few as these limits allow, at most
// Config.WriteConcurrency at a time.
//
// # Reset
//
// Every table but positions is written by at most one projection, so
// ResetProjection deletes the projection's partition of positions and then
// TRUNCATEs the tables it owns (ownedTables): channels, user_channels,
// messages, channel_buckets and messages_by_id for "history"; inbox,
// inbox_buckets, inbox_by_message and inbox_by_message_span for "inbox";
// device_cursors and channel_reads for "cursors". Accounts, send decisions
// and push reservations are never deleted. TRUNCATE needs every node up.
//
// # Goroutines
//
// Apply runs its requests on at most
// Config.WriteConcurrency goroutines, and SendDecisions its reads on at most
// store.Lookups; each waits for all of them before it returns. gocql owns
// its connection goroutines until Close.
package cassandra
