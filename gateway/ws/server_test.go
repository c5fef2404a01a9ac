package ws_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/auth"
	"github.com/evchat/evchat/gateway/ws"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/store"
)

// The gateway is served on the embedded broker (the tailer needs a log)
// with fakes for the commands and the store.

const user = domain.UserID("u1")

// fakeTexts resolves every entry without text to "text of <id>".
type fakeTexts struct{}

func (fakeTexts) Resolve(_ context.Context, ms []domain.InboxMessage) error {
	for i := range ms {
		if !ms[i].Resolved() {
			ms[i].Text = "text of " + ms[i].MessageID.String()
		}
	}
	return nil
}

func (fakeTexts) Put(domain.MessageID, string) {}

// fakeStore holds one user's inbox in partition 0, and the inbox
// projection's position there (applied: every entry below is stored).
type fakeStore struct {
	applied atomic.Int64
	entries []store.InboxEntry
}

func newFakeStore(n int, text string) *fakeStore {
	st := &fakeStore{}
	for i := range n {
		st.entries = append(st.entries, store.InboxEntry{UserID: user, Epoch: 1, Offset: int64(i), Message: domain.InboxMessage{
			UserID: user, ChannelID: "g1", MessageID: domain.MessageID(1000 + i), SenderID: "u2", Text: text, SentAt: time.Unix(1, 0).UTC(),
		}})
	}
	st.applied.Store(int64(n))
	return st
}

func (s *fakeStore) Inbox(_ context.Context, _ domain.UserID, _ int32, after int64, limit int) ([]store.InboxEntry, error) {
	var out []store.InboxEntry
	for _, e := range s.entries {
		if e.Offset > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *fakeStore) Positions(context.Context, string) (map[int32]int64, error) {
	return map[int32]int64{0: s.applied.Load()}, nil
}

func (s *fakeStore) DeviceCursors(context.Context, domain.UserID) ([]store.DeviceCursor, error) {
	return nil, nil
}

// fakeCommands carries out commands at once, except a send whose client
// message id has a gate: it waits until the gate closes. It records the
// order in which sends start and end, and whether two sends to one channel
// ever ran at once.
type fakeCommands struct {
	mu       sync.Mutex
	gates    map[string]chan struct{}
	log      []string
	running  map[domain.ChannelID]int
	overlaps []string
	started  chan string // each send's client message id as it starts
	acked    chan int64  // each received's position
	read     chan domain.MessageID
}

func newFakeCommands() *fakeCommands {
	return &fakeCommands{
		gates: map[string]chan struct{}{}, running: map[domain.ChannelID]int{},
		started: make(chan string, 100), acked: make(chan int64, 100), read: make(chan domain.MessageID, 100),
	}
}

func (f *fakeCommands) gate(cmid string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := make(chan struct{})
	f.gates[cmid] = g
	return g
}

func (f *fakeCommands) Send(ctx context.Context, _ domain.UserID, _ domain.DeviceID, ch domain.ChannelID, cmid, _ string, _ func()) (domain.MessageID, error) {
	f.mu.Lock()
	f.log = append(f.log, cmid+" start")
	if f.running[ch]++; f.running[ch] > 1 {
		f.overlaps = append(f.overlaps, cmid)
	}
	g := f.gates[cmid]
	f.mu.Unlock()
	f.started <- cmid
	var err error
	if g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	f.mu.Lock()
	f.log = append(f.log, cmid+" end")
	f.running[ch]--
	f.mu.Unlock()
	return domain.MessageID(len(cmid)), err
}

func (f *fakeCommands) Acked(_ context.Context, _ auth.Claims, _ int32, position int64) error {
	f.acked <- position
	return nil
}

func (f *fakeCommands) Read(_ context.Context, _ auth.Claims, _ domain.ChannelID, id domain.MessageID) error {
	f.read <- id
	return nil
}

// gateway is one Server on an httptest server, and what it logged.
type gateway struct {
	srv  *ws.Server
	hub  *ws.Hub
	http *httptest.Server
	logs *syncBuffer
	log  eventlog.Config // the embedded broker, in the gateway's inbox epoch
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// smallBuffers makes a socket's kernel buffers as small as they go, so
// that a client that reads slowly holds the server's writes back after a
// few frames rather than after megabytes.
func smallBuffers(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096); serr == nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}
	})
	return errors.Join(err, serr)
}

// startGateway serves a gateway for user u1 (device d1) on the embedded
// broker; everything it starts stops when the test ends.
func startGateway(t *testing.T, cfg ws.Config, st *fakeStore, cmds ws.Commands) *gateway {
	t.Helper()
	return startGatewayIn(t, 1, cfg, st, cmds)
}

// startGatewayIn is startGateway in an inbox epoch.
func startGatewayIn(t *testing.T, epoch int32, cfg ws.Config, st ws.InboxStore, cmds ws.Commands) *gateway {
	t.Helper()
	emb, err := eventlog.StartEmbedded("", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	lcfg := eventlog.Config{Brokers: emb.Addrs(), Partitions: 1}.WithEpoch(domain.OutputInbox, epoch)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := eventlog.EnsureTopics(ctx, lcfg); err != nil {
		t.Fatal(err)
	}
	hub := ws.NewHub()
	tailer, err := ws.NewTailer(ctx, lcfg, st, hub, fakeTexts{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tctx, stopTailer := context.WithCancel(context.Background())
	tailed := make(chan error, 1)
	go func() { tailed <- tailer.Run(tctx) }()
	t.Cleanup(func() {
		stopTailer()
		if err := <-tailed; err != nil {
			t.Errorf("tailer: %v", err)
		}
	})

	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	srv := ws.NewServer(cfg, hub, tailer, cmds, st, nil)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.Serve(w, r, auth.Claims{UserID: user, DeviceID: "d1"})
	}))
	l, err := (&net.ListenConfig{Control: smallBuffers}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs.Listener = l
	hs.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		hs.Close()
	})
	return &gateway{srv: srv, hub: hub, http: hs, logs: logs, log: lcfg}
}

// client is a device's end of a connection.
type client struct {
	t *testing.T
	c *websocket.Conn
}

func (g *gateway) dial(t *testing.T, query string) *client {
	t.Helper()
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: smallBuffers}).DialContext}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(g.http.URL, "http")+"/?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c}
}

func (c *client) write(f map[string]any) {
	c.t.Helper()
	if err := c.c.WriteJSON(f); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame, or the error that ended the connection.
func (c *client) read() (ws.ServerFrame, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, b, err := c.c.ReadMessage()
	if err != nil {
		return ws.ServerFrame{}, err
	}
	var f ws.ServerFrame
	if err := json.Unmarshal(b, &f); err != nil {
		c.t.Fatalf("frame %s: %v", b, err)
	}
	return f, nil
}

func (c *client) must() ws.ServerFrame {
	c.t.Helper()
	f, err := c.read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// waitFor waits, up to a generous bound, until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("gave up waiting: %s", what)
		panic("unreachable")
	}
}

// TestSlowSendHoldsOnlyItsChannel: while a send waits (as a resend waits
// for its first attempt's lease), the connection's later frames are
// handled: a send to another channel is acknowledged, ping, received and
// read are answered; a later send to the same channel waits for it and
// reaches the log after it.
func TestSlowSendHoldsOnlyItsChannel(t *testing.T) {
	t.Parallel()
	cmds := newFakeCommands()
	g := startGateway(t, ws.Config{SendsInFlight: 4}, newFakeStore(0, ""), cmds)
	c := g.dial(t, "")
	if f := c.must(); f.Type != ws.TypeHello {
		t.Fatalf("first frame %+v", f)
	}
	gate := cmds.gate("a1")
	send := func(ch, cmid string) {
		c.write(map[string]any{"type": "send", "channel_id": ch, "client_msg_id": cmid, "text": "hi"})
	}
	send("g1", "a1")
	if got := recv(t, cmds.started, "a1 to start"); got != "a1" {
		t.Fatalf("started %s, want a1", got)
	}
	send("g1", "a2")
	send("g2", "b1")
	c.write(map[string]any{"type": "ping"})
	c.write(map[string]any{"type": "received", "epoch": 1, "position": 7})
	c.write(map[string]any{"type": "read", "channel_id": "g2", "message_id": "42"})

	// All of it while a1 still waits.
	var got []string
	for len(got) < 2 {
		f := c.must()
		switch f.Type {
		case ws.TypeAck:
			got = append(got, "ack "+f.ClientMsgID)
		case ws.TypePong:
			got = append(got, "pong")
		default:
			t.Fatalf("unexpected frame %+v", f)
		}
	}
	if !(got[0] == "ack b1" && got[1] == "pong" || got[0] == "pong" && got[1] == "ack b1") {
		t.Fatalf("while a1 waits got %v, want the ack of b1 and a pong", got)
	}
	if p := recv(t, cmds.acked, "received to be handled"); p != 7 {
		t.Fatalf("received %d, want 7", p)
	}
	if id := recv(t, cmds.read, "read to be handled"); id != 42 {
		t.Fatalf("read %d, want 42", id)
	}

	close(gate)
	for _, want := range []string{"a1", "a2"} {
		if f := c.must(); f.Type != ws.TypeAck || f.ClientMsgID != want {
			t.Fatalf("after a1 ended got %+v, want the ack of %s", f, want)
		}
	}
	cmds.mu.Lock()
	defer cmds.mu.Unlock()
	var g1 []string
	for _, e := range cmds.log {
		if e[0] == 'a' {
			g1 = append(g1, e)
		}
	}
	if want := "a1 start,a1 end,a2 start,a2 end"; strings.Join(g1, ",") != want || len(cmds.overlaps) > 0 {
		t.Fatalf("sends to g1: %v (overlapping: %v), want %s", g1, cmds.overlaps, want)
	}
}

// TestSlowSendsFullSlots: with SendsInFlight sends in flight (one waiting,
// one waiting behind it), the connection reads on once one ends and drops
// nothing: a send to another channel read meanwhile starts only after the
// waiting send ended, and the ping after it is answered after that send's
// ack. (That the read loop waits, rather than reads on, is proved without
// timing by TestSendsBackPressure.)
func TestSlowSendsFullSlots(t *testing.T) {
	t.Parallel()
	cmds := newFakeCommands()
	g := startGateway(t, ws.Config{SendsInFlight: 2}, newFakeStore(0, ""), cmds)
	c := g.dial(t, "")
	if f := c.must(); f.Type != ws.TypeHello {
		t.Fatalf("first frame %+v", f)
	}
	gate := cmds.gate("a1")
	for _, s := range [][2]string{{"g1", "a1"}, {"g1", "a2"}, {"g2", "b1"}} {
		c.write(map[string]any{"type": "send", "channel_id": s[0], "client_msg_id": s[1], "text": "hi"})
	}
	c.write(map[string]any{"type": "ping"})
	recv(t, cmds.started, "a1 to start")
	close(gate)
	got := map[string]int{}
	for i := range 4 {
		f := c.must()
		got[f.Type+" "+f.ClientMsgID] = i
	}
	if len(got) != 4 || got["ack a1"] != 0 || got["ack a2"] == 0 || got["ack b1"] == 0 || got["pong "] == 0 {
		t.Fatalf("got %v, want the ack of a1 first, then those of a2 and b1 and a pong", got)
	}
	cmds.mu.Lock()
	defer cmds.mu.Unlock()
	at := map[string]int{}
	for i, e := range cmds.log {
		at[e] = i
	}
	if at["b1 start"] < at["a1 end"] || at["a2 start"] < at["a1 end"] {
		t.Fatalf("sends ran %v: a2 and b1 must start after a1 ended", cmds.log)
	}
}

// TestSyncAtTheClientsPace: a device whose backlog takes it far longer
// than SyncStall to read, reading steadily, gets all of it and synced;
// one that stops reading is cut off once SyncStall passes without
// progress, even though its writes would wait a minute.
func TestSyncAtTheClientsPace(t *testing.T) {
	t.Parallel()
	const (
		count = 150
		stall = time.Second
	)
	cfg := ws.Config{QueueSize: 16, SyncStall: stall, CommandTimeout: 1500 * time.Millisecond, WriteTimeout: time.Minute}
	text := strings.Repeat("x", 2000) // a few frames fill the socket buffers

	t.Run("reads steadily", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, cfg, newFakeStore(count, text), newFakeCommands())
		c := g.dial(t, "epoch=1&position=-1")
		if f := c.must(); f.Type != ws.TypeHello {
			t.Fatalf("first frame %+v", f)
		}
		start := time.Now()
		tick := time.NewTicker(stall / 40) // the client's pace: a frame every 25 ms, count*25 ms in all
		defer tick.Stop()
		for i := range count {
			<-tick.C
			f, err := c.read()
			if err != nil {
				t.Fatalf("message %d of %d: %v (after %s); gateway logged:\n%s", i, count, err, time.Since(start), g.logs)
			}
			if f.Type != ws.TypeMessage || *f.Position != int64(i) {
				t.Fatalf("frame %d: %+v", i, f)
			}
		}
		if f := c.must(); f.Type != ws.TypeSynced || *f.Position != count-1 {
			t.Fatalf("after the backlog: %+v", f)
		}
		if d := time.Since(start); d < 2*stall {
			t.Fatalf("the backlog took %s, not longer than SyncStall (%s): the test proves nothing", d, stall)
		}
	})

	t.Run("stops reading", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, cfg, newFakeStore(count, text), newFakeCommands())
		c := g.dial(t, "epoch=1&position=-1")
		if f := c.must(); f.Type != ws.TypeHello {
			t.Fatalf("first frame %+v", f)
		}
		// It reads nothing more until the gateway has closed it.
		waitFor(t, "the gateway to close the connection", func() bool { return g.srv.Count() == 0 })
		if !strings.Contains(g.logs.String(), "the client read nothing for "+stall.String()) {
			t.Fatalf("the gateway logged:\n%s", g.logs)
		}
		for i := 0; ; i++ {
			f, err := c.read()
			if err != nil {
				break
			}
			if f.Type == ws.TypeSynced || i > count {
				t.Fatalf("frame %d: %+v after the cut", i, f)
			}
		}
	})
}

// TestSyncWaitsForAMovingProjection: a sync waits for the inbox projection
// to reach the tailer's point as long as the projection moves, however
// long that takes, delivering what it has stored meanwhile; a projection
// that stops moving fails the sync after SyncStall, and the device is told
// why.
func TestSyncWaitsForAMovingProjection(t *testing.T) {
	t.Parallel()
	const (
		count = 30
		stall = time.Second
	)
	cfg := ws.Config{SyncStall: stall, CommandTimeout: 1500 * time.Millisecond}

	// The tailer starts at the projection's position (count); then the
	// projection is made to store the entries again, one every stall/10
	// (count*stall/10 in all), stopping at stopAt.
	run := func(t *testing.T, stopAt int64) (*client, *gateway) {
		st := newFakeStore(count, "hi")
		g := startGateway(t, cfg, st, newFakeCommands())
		st.applied.Store(0)
		stop := make(chan struct{})
		var projection sync.WaitGroup
		projection.Go(func() {
			tick := time.NewTicker(stall / 10)
			defer tick.Stop()
			for st.applied.Load() < stopAt {
				select {
				case <-stop:
					return
				case <-tick.C:
					st.applied.Add(1)
				}
			}
		})
		t.Cleanup(func() { close(stop); projection.Wait() })
		c := g.dial(t, "epoch=1&position=-1")
		if f := c.must(); f.Type != ws.TypeHello {
			t.Fatalf("first frame %+v", f)
		}
		return c, g
	}

	t.Run("moving", func(t *testing.T) {
		t.Parallel()
		c, g := run(t, count)
		for i := range count {
			f, err := c.read()
			if err != nil {
				t.Fatalf("message %d: %v; gateway logged:\n%s", i, err, g.logs)
			}
			if f.Type != ws.TypeMessage || *f.Position != int64(i) {
				t.Fatalf("frame %d: %+v", i, f)
			}
		}
		if f := c.must(); f.Type != ws.TypeSynced {
			t.Fatalf("after the backlog: %+v", f)
		}
	})

	t.Run("stuck", func(t *testing.T) {
		t.Parallel()
		c, _ := run(t, count/2)
		// What the projection stored, maybe an error frame, then the
		// close, which says why.
		var err error
		for f := (ws.ServerFrame{}); err == nil; f, err = c.read() {
			if f.Type == ws.TypeSynced || f.Type == ws.TypeMessage && *f.Position >= count/2 {
				t.Fatalf("got %+v from a sync whose projection is stuck at %d", f, count/2)
			}
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseTryAgainLater || !strings.Contains(ce.Text, "has not moved for "+stall.String()) {
			t.Fatalf("then %v, want close 1013 sync failed", err)
		}
	})
}

// TestSyncResolvesTexts: entries in the store point at their message (no
// text); a sync delivers each with the text Bodies resolves, in the same
// message frame as before, and an old entry that carries its text keeps it.
func TestSyncResolvesTexts(t *testing.T) {
	t.Parallel()
	st := newFakeStore(3, "")
	st.entries[1].Message.Text = "copied (version 1)"
	g := startGateway(t, ws.Config{}, st, newFakeCommands())
	c := g.dial(t, "epoch=1&position=-1")
	if f := c.must(); f.Type != ws.TypeHello {
		t.Fatalf("first frame %+v", f)
	}
	want := []string{"text of 1000", "copied (version 1)", "text of 1002"}
	for i, w := range want {
		f := c.must()
		if f.Type != ws.TypeMessage || *f.Position != int64(i) || f.Text != w {
			t.Fatalf("frame %d: %+v; want a message with text %q", i, f, w)
		}
	}
	if f := c.must(); f.Type != ws.TypeSynced {
		t.Fatalf("after the backlog: %+v", f)
	}
}

// revokedSessions says every session is revoked.
type revokedSessions struct{}

func (revokedSessions) SessionRevoked(context.Context, domain.UserID, string) (bool, error) {
	return true, nil
}

// pushingSessions, asked whether a session is revoked, first queues a
// presence frame on the user's registered connections, as a presence
// change arriving at that moment would, and says it is not.
type pushingSessions struct {
	hub    *ws.Hub
	pushed atomic.Int32
}

func (p *pushingSessions) SessionRevoked(_ context.Context, u domain.UserID, _ string) (bool, error) {
	online := true
	p.pushed.Add(int32(ws.PushTo(p.hub, u, ws.ServerFrame{Type: ws.TypePresence, UserID: "someone", Online: &online})))
	return false, nil
}

// TestHelloFirst: hello is a connection's first frame, even when a frame
// for the user is queued between the connection's registration and its
// hello (the session's second look happens there). Before, the loader
// met "first frame is presence, not hello" on a loaded machine.
func TestHelloFirst(t *testing.T) {
	chk := &pushingSessions{}
	g := startGateway(t, ws.Config{Sessions: chk}, newFakeStore(0, ""), newFakeCommands())
	chk.hub = g.hub
	c := g.dial(t, "")
	if f := c.must(); f.Type != ws.TypeHello {
		t.Fatalf("first frame %+v, want hello", f)
	}
	if f := c.must(); f.Type != ws.TypePresence {
		t.Fatalf("second frame %+v, want the presence frame queued before hello", f)
	}
	if chk.pushed.Load() != 1 {
		t.Fatalf("the presence frame reached %d connections, want 1", chk.pushed.Load())
	}
}

// TestRevokedAfterRegistration: a connection whose session is revoked by
// the time it has registered is closed with LoggedOutReason (a logout
// between the upgrade's check and the registration closed nothing).
// Without the second look it got its hello and stayed open.
func TestRevokedAfterRegistration(t *testing.T) {
	g := startGateway(t, ws.Config{Sessions: revokedSessions{}}, newFakeStore(0, ""), newFakeCommands())
	c := g.dial(t, "")
	for {
		f, err := c.read()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Text != ws.LoggedOutReason {
				t.Fatalf("connection ended with %v, want a close saying %q", err, ws.LoggedOutReason)
			}
			return
		}
		if f.Type == ws.TypeHello {
			t.Fatalf("a revoked session got its hello")
		}
	}
}
