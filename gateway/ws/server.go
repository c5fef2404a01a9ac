package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/auth"
	"github.com/evchat/evchat/gateway/throttle"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/inbox"
	"github.com/evchat/evchat/projections/projector"
	"github.com/evchat/evchat/projections/store"
)

// Commands carries out what devices ask over WebSocket.
type Commands interface {
	Send(ctx context.Context, sender domain.UserID, device domain.DeviceID, ch domain.ChannelID, clientMsgID, text string) (domain.MessageID, error)
	Sent(ctx context.Context, sender domain.UserID, clientMsgID string)
	Acked(ctx context.Context, c auth.Claims, epoch int32, position int64) error
	Read(ctx context.Context, c auth.Claims, ch domain.ChannelID, id domain.MessageID) error
}

// RecordAppender appends records built with eventlog.Record.
type RecordAppender interface {
	AppendRecords(ctx context.Context, recs ...*kgo.Record) error
}

// InboxStore is what a sync reads.
type InboxStore interface {
	Inbox(ctx context.Context, u domain.UserID, epoch int32, after int64, limit int) ([]store.InboxEntry, error)
	Positions(ctx context.Context, projection string) (map[int32]int64, error)
	DeviceCursors(ctx context.Context, u domain.UserID) ([]store.DeviceCursor, error)
}

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

// generation is an inbox epoch and the tailer that reads it.
type generation struct {
	epoch  int32
	tailer *Tailer
}

// Server upgrades and serves WebSocket connections.
type Server struct {
	cfg      Config
	hub      *Hub
	gen      atomic.Pointer[generation] // the current inbox epoch
	svc      Commands
	st       InboxStore
	beats    RecordAppender
	upgrader websocket.Upgrader

	mu      sync.Mutex
	closing bool
	wg      sync.WaitGroup // one per connection handler
}

// NewServer returns a gateway. The tailer must run for deliveries to flow.
func NewServer(cfg Config, hub *Hub, tailer *Tailer, svc Commands, st InboxStore, beats RecordAppender) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg: cfg, hub: hub, svc: svc, st: st, beats: beats,
		upgrader: websocket.Upgrader{
			// Reuse the HTTP server's read buffer, and borrow a write
			// buffer only while writing: an idle connection holds neither.
			WriteBufferPool: &sync.Pool{},
			// Tokens, not cookies, authenticate: a foreign origin gains
			// nothing a script with the token does not already have.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	s.gen.Store(&generation{epoch: tailer.Epoch(), tailer: tailer})
	return s
}

// SwitchEpoch moves the gateway to the inbox epoch that t reads. New
// connections are in the new epoch at once; every connection of an older
// one is closed (1013, with the reason), and its device reconnects with
// the position it has: the sync carries the position over (see sync).
func (s *Server) SwitchEpoch(t *Tailer) {
	g := &generation{epoch: t.Epoch(), tailer: t}
	s.gen.Store(g)
	var old []*conn
	for i := range s.hub.shards {
		sh := &s.hub.shards[i]
		sh.mu.RLock()
		for _, m := range sh.conns {
			for c := range m {
				if c.gen != g {
					old = append(old, c)
				}
			}
		}
		sh.mu.RUnlock()
	}
	for _, c := range old {
		c.cut(epochChanged(g.epoch))
	}
	s.cfg.Logger.Info("inbox epoch switched", "epoch", g.epoch, "connections_closed", len(old))
}

func epochChanged(e int32) string {
	return fmt.Sprintf("inbox epoch %d started: reconnect with your position", e)
}

// Serve upgrades an authenticated request and serves the connection until
// it closes. The caller has checked the token. An upgrade refused before
// it is made returns the error for the caller to answer (a *domain.Error:
// unavailable, too_many_connections, bad_request); once upgraded, Serve
// returns nil.
func (s *Server) Serve(w http.ResponseWriter, r *http.Request, cl auth.Claims) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return domain.Errorf(domain.CodeUnavailable, "this gateway is shutting down; ask for another")
	}
	if s.cfg.MaxConnections > 0 && s.hub.Count() >= s.cfg.MaxConnections {
		s.mu.Unlock()
		s.cfg.Metrics.failed(domain.ErrUnavailable)
		return domain.Errorf(domain.CodeUnavailable, "this gateway is full; ask for another")
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	resume, epoch, position, err := resumeFrom(r)
	if err != nil {
		return err
	}
	first, err := s.hub.reserve(cl.UserID, cl.DeviceID, s.cfg.MaxPerUser, s.cfg.MaxPerDevice)
	if err != nil {
		s.cfg.Metrics.failed(err)
		return err
	}
	defer s.hub.release(cl.UserID, cl.DeviceID)
	wsc, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return nil // the upgrader has answered
	}
	wsc.SetReadLimit(s.cfg.ReadLimit)
	g := s.gen.Load()
	c := &conn{
		gen: g, user: cl.UserID, device: cl.DeviceID, ws: wsc,
		q: newSendQueue(s.cfg.QueueSize, s.cfg.QueueBytes), bodies: g.tailer.bodies, done: make(chan struct{}),
		maxBuf: s.cfg.SyncBuffer, maxBufBytes: s.cfg.QueueBytes, last: -1, metrics: s.cfg.Metrics,
	}
	var writer sync.WaitGroup
	writer.Go(func() { c.write(s.cfg.WriteTimeout, s.cfg.PingInterval) })
	defer writer.Wait()
	// Sends run beside the handler (see sends) and end before it returns;
	// those the read loop took are carried out even if the connection
	// closes meanwhile.
	sends := newSends(s.cfg.SendsInFlight)
	defer sends.wait()
	// Catch-ups (see conn.offer) run beside the handler, at most one at a
	// time, and end before it returns.
	cctx, cancelCatchUps := context.WithCancel(r.Context())
	var (
		catchUps   sync.WaitGroup
		catchUpsMu sync.Mutex
		ended      bool
	)
	part := g.tailer.Partition(c.user)
	c.behind = func() {
		catchUpsMu.Lock()
		defer catchUpsMu.Unlock()
		if !ended {
			catchUps.Go(func() { s.catchUp(cctx, c, part) })
		}
	}
	defer func() {
		catchUpsMu.Lock()
		ended = true
		catchUpsMu.Unlock()
		catchUps.Wait()
	}()
	defer cancelCatchUps()
	defer c.close()

	// Register for live entries from the present on: a device that never
	// syncs gets what arrives after it connected.
	ectx, cancel := context.WithTimeout(r.Context(), s.cfg.CommandTimeout)
	end, err := g.tailer.end(ectx, part)
	cancel()
	if err != nil {
		c.send(errorFrame(err, ""))
		return nil
	}
	g.tailer.mark(part, func(next int64) {
		c.mu.Lock()
		c.last = max(next, end) - 1
		c.syncing = resume // a resuming device gets nothing live before its sync
		c.mu.Unlock()
		s.hub.add(c)
	})
	defer s.hub.remove(c)
	if s.gen.Load() != g { // the epoch switched while this one registered
		c.cut(epochChanged(s.gen.Load().epoch))
		return nil
	}
	hello := g.epoch
	c.send(ServerFrame{Type: TypeHello, UserID: c.user, DeviceID: c.device, Epoch: &hello})
	if first { // a device's other connections have made it online already
		s.heartbeat(r.Context(), c)
	}
	log := s.cfg.Logger.With("user", c.user, "device", c.device)
	if resume {
		s.handle(r.Context(), c, part, ClientFrame{Type: TypeSync, Epoch: &epoch, Position: &position}, log)
	}

	// Pongs are required: a peer from which nothing has come for a ping
	// interval and the pong timeout is gone. The deadline starts again at
	// each read (a sync on the read loop may take long) and at each pong.
	silence := s.cfg.PingInterval + s.cfg.PongTimeout
	wsc.SetPongHandler(func(string) error { return wsc.SetReadDeadline(time.Now().Add(silence)) })
	for {
		_ = wsc.SetReadDeadline(time.Now().Add(silence))
		mt, data, err := wsc.ReadMessage()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				c.cutCode(CloseNoPong, fmt.Sprintf("no pong or frame for %s", silence))
			}
			c.mu.Lock()
			why := c.cutWhy
			c.mu.Unlock()
			if why != "" {
				log.Info("connection cut", "why", why)
			}
			return nil
		}
		f, closeCode, err := ReadClientFrame(mt, data)
		if closeCode != 0 {
			s.cfg.Metrics.failed(err)
			c.cutCode(closeCode, domain.MessageOf(err))
			return nil
		}
		if err != nil {
			s.cfg.Metrics.failed(err)
			c.send(errorFrame(err, f.ClientMsgID))
			continue
		}
		if f.Type == TypeSend {
			if err := s.admitSend(c, f); err != nil {
				s.cfg.Metrics.failed(err)
				c.send(errorFrame(err, f.ClientMsgID))
				continue
			}
			read := time.Now()
			if !sends.start(c.done, f.ChannelID, func() { s.send(r.Context(), c, f, read, log) }) {
				return nil // closing: the client resends what was not acknowledged
			}
			continue
		}
		s.handle(r.Context(), c, part, f, log)
	}
}

// admitSend takes a send's tokens from its user's buckets, or refuses it
// with rate_limited and how long to wait: before anything is written.
func (s *Server) admitSend(c *conn, f ClientFrame) error {
	retry, ok := throttle.Allow(time.Now(), string(c.user),
		throttle.Take{B: s.cfg.Sends, N: 1}, throttle.Take{B: s.cfg.SendBytes, N: len(f.Text)})
	switch {
	case ok:
		return nil
	case retry == 0: // more than the byte bucket holds (Validate prevents it)
		return domain.Errorf(domain.CodeTooLong, "text of %d bytes: more than this gateway's send rate allows at once", len(f.Text))
	}
	return &domain.Error{Code: domain.CodeRateLimited, RetryAfter: retry,
		Msg: fmt.Sprintf("too many sends from this user; retry after %s", retry.Round(time.Millisecond))}
}

// send carries out a send frame, read at the time given, and answers it
// with an ack or an error frame. It runs off the read loop (see sends).
func (s *Server) send(ctx context.Context, c *conn, f ClientFrame, read time.Time, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
	defer cancel()
	id, err := s.svc.Send(ctx, c.user, c.device, f.ChannelID, f.ClientMsgID, f.Text)
	if err != nil {
		s.cfg.Metrics.failed(err)
		if domain.CodeOf(err) == domain.CodeInternal {
			log.Error("send", "err", err)
		}
		c.send(errorFrame(err, f.ClientMsgID))
		return
	}
	s.cfg.Metrics.acked(time.Since(read).Seconds()) // as the client sees it: waiting for its turn included
	c.send(ServerFrame{Type: TypeAck, ClientMsgID: f.ClientMsgID, ChannelID: f.ChannelID, MessageID: id})
	s.svc.Sent(ctx, c.user, f.ClientMsgID)
}

// handle carries out a frame other than a send, on the read loop. A
// command has CommandTimeout; a sync has no deadline but must keep making
// progress (see Config.SyncStall), each of its store reads bounded.
func (s *Server) handle(ctx context.Context, c *conn, part int32, f ClientFrame, log *slog.Logger) {
	if f.Type != TypeSync {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.CommandTimeout)
		defer cancel()
	}
	switch f.Type {
	case TypePing:
		c.send(ServerFrame{Type: TypePong})
	case TypeReceived:
		if *f.Epoch > c.gen.epoch {
			e := c.gen.epoch
			c.send(ServerFrame{Type: TypeResync, Epoch: &e})
			return
		}
		if err := s.svc.Acked(ctx, auth.Claims{UserID: c.user, DeviceID: c.device}, *f.Epoch, *f.Position); err != nil {
			s.cfg.Metrics.failed(err)
			c.send(errorFrame(err, ""))
		}
	case TypeRead:
		if err := s.svc.Read(ctx, auth.Claims{UserID: c.user, DeviceID: c.device}, f.ChannelID, f.MessageID); err != nil {
			s.cfg.Metrics.failed(err)
			c.send(errorFrame(err, ""))
		}
	case TypeSync:
		pos, err := s.syncFrom(ctx, c, f)
		if err == nil {
			err = s.sync(ctx, c, part, *f.Epoch, pos)
		}
		if err != nil {
			log.Warn("sync", "err", err)
			s.cfg.Metrics.failed(err)
			if !c.isCut() {
				c.send(errorFrame(err, ""))
			}
		}
	}
}

// syncFrom returns the position a sync starts after: the frame's, or the
// last one the device acknowledged (received), or -1.
func (s *Server) syncFrom(ctx context.Context, c *conn, f ClientFrame) (int64, error) {
	if f.Position != nil {
		return *f.Position, nil
	}
	sctx, cancel := s.storeCall(ctx)
	defer cancel()
	cs, err := s.st.DeviceCursors(sctx, c.user)
	if err != nil {
		return 0, err
	}
	for _, dc := range cs {
		if dc.DeviceID == c.device && dc.Epoch == *f.Epoch {
			return dc.Position, nil
		}
	}
	return -1, nil
}

// sync brings the device from position to the present, then leaves it on
// live delivery.
//
// Under the partition's lock, the connection starts buffering live entries
// and notes the tailer's point T. Every entry of the user below T is in the
// store once the inbox projection's position reaches T; every entry at or
// past T arrives in the buffer. So: deliver the store's entries in
// (position, T) as the projection stores them (see fromStore), then the
// buffered ones past the last delivered, and switch back to live delivery.
//
// A position from an older epoch is carried over: the device had exactly
// the old epoch's entries up to its position, so it gets every entry of the
// current epoch, from the start, whose message is not among those (see
// carryOver). A position from the next epoch (another gateway switched
// first) waits for this gateway to switch too. Only a position the store
// cannot vouch for, or an epoch that does not come, gets resync.
//
// A sync has no deadline: it runs as long as it makes progress (see
// Config.SyncStall), at the pace the client reads and the inbox projection
// stores, while each store call has CommandTimeout.
//
// A sync that fails part way (the projection stopped moving, the store did
// not answer, the client stopped reading) must not go on to live delivery: the entries it did
// not deliver would be skipped for good once the device's position moved
// past them. The connection is closed after the error frame; the client
// reconnects and syncs again from the position it has.
func (s *Server) sync(ctx context.Context, c *conn, part int32, epoch int32, position int64) (err error) {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	g := c.gen
	defer func() {
		if err != nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.buf, c.bufBytes = nil, 0
			c.sendLocked(errorFrame(err, ""))
			c.cutLocked("sync failed: " + err.Error())
		}
	}()
	if epoch > g.epoch && s.awaitEpoch(ctx, epoch) {
		// Another gateway switched first; this one has now too, and
		// SwitchEpoch closes c: the device reconnects into the epoch.
		c.cut(epochChanged(epoch))
		return nil
	}
	if epoch != g.epoch {
		ok := false
		var had func(domain.MessageID) bool
		if epoch >= 1 && epoch < g.epoch {
			if had, ok, err = s.carryOver(ctx, c, part, epoch, position); err != nil {
				return err
			}
		}
		if !ok {
			e := g.epoch
			c.send(ServerFrame{Type: TypeResync, Epoch: &e})
			return nil
		}
		c.mu.Lock()
		c.had = had // for every later sync of this connection too
		c.mu.Unlock()
		position = -1
	}
	// Rounds: a round that dropped live entries (too many arrived) goes
	// round again from where it got to; they are in the store by then.
	for {
		again, err := s.syncRound(ctx, c, part, position)
		if err != nil || !again {
			return err
		}
		c.mu.Lock()
		position = c.last
		c.mu.Unlock()
	}
}

// syncRound is one round of a sync; again is true when live entries were
// dropped meanwhile.
func (s *Server) syncRound(ctx context.Context, c *conn, part int32, position int64) (again bool, err error) {
	g := c.gen
	var t int64
	g.tailer.mark(part, func(next int64) {
		t = next
		c.mu.Lock()
		c.syncing, c.dropping = true, false
		c.buf, c.bufBytes = c.buf[:0], 0
		c.last = position
		c.mu.Unlock()
	})
	if err := s.fromStore(ctx, c, part, position, t); err != nil {
		return false, err
	}
	// Then what arrived live meanwhile, until nothing waits.
	for {
		c.mu.Lock()
		if c.dropping {
			c.mu.Unlock()
			return true, nil
		}
		batch := c.buf
		c.bufBytes = 0
		if len(batch) == 0 {
			c.buf = nil
			c.syncing = false
			last, e := c.last, g.epoch
			c.sendLocked(ServerFrame{Type: TypeSynced, Epoch: &e, Position: &last})
			c.mu.Unlock()
			return false, nil
		}
		c.buf = nil
		c.mu.Unlock()
		if err := s.deliver(ctx, c, batch, true); err != nil {
			return false, err
		}
	}
}

// storeCall bounds one store call of a sync: a store that hangs is an
// error, not progress.
func (s *Server) storeCall(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.CommandTimeout)
}

// fromStore delivers the user's entries in (after, t) from the store, as
// the inbox projection stores them: every entry of the partition below the
// projection's position is in the store. So a device gets its backlog
// while the projection still works through a burst, and the sync waits
// for the projection only as long as it moves: one whose position has not
// moved for SyncStall, while the sync waited for it, fails the sync. Each
// store call has CommandTimeout; a failed one is not progress.
func (s *Server) fromStore(ctx context.Context, c *conn, part int32, after, t int64) error {
	const page = 500
	name := eventlog.Epoched(inbox.Name, c.gen.epoch)
	var (
		stored  int64 = -1 // the projection has stored every entry below
		moved         = time.Now()
		waited  time.Duration
		lastErr error
	)
	defer func() {
		if waited > time.Second {
			s.cfg.Logger.Info("sync waited for the inbox projection", "user", c.user, "partition", part, "point", t, "waited", waited)
		}
	}()
	for after+1 < t {
		if stored < t {
			sctx, cancel := s.storeCall(ctx)
			pos, err := s.st.Positions(sctx, name)
			cancel()
			switch p := pos[part]; {
			case err != nil:
				lastErr = err
			case p > stored:
				stored, moved = p, time.Now()
			}
		}
		if upto := min(stored, t); after+1 < upto {
			sctx, cancel := s.storeCall(ctx)
			es, err := s.st.Inbox(sctx, c.user, c.gen.epoch, after, page)
			cancel()
			if err != nil {
				return err
			}
			// At most a send queue's bytes of text held at once.
			pend := make([]pending, 0, len(es))
			full, bytes := false, 0
			for _, e := range es {
				if e.Offset >= upto {
					break
				}
				if full = len(pend) > 0 && bytes+len(e.Message.Text) > c.q.maxBytes; full {
					break
				}
				pend = append(pend, pending{e.Offset, e.Message})
				bytes += len(e.Message.Text)
			}
			if err := s.resolve(ctx, c, pend); err != nil {
				return err
			}
			if err := s.deliver(ctx, c, pend, false); err != nil {
				return err
			}
			if len(pend) == page || full {
				after = pend[len(pend)-1].offset
			} else {
				after = upto - 1 // every stored entry of the user below upto is delivered
			}
			moved = time.Now() // the time the client took is not the projection's
			continue
		}
		if time.Since(moved) >= s.cfg.SyncStall {
			return &domain.Error{Code: domain.CodeUnavailable,
				Msg: fmt.Sprintf("the %s projection is behind and has not moved for %s", name, s.cfg.SyncStall), Err: lastErr}
		}
		start := time.Now()
		select {
		case <-ctx.Done():
			return &domain.Error{Code: domain.CodeUnavailable, Msg: "the sync was cancelled", Err: ctx.Err()}
		case <-c.done:
			return errClosed
		case <-time.After(5 * time.Millisecond):
		}
		waited += time.Since(start)
	}
	return nil
}

// resolve fills in the texts of a sync's entries (one batch per page):
// from the cache of recent messages, else from history, waiting a bounded
// time for history to store a message that is not there yet. An error
// fails the sync, which the device retries from its position.
func (s *Server) resolve(ctx context.Context, c *conn, ps []pending) error {
	ms := make([]domain.InboxMessage, len(ps))
	for i, p := range ps {
		ms[i] = p.msg
	}
	if err := c.gen.tailer.texts.Resolve(ctx, ms); err != nil {
		return err
	}
	for i := range ps {
		ps[i].msg.Text = ms[i].Text
	}
	return nil
}

// catchUp syncs a connection that fell behind live delivery (see
// conn.offer) from the last position it was sent.
func (s *Server) catchUp(ctx context.Context, c *conn, part int32) {
	c.mu.Lock()
	position := c.last
	c.mu.Unlock()
	if err := s.sync(ctx, c, part, c.gen.epoch, position); err != nil && ctx.Err() == nil {
		s.cfg.Logger.Warn("catch-up", "user", c.user, "device", c.device, "err", err)
	}
}

// awaitEpoch waits, a few seconds at most, for this gateway to reach an
// epoch that a device already has from another gateway: during a switch,
// gateways move to the new epoch moments apart.
func (s *Server) awaitEpoch(ctx context.Context, epoch int32) bool {
	deadline := time.Now().Add(min(5*time.Second, s.cfg.CommandTimeout/2))
	for s.gen.Load().epoch < epoch {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// deliver hands a sync's entries to the connection in order, passing over
// (but moving the position past) those the device had already, a chunk at
// a time as the client reads them.
//
// A chunk is at most a quarter of the send queue's frames and bytes (or
// one frame), encoded before it waits for room, sharing each message's
// body with the other connections it goes to.
func (s *Server) deliver(ctx context.Context, c *conn, ps []pending, live bool) error {
	for len(ps) > 0 {
		var (
			fs    []outFrame
			bytes int
		)
		for len(fs) < len(ps) && len(fs) < max(1, c.q.maxFrames/4) {
			p := ps[len(fs)]
			f, err := c.bodies.messageFrame(c.gen.epoch, p.offset, p.msg)
			if err != nil {
				return err
			}
			if len(fs) > 0 && bytes+f.size() > c.q.maxBytes/4 {
				break
			}
			fs, bytes = append(fs, f), bytes+f.size()
		}
		if err := c.waitRoom(ctx, len(fs), bytes, s.cfg.SyncStall); err != nil {
			return err
		}
		c.mu.Lock()
		for i, p := range ps[:len(fs)] {
			if c.had != nil && c.had(p.msg.MessageID) {
				c.last = max(c.last, p.offset)
				continue
			}
			c.deliverLocked(p.offset, p.msg, &fs[i], live)
		}
		c.mu.Unlock()
		ps = ps[len(fs):]
	}
	return nil
}

// carryOver prepares the sync of a position from an older inbox epoch. The
// device had every entry of that epoch up to its position; had reports
// whether a message is among them (nil: none is). It waits (a few seconds
// at most) for the old epoch's inbox projection to have stored the
// position, since the device may have had the entries live before they
// were stored; ok is false when it never does: the position is unknown.
//
// It reads those entries' message ids in pages (a range read each, far
// cheaper than a lookup per entry) into a sorted slice: 8 bytes per entry
// while the sync runs.
func (s *Server) carryOver(ctx context.Context, c *conn, part, epoch int32, position int64) (had func(domain.MessageID) bool, ok bool, err error) {
	if position < 0 {
		return nil, true, nil // it had nothing
	}
	wctx, cancel := context.WithTimeout(ctx, min(5*time.Second, s.cfg.CommandTimeout/2))
	defer cancel()
	if err := projector.WaitApplied(wctx, s.st, eventlog.Epoched(inbox.Name, epoch), part, position); err != nil {
		if ctx.Err() != nil {
			return nil, false, err
		}
		s.cfg.Logger.Info("position of an older epoch unknown: resync", "user", c.user, "epoch", epoch, "position", position)
		return nil, false, nil
	}
	var ids []domain.MessageID
	for after := int64(-1); after < position; {
		sctx, cancel := s.storeCall(ctx)
		es, err := s.st.Inbox(sctx, c.user, epoch, after, 1000)
		cancel()
		if err != nil {
			return nil, false, err
		}
		for _, e := range es {
			if e.Offset > position {
				break
			}
			ids = append(ids, e.Message.MessageID)
		}
		if len(es) < 1000 {
			break
		}
		after = es[len(es)-1].Offset
	}
	slices.Sort(ids)
	return func(id domain.MessageID) bool {
		_, found := slices.BinarySearch(ids, id)
		return found
	}, true, nil
}

// heartbeat appends one device's heartbeat without waiting.
func (s *Server) heartbeat(ctx context.Context, c *conn) {
	if s.beats == nil || s.cfg.SessionsTopic == "" {
		return
	}
	rec, err := eventlog.Record(s.cfg.SessionsTopic, string(c.user),
		domain.DeviceHeartbeat{UserID: c.user, DeviceID: c.device}, heartbeatMeta(c.user, c.device, time.Now()))
	if err != nil {
		return
	}
	if err := s.beats.AppendRecords(ctx, rec); err != nil {
		s.cfg.Logger.Warn("heartbeat", "user", c.user, "err", err)
	}
}

// RunHeartbeats appends one heartbeat for every connected device each
// Heartbeat interval until ctx is cancelled; it returns nil then.
func (s *Server) RunHeartbeats(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if s.beats == nil || s.cfg.SessionsTopic == "" {
				continue
			}
			// One heartbeat per device, however many connections it has.
			var recs []*kgo.Record
			for _, d := range s.hub.devices() {
				r, err := eventlog.Record(s.cfg.SessionsTopic, string(d.user),
					domain.DeviceHeartbeat{UserID: d.user, DeviceID: d.device}, heartbeatMeta(d.user, d.device, now))
				if err == nil {
					recs = append(recs, r)
				}
			}
			if len(recs) == 0 {
				continue
			}
			if err := s.beats.AppendRecords(ctx, recs...); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("heartbeats", "devices", len(recs), "err", err)
			}
		}
	}
}

// resumeFrom reads the resume point a device may give at connect,
// ?epoch=E&position=P (both or neither): the connection then syncs from
// there before any live entry, so no live entry can overtake what the
// device missed. A sync frame later replays from the position it names.
func resumeFrom(r *http.Request) (resume bool, epoch int32, position int64, err error) {
	q := r.URL.Query()
	e, p := q.Get("epoch"), q.Get("position")
	if e == "" && p == "" {
		return false, 0, 0, nil
	}
	ev, err1 := strconv.ParseInt(e, 10, 32)
	pv, err2 := strconv.ParseInt(p, 10, 64)
	if err1 != nil || err2 != nil || ev < 0 || pv < -1 {
		return false, 0, 0, domain.Errorf(domain.CodeBadRequest, "resume with epoch (0 or more) and position (-1 or more) together")
	}
	return true, int32(ev), pv, nil
}

// Count returns the number of open connections.
func (s *Server) Count() int { return s.hub.Count() }

// CloseDevice closes the device's connections on this node, telling it
// why (its session was revoked: a reconnect with the same token is
// refused at the upgrade).
func (s *Server) CloseDevice(u domain.UserID, d domain.DeviceID, why string) {
	for _, c := range s.hub.conns(u) {
		if c.device == d {
			c.cut(why)
		}
	}
}

// Shutdown closes every connection and waits for their handlers, at most
// until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	for i := range s.hub.shards {
		sh := &s.hub.shards[i]
		sh.mu.RLock()
		for _, m := range sh.conns {
			for c := range m {
				c.close()
			}
		}
		sh.mu.RUnlock()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("ws: shutdown: connections still open")
	}
}

// heartbeatMeta names a heartbeat by its device and time: unique without a
// call to the id generator per heartbeat.
func heartbeatMeta(u domain.UserID, d domain.DeviceID, t time.Time) domain.Meta {
	return domain.Meta{EventID: fmt.Sprintf("hb.%s.%s.%d", u, d, t.UnixNano()), Time: t.UTC()}
}
