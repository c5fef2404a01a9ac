// Package ws is the WebSocket gateway: it authenticates a device at the
// upgrade, reads its frames (send, sync, ping), and pushes the entries of its
// user's inbox to it.
//
// Goroutines. Per connection: the handler's goroutine reads frames and
// carries out every command but sends (syncs included); each send runs in
// a goroutine of its own, at most Config.SendsInFlight at once, chained
// behind the previous send to its channel so that sends to one channel
// reach the log in the order the client sent them (sends); when that many
// are in flight the read loop waits for one to end. One writer goroutine
// drains the connection's bounded queue; a catch-up goroutine runs only
// while a connection that fell behind live delivery catches up from the
// store (conn.offer, Server.catchUp). The handler starts and waits for all
// of them before it returns. A slow client never slows anyone else: it is
// caught up at its own pace, or cut off (CloseSlowClient) when its queue,
// bounded in frames and bytes (sendQueue), overflows anyway. A message's
// frame body is encoded once and shared by every queue (bodyCache).
//
// Limits per user and device: Config.MaxPerUser and MaxPerDevice open
// connections (Hub.reserve), one heartbeat per device, and token buckets
// on sends and their bytes (Config.Sends, SendBytes). A peer silent for
// PingInterval + PongTimeout is closed (CloseNoPong); a binary frame closes
// with 1003, a text frame that is not UTF-8 with 1007 (ReadClientFrame).
// Per process: the Tailer reads the inbox topic from the inbox
// projection's positions and offers each entry to the connections of its
// user; Logouts reads the session topic and closes the connections of the
// devices that log out on any node.
//
// Bounds. A command has Config.CommandTimeout; a sync has no deadline but
// must keep making progress: it fails (1013) after Config.SyncStall in
// which the client took no frame and, while it waited for the inbox
// projection, the projection did not move. Each store call of a sync has
// CommandTimeout.
//
// Positions. A device's position is the offset of the last inbox entry it
// has, in its user's partition of the inbox topic, with the inbox epoch.
// On sync, the connection buffers live entries, reads what it missed from
// the store (the inbox projection) up to the tailer's point, then flushes
// the buffer: no gap and no duplicate, as documented on Server.sync. The
// connection's side of that hand-off (what the device has, what waits for
// the sync) is the handoff type: no I/O, no lock of its own, its rules
// table-tested.
//
// Files, by concern: server.go (the Server, its store and command
// interfaces, a connection's life from upgrade to close, shutdown),
// config.go (Config and its defaults), dispatch.go (a client frame to its
// command), sync.go (sync, catch-up and carry-over: the store's part),
// handoff.go (the connection's part of a sync, tested without I/O),
// epoch.go (inbox epochs and the switch), heartbeat.go, conn.go (one
// connection: live offers, the writer), batchconn.go (the network connection
// under gorilla, which sends each drain of the writer in one write),
// queue.go (the send queue and the shared frame bodies), sends.go (sends off the read loop), tailer.go (the
// inbox topic to the connections), hub.go, presence.go, frames.go and
// encode.go (the frames and their codec).
//
// Lock order: conn.syncMu, then Tailer.parts[p], then conn.mu, then
// sendQueue.mu (bodyCache.mu is taken alone); Hub shard locks are never held while taking any of them, and
// sends.mu is taken alone (nothing is held while taking it, nothing is
// taken under it), and so is batchConn.mu (gorilla's write lock may be
// held while taking it; no network write happens under it).
package ws
