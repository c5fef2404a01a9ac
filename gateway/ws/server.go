package ws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/auth"
	"github.com/evchat/evchat/projections/store"
)

// Commands carries out what devices ask over WebSocket.
type Commands interface {
	// Send posts a message; appended, if not nil, is called once the send
	// is in the log, when a later send to the channel may start (see
	// sends).
	Send(ctx context.Context, sender domain.UserID, device domain.DeviceID, ch domain.ChannelID, clientMsgID, text string, appended func()) (domain.MessageID, error)
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
	bw := &batchWriter{ResponseWriter: w}
	wsc, err := s.upgrader.Upgrade(bw, r, nil)
	if err != nil {
		return nil // the upgrader has answered
	}
	wsc.SetReadLimit(s.cfg.ReadLimit)
	g := s.gen.Load()
	c := &conn{
		gen: g, user: cl.UserID, device: cl.DeviceID, ws: wsc, out: bw.bc,
		q: newSendQueue(s.cfg.QueueSize, s.cfg.QueueBytes), bodies: g.tailer.bodies, done: make(chan struct{}),
		h: newHandoff(s.cfg.SyncBuffer, s.cfg.QueueBytes), metrics: s.cfg.Metrics,
	}
	// The writer starts once the connection's hello is decided (below):
	// frames the hub or the tailer queue for it before then wait behind
	// the hello, so that hello is always the first frame.
	var writer sync.WaitGroup
	defer writer.Wait()
	startWriter := sync.OnceFunc(func() { writer.Go(func() { c.write(s.cfg.WriteTimeout, s.cfg.PingInterval) }) })
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
		startWriter()
		return nil
	}
	hello := g.epoch
	c.send(ServerFrame{Type: TypeHello, UserID: c.user, DeviceID: c.device, Epoch: &hello})
	g.tailer.mark(part, func(next int64) {
		c.mu.Lock()
		c.h.connect(max(next, end), resume) // a resuming device gets nothing live before its sync
		c.mu.Unlock()
		s.hub.add(c)
	})
	defer s.hub.remove(c)
	if s.gen.Load() != g { // the epoch switched while this one registered
		c.cut(epochChanged(s.gen.Load().epoch))
		return nil
	}
	if s.cfg.Sessions != nil {
		// A logout that came between the upgrade's check and the
		// registration closed nothing here; it is in the store by now
		// (it is revoked there before device.logged_out is appended).
		if revoked, err := s.cfg.Sessions.SessionRevoked(r.Context(), c.user, cl.Session); err == nil && revoked {
			c.cut(LoggedOutReason)
			return nil
		}
	}
	startWriter()
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
			if !sends.start(c.done, f.ChannelID, func(next func()) { s.send(r.Context(), c, f, read, next, log) }) {
				return nil // closing: the client resends what was not acknowledged
			}
			continue
		}
		s.handle(r.Context(), c, part, f, log)
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
