// Package pebblestore is the embedded store.Store on Pebble, the ordered
// key-value store of CockroachDB, for running the whole chat in one process
// with its data in a directory.
//
// # Keys
//
// Every table is a key prefix of one byte, followed by the table's key
// columns. A string column that other columns follow is written with a
// uvarint length in front, so that no key is a prefix of another key's
// column; the last column is written as is, so that keys sort by it. Numbers
// are 8 (or 4) bytes big-endian with the sign bit flipped, so that byte
// order is numeric order.
//
//	u id                           → user
//	n name                         → user id (the name index)
//	e sender client_msg_id         → send decision
//	p projection partition         → next offset
//	c channel                      → channel
//	g user channel                 → (empty): the user → channels index
//	m channel offset               → message
//	i channel message_id           → offset (the message id index)
//	x user epoch offset            → inbox entry
//	b user epoch message_id        → lowest offset of the user's inbox
//	                                 entries of the epoch that point at
//	                                 the message (the inbox message index)
//	d user device                  → device cursor
//	s channel user                 → read mark
//	o user message_id              → push reservation
//	v user session_id              → revoked session (its expiry)
//
// The prefixes r and a held send reservations and their marks, which the
// send decisions replaced; a directory written before may still hold them,
// unread. They are never reused.
//
// Values are JSON, but inbox entries (x), which are one per member per
// message, in a compact binary form (inboxcodec.go, ~60 bytes where the
// JSON took ~330); entries stored as JSON before are still read.
//
// # Atomicity
//
// Apply writes a batch's state and positions in one Pebble batch, so a
// crash never separates state from position. It commits it with fsync,
// but a replayable batch (store.Batch.Replayable: history's messages, the
// inbox's entries or send decisions alone) without: Pebble's log keeps
// commit order, so a crash keeps a prefix of the batches, and a
// replayable batch it takes is read from the log again. A goroutine of
// the Store fsyncs the log within Options.SyncInterval of such a batch
// (any fsynced commit does it sooner); Close ends it. CreateUser
// and ReservePush read and then write; a mutex serializes them per key,
// which is enough because a single process owns the directory (Pebble
// locks it). Their writes are also fsynced. Apply writes send decisions blind,
// without a lock: only the sends processor writes them, a key always with
// the same values. It writes the inbox message index blind too: each copy
// of a message has a key of its own, (user, epoch, message id, offset), so
// the lowest offset is the first key under the message's prefix and no
// Apply reads the index (a directory written before holds one key per
// message, the prefix itself, its value the lowest offset; lookups read
// both forms). Reads see the last committed writes and take no lock.
//
// Nearly every lookup in the inbox message index is of a key that is not
// there (a new message). The store keeps, per (user, epoch), a message id at
// or above every id the index holds, and a lookup above it reads nothing
// (inboxTops in store.go; it may be too high, never too low).
//
// ResetProjection deletes the projection's positions and the tables (key
// prefixes) that it alone writes with range deletions, in one fsynced
// batch: "history" owns c, g, m and i; "inbox" owns x and b; "cursors" owns
// d and s.
package pebblestore
