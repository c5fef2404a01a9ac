package ws

import (
	"context"
	"github.com/evchat/evchat/domain"
	"log/slog"
	"time"

	"github.com/evchat/evchat/gateway/throttle"
)

// Config configures the gateway. Zero fields take the defaults written
// beside them.
type Config struct {
	// QueueSize is the most frames waiting for a slow client before it is
	// cut off. Default 1024. The queue takes memory only while frames wait.
	QueueSize int
	// QueueBytes is the most bytes of frames waiting for a client. Live
	// delivery stops at half of it (or of QueueSize) and the connection
	// catches up from the store at the client's pace; a client whose
	// queue overflows anyway is closed with CloseSlowClient and resumes
	// from its position. One frame larger than the bound is still sent,
	// alone. A message's body is encoded once and shared by every queue
	// it is in, so the bound counts more than the memory taken. Default
	// 2 MiB (20 messages of 100,000 ASCII characters).
	QueueBytes int
	// MaxConnections is the most open connections; past it an upgrade is
	// refused with 503, so the process keeps file descriptors for its log
	// and store. 0: no limit.
	MaxConnections int
	// MaxPerUser is the most open connections of one user on this
	// gateway, MaxPerDevice of one device; past either an upgrade is
	// refused with 429 too_many_connections, so one user cannot take
	// every slot of MaxConnections. Defaults 32 and 8.
	MaxPerUser, MaxPerDevice int
	// PongTimeout: the server pings every PingInterval, and closes a peer
	// from which nothing (no pong, no frame) has come for PingInterval +
	// PongTimeout with CloseNoPong. Default 30s.
	PongTimeout time.Duration
	// Sends and SendBytes are the per-user buckets of send frames and of
	// their text's bytes; a send over either gets an error frame
	// rate_limited with retry_after_ms, is not carried out, and the
	// connection stays open. Nil: no limit.
	Sends, SendBytes *throttle.Buckets
	// SyncBuffer is the most live entries held while a device syncs.
	// Default 10000.
	SyncBuffer int
	// WriteTimeout bounds one frame's write. Default 10s.
	WriteTimeout time.Duration
	// PingInterval between server pings. Default 25s.
	PingInterval time.Duration
	// ReadLimit is the largest frame accepted, in bytes; a larger one closes
	// the connection with 1009. Default 1 MiB (a 100,000-character message
	// of 4-byte characters fits).
	ReadLimit int64
	// CommandTimeout bounds one command (a send, a received, a read) and
	// each store read of a sync; a sync as a whole has no deadline (see
	// SyncStall). Default 15s.
	CommandTimeout time.Duration
	// SyncStall is how long a sync (the one at connect, one the device
	// asks for, or a catch-up) may go without progress before it fails and
	// the connection is closed with 1013: progress is a frame of the sync
	// the writer hands to the client, or, while the sync waits for the
	// inbox projection, the projection's position moving on. A device that
	// keeps reading its backlog is never cut off, however long the
	// backlog; one that stops reading is, after SyncStall (sooner when a
	// frame's write blocks for WriteTimeout). Generous, because the
	// projection's position moves once per batch it applies, and a batch
	// of a burst's tens of thousands of entries takes a while on a loaded
	// machine; a device left waiting costs nothing. Default 2m.
	SyncStall time.Duration
	// SendsInFlight is the most sends of one connection carried out at
	// once, off its read loop (see sends); when that many are in flight,
	// the connection reads no further frame until one ends. Default 16.
	SendsInFlight int
	// Logger; default discard.
	Logger *slog.Logger
	// Metrics; nil records none.
	Metrics *Metrics
	// Heartbeat is how often each connected device's heartbeat is
	// appended to the session topic (and once at connect). Default 5s.
	Heartbeat time.Duration
	// SessionsTopic is where heartbeats go. Required for heartbeats.
	SessionsTopic string
	// Sessions, if set, is asked again once a connection has registered
	// whether its session was revoked: a logout that reached this node
	// between the upgrade's check and the registration found no
	// connection to close (see Logouts).
	Sessions SessionChecker
}

// SessionChecker tells a revoked (logged-out) session (auth.Revocations).
type SessionChecker interface {
	SessionRevoked(ctx context.Context, u domain.UserID, sid string) (bool, error)
}

func (c Config) withDefaults() Config {
	if c.QueueSize == 0 {
		c.QueueSize = 1024
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = 2 << 20
	}
	if c.MaxPerUser == 0 {
		c.MaxPerUser = 32
	}
	if c.MaxPerDevice == 0 {
		c.MaxPerDevice = 8
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = 30 * time.Second
	}
	if c.SyncBuffer == 0 {
		c.SyncBuffer = 10000
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.ReadLimit == 0 {
		c.ReadLimit = 1 << 20
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = 15 * time.Second
	}
	if c.SyncStall == 0 {
		c.SyncStall = 2 * time.Minute
	}
	if c.SendsInFlight == 0 {
		c.SendsInFlight = 16
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 5 * time.Second
	}
	return c
}
