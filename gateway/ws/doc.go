// Package ws is the WebSocket gateway: it authenticates a device at the
// upgrade, reads its frames (send, sync, ping), and pushes the entries of its
// user's inbox to it.
//
// Goroutines. Per connection: the handler's goroutine reads frames and
// carries out commands; one writer goroutine, started and waited for by the
// handler, drains the connection's bounded queue. A client whose queue is
// full is cut off rather than slowing anyone else. Per process: the Tailer
// reads the inbox topic from the inbox projection's positions and offers
// each entry to the connections of its user.
//
// Positions. A device's position is the offset of the last inbox entry it
// has, in its user's partition of the inbox topic, with the inbox epoch.
// On sync, the connection buffers live entries, reads what it missed from
// the store (the inbox projection) up to the tailer's point, then flushes
// the buffer: no gap and no duplicate, as doc'd on Conn.sync.
//
// Lock order: Tailer.parts[p] before conn.mu; Hub shard locks are never
// held while taking either.
package ws
