package chat

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// The fakes: the real Pebble store with two hooks, a log that keeps what
// is appended and plays the history projection on demand, a clock that
// moves only when a test moves it, and a counter for ids.

// hookedStore is the Pebble store; it counts reservation reads (a waiting
// resend polls them) and can run a function once after a ReserveSend.
type hookedStore struct {
	*pebblestore.Store
	reads        atomic.Int64
	afterReserve atomic.Pointer[func()]
	barrier      atomic.Pointer[barrier] // ReserveSend answers when all of its calls have read
}

// barrier lets n calls through together.
type barrier struct {
	left atomic.Int64
	all  chan struct{}
}

func newBarrier(n int) *barrier {
	b := &barrier{all: make(chan struct{})}
	b.left.Store(int64(n))
	return b
}

func (b *barrier) wait(ctx context.Context) {
	if b.left.Add(-1) == 0 {
		close(b.all)
	}
	select {
	case <-b.all:
	case <-ctx.Done():
	}
}

func (h *hookedStore) SendReservation(ctx context.Context, sender domain.UserID, clientMsgID string) (store.SendReservation, error) {
	h.reads.Add(1)
	return h.Store.SendReservation(ctx, sender, clientMsgID)
}

func (h *hookedStore) ReserveSend(ctx context.Context, r store.SendReservation) (store.SendReservation, bool, error) {
	got, created, err := h.Store.ReserveSend(ctx, r)
	if b := h.barrier.Load(); b != nil {
		b.wait(ctx)
	}
	if f := h.afterReserve.Swap(nil); f != nil {
		(*f)()
	}
	return got, created, err
}

// fakeLog is a log of one partition per topic. Unless lagging, history
// applies each record as it is appended; lagging, it applies them when the
// test calls catchUp.
type fakeLog struct {
	st    *pebblestore.Store
	topic string

	mu      sync.Mutex
	recs    []domain.MessageSent // the channel topic, offset = index
	applied int                  // how many of recs history has applied
	lag     bool
	failing error         // appends fail with it and write nothing
	endErr  error         // End fails with it
	endGate chan struct{} // if set, End waits until it is closed
	ends    int           // End calls
}

func (l *fakeLog) Append(ctx context.Context, topic, key string, ev domain.Event, m domain.Meta) (eventlog.Position, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing != nil {
		return eventlog.Position{}, l.failing
	}
	ms, ok := ev.(domain.MessageSent)
	if topic != l.topic || !ok || string(ms.ChannelID) != key || m.EventID != ms.MessageID.String() {
		return eventlog.Position{}, fmt.Errorf("fake log: unexpected append of %T to %s under %s (%+v)", ev, topic, key, m)
	}
	l.recs = append(l.recs, ms)
	off := int64(len(l.recs) - 1)
	if !l.lag {
		if err := l.applyLocked(ctx); err != nil {
			return eventlog.Position{}, err
		}
	}
	return eventlog.Position{Partition: 0, Offset: off}, nil
}

func (l *fakeLog) End(ctx context.Context, topic, key string) (eventlog.Position, error) {
	l.mu.Lock()
	l.ends++
	gate, err := l.endGate, l.endErr
	end := eventlog.Position{Partition: 0, Offset: int64(len(l.recs))}
	l.mu.Unlock()
	if err != nil {
		return eventlog.Position{}, err
	}
	if gate != nil { // the answer is on its way back
		select {
		case <-gate:
		case <-ctx.Done():
			return eventlog.Position{}, ctx.Err()
		}
	}
	return end, nil
}

// applyLocked plays history: it stores each new message unless its id is
// stored (history drops a second copy), and the position past it.
func (l *fakeLog) applyLocked(ctx context.Context) error {
	for ; l.applied < len(l.recs); l.applied++ {
		ms := l.recs[l.applied]
		b := store.Batch{Projection: history.Name, Positions: map[int32]int64{0: int64(l.applied + 1)}}
		if _, err := l.st.MessageByID(ctx, ms.ChannelID, ms.MessageID); errors.Is(err, domain.ErrNotFound) {
			b.Messages = []store.Message{{
				ChannelID: ms.ChannelID, Offset: int64(l.applied), MessageID: ms.MessageID, SenderID: ms.SenderID,
				DeviceID: ms.DeviceID, ClientMsgID: ms.ClientMsgID, Text: ms.Text, SentAt: time.UnixMilli(1).UTC(),
			}}
		} else if err != nil {
			return err
		}
		if err := l.st.Apply(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func (l *fakeLog) catchUp(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.applyLocked(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// copies counts the records of message id in the log.
func (l *fakeLog) copies(id domain.MessageID) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ms := range l.recs {
		if ms.MessageID == id {
			n++
		}
	}
	return n
}

func (l *fakeLog) set(f func(l *fakeLog)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(l)
}

func (l *fakeLog) endCalls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ends
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type counter struct{ n atomic.Uint64 }

func (c *counter) NextID() (uint64, error) { return 1000 + c.n.Add(1), nil }

const (
	ann   domain.UserID    = "101"
	bob   domain.UserID    = "102"
	lease                  = 10 * time.Second
	ch1   domain.ChannelID = "g1"
	ch2   domain.ChannelID = "g2"
)

// env is one deployment: a store, a log, a clock and an id source that
// every node (Service) of a test shares.
type env struct {
	st  *hookedStore
	log *fakeLog
	clk *clock
	ids *counter
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ps, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	var chans []domain.Channel
	for _, id := range []domain.ChannelID{ch1, ch2} {
		chans = append(chans, domain.Channel{ID: id, Kind: domain.KindGroup, Name: string(id), CreatorID: ann, Members: []domain.UserID{ann, bob}, CreatedAt: time.UnixMilli(1).UTC()})
	}
	if err := ps.Apply(context.Background(), store.Batch{Channels: chans}); err != nil {
		t.Fatal(err)
	}
	topics := eventlog.NewTopics("chat", 1, 1)
	return &env{
		st:  &hookedStore{Store: ps},
		log: &fakeLog{st: ps, topic: topics.Channels},
		clk: &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		ids: &counter{},
	}
}

// node starts a process (Service) of machine id node, incarnation boot.
func (e *env) node(t *testing.T, node uint16, boot string) *Service {
	t.Helper()
	s, err := New(Config{
		Topics: eventlog.NewTopics("chat", 1, 1), ResendLease: lease, DeliveryTimeout: 5 * time.Second,
		Node: node, Boot: boot, Now: e.clk.Now,
	}, e.st, e.log, e.ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// send sends as the gateway does: Send, then Sent once acknowledged.
func send(ctx context.Context, s *Service, ch domain.ChannelID, clientMsgID, text string) (domain.MessageID, error) {
	id, err := s.Send(ctx, ann, "phone", ch, clientMsgID, text)
	if err == nil {
		s.Sent(ctx, ann, clientMsgID, id)
	}
	return id, err
}

func mustSend(t *testing.T, s *Service, ch domain.ChannelID, clientMsgID, text string) domain.MessageID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := send(ctx, s, ch, clientMsgID, text)
	if err != nil {
		t.Fatalf("send %s: %v", clientMsgID, err)
	}
	return id
}

// firstAttemptDies makes a send on s whose append fails, as if its
// process died before the append: the reservation stays, unappended.
func (e *env) firstAttemptDies(t *testing.T, s *Service, clientMsgID, text string) domain.MessageID {
	t.Helper()
	e.log.set(func(l *fakeLog) { l.failing = errors.New("killed") })
	defer e.log.set(func(l *fakeLog) { l.failing = nil })
	if _, err := s.Send(context.Background(), ann, "phone", ch1, clientMsgID, text); err == nil {
		t.Fatal("the failing append succeeded")
	}
	r, err := e.st.SendReservation(context.Background(), ann, clientMsgID)
	if err != nil {
		t.Fatal(err)
	}
	return r.MessageID
}

// waitFor waits, with a generous bound, until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type result struct {
	id  domain.MessageID
	err error
}

func goSend(s *Service, ch domain.ChannelID, clientMsgID, text string) <-chan result {
	out := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		id, err := send(ctx, s, ch, clientMsgID, text)
		out <- result{id, err}
	}()
	return out
}

func TestResendAfterAppend(t *testing.T) {
	e := newEnv(t)
	a := e.node(t, 1, "a")
	id := mustSend(t, a, ch1, "c1", "hi")
	// The clock never moves: an appended message is acknowledged at once,
	// on the same node and on another.
	for _, s := range []*Service{a, e.node(t, 2, "b")} {
		if got := mustSend(t, s, ch1, "c1", "hi"); got != id {
			t.Fatalf("resend: id %d, want the first %d", got, id)
		}
	}
	if n := e.log.copies(id); n != 1 {
		t.Fatalf("%d copies of message %d in the log, want 1", n, id)
	}
	if other := mustSend(t, a, ch1, "c2", "hi"); other == id || e.log.copies(other) != 1 {
		t.Fatalf("another client message id: id %d (first %d), %d copies", other, id, e.log.copies(other))
	}
}

// TestConcurrentResends: of many resends of one message whose first
// attempt died, exactly one appends, and all are acknowledged with the
// first id.
func TestConcurrentResends(t *testing.T) {
	for _, tc := range []struct {
		name    string
		resends func(e *env, t *testing.T) []*Service
	}{
		{"restarted node", func(e *env, t *testing.T) []*Service {
			// The first attempt's node restarted: take over at once.
			return []*Service{e.node(t, 1, "a2")}
		}},
		{"lease passed", func(e *env, t *testing.T) []*Service {
			e.clk.advance(lease)
			return []*Service{e.node(t, 2, "b"), e.node(t, 3, "c")}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			id := e.firstAttemptDies(t, e.node(t, 1, "a"), "c1", "hi")
			nodes := tc.resends(e, t)
			// The first resend to look for the message in the log is held
			// there until the others have either looked too (a takeover
			// that was not exclusive) or are waiting for its outcome.
			// History lags, so a resend that looked would not find
			// another's copy.
			gate := make(chan struct{})
			e.log.set(func(l *fakeLog) { l.endGate, l.lag = gate, true })
			reads := e.st.reads.Load()
			const n = 8
			// Every resend finds the reservation before any takes it over.
			e.st.barrier.Store(newBarrier(n))
			var outs []<-chan result
			for i := range n {
				outs = append(outs, goSend(nodes[i%len(nodes)], ch1, "c1", "hi"))
			}
			waitFor(t, "a second resend looks in the log, or the others wait", func() bool {
				return e.log.endCalls() >= 2 || e.st.reads.Load() >= reads+2*(n-1)
			})
			close(gate)
			for i, out := range outs {
				if r := <-out; r.err != nil || r.id != id {
					t.Errorf("resend %d: id %d, %v; want %d", i, r.id, r.err, id)
				}
			}
			if n := e.log.copies(id); n != 1 {
				t.Fatalf("%d copies of message %d in the log, want 1", n, id)
			}
		})
	}
}

// TestTakeOverWaitsForHistory: the first attempt reached the log but its
// process died before marking it, and history lags behind the log. The
// restarted node takes over at once, but appends nothing: it waits until
// history has read the log up to its end and finds the message there.
func TestTakeOverWaitsForHistory(t *testing.T) {
	e := newEnv(t)
	e.log.set(func(l *fakeLog) { l.lag = true })
	a := e.node(t, 1, "a")
	id, err := a.Send(context.Background(), ann, "phone", ch1, "c1", "hi") // no Sent: the process died
	if err != nil {
		t.Fatal(err)
	}
	out := goSend(e.node(t, 1, "a2"), ch1, "c1", "hi")
	waitFor(t, "the resend reads the log's end", func() bool { return e.log.endCalls() > 0 })
	select {
	case r := <-out:
		t.Fatalf("the resend returned (id %d, %v) before history read the log's end", r.id, r.err)
	default:
	}
	e.log.catchUp(t)
	if r := <-out; r.err != nil || r.id != id {
		t.Fatalf("resend: id %d, %v; want %d", r.id, r.err, id)
	}
	if n := e.log.copies(id); n != 1 {
		t.Fatalf("%d copies of message %d in the log, want 1", n, id)
	}
	if r, err := e.st.SendReservation(context.Background(), ann, "c1"); err != nil || !r.Appended {
		t.Fatalf("reservation after the takeover: %+v, %v; want it marked appended", r, err)
	}
}

// TestLeaseTakeover: a resend on another node waits while the first
// attempt's lease runs, and takes over when it has passed.
func TestLeaseTakeover(t *testing.T) {
	e := newEnv(t)
	id := e.firstAttemptDies(t, e.node(t, 1, "a"), "c1", "hi")
	b := e.node(t, 2, "b")

	// Within the lease, a resend that cannot wait gets "unavailable".
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := send(ctx, b, ch1, "c1", "hi")
	cancel()
	if domain.CodeOf(err) != domain.CodeUnavailable {
		t.Fatalf("resend within the lease: %v, want code %s", err, domain.CodeUnavailable)
	}

	reads := e.st.reads.Load()
	out := goSend(b, ch1, "c1", "hi")
	waitFor(t, "the resend polls the reservation", func() bool { return e.st.reads.Load() >= reads+3 })
	e.clk.advance(lease - time.Millisecond)
	waitFor(t, "the resend polls again", func() bool { return e.st.reads.Load() >= reads+6 })
	if n := e.log.copies(id); n != 0 {
		t.Fatalf("%d copies of message %d in the log within the lease, want 0", n, id)
	}
	e.clk.advance(time.Millisecond)
	if r := <-out; r.err != nil || r.id != id {
		t.Fatalf("resend after the lease: id %d, %v; want %d", r.id, r.err, id)
	}
	if n := e.log.copies(id); n != 1 {
		t.Fatalf("%d copies of message %d in the log, want 1", n, id)
	}
}

// TestSendPastItsDeadline: a send whose context has ended, whichever step
// it reached, fails with "unavailable" (the client resends), not with an
// internal error, and appends nothing.
func TestSendPastItsDeadline(t *testing.T) {
	e := newEnv(t)
	a := e.node(t, 1, "a")
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	for name, ctx := range map[string]context.Context{"past its deadline": expired, "canceled": canceled} {
		if _, err := a.Send(ctx, ann, "phone", ch1, "c1", "hi"); domain.CodeOf(err) != domain.CodeUnavailable {
			t.Errorf("a send %s: %v, want code %s", name, err, domain.CodeUnavailable)
		}
	}
	if n := len(e.log.recs); n != 0 {
		t.Fatalf("%d messages in the log, want none", n)
	}
	if id := mustSend(t, a, ch1, "c1", "hi"); e.log.copies(id) != 1 {
		t.Fatalf("the resend: %d copies of message %d in the log, want 1", e.log.copies(id), id)
	}
}

// TestSlowAttemptLosesItsLease: an attempt that reaches its append too late
// in its lease renews it first; when another resend has taken over
// meanwhile, it appends nothing and answers with that resend's outcome.
func TestSlowAttemptLosesItsLease(t *testing.T) {
	e := newEnv(t)
	a, b := e.node(t, 1, "a"), e.node(t, 2, "b")
	var bid domain.MessageID
	stall := func() {
		// a has reserved and stalls past its lease; b's resend takes over.
		e.clk.advance(lease)
		bid = mustSend(t, b, ch1, "c1", "hi")
	}
	e.st.afterReserve.Store(&stall)
	id := mustSend(t, a, ch1, "c1", "hi")
	if id != bid {
		t.Fatalf("first attempt: id %d, resend %d; want one id", id, bid)
	}
	if n := e.log.copies(id); n != 1 {
		t.Fatalf("%d copies of message %d in the log, want 1", n, id)
	}
}

// TestReleasedAttempt: a resend that took over and failed before it
// appended releases the reservation, so the next takes over at once.
func TestReleasedAttempt(t *testing.T) {
	e := newEnv(t)
	id := e.firstAttemptDies(t, e.node(t, 1, "a"), "c1", "hi")
	e.clk.advance(lease)
	e.log.set(func(l *fakeLog) { l.endErr = domain.Errorf(domain.CodeUnavailable, "no log") })
	if _, err := send(context.Background(), e.node(t, 2, "b"), ch1, "c1", "hi"); domain.CodeOf(err) != domain.CodeUnavailable {
		t.Fatalf("resend without the log's end: %v, want code %s", err, domain.CodeUnavailable)
	}
	e.log.set(func(l *fakeLog) { l.endErr = nil })
	// The clock stands still: no lease passes.
	if got := mustSend(t, e.node(t, 3, "c"), ch1, "c1", "hi"); got != id {
		t.Fatalf("resend after a release: id %d, want %d", got, id)
	}
	if n := e.log.copies(id); n != 1 {
		t.Fatalf("%d copies of message %d in the log, want 1", n, id)
	}
}

// TestResendConflicts: the same client message id with another text or
// channel is refused at once, appended or not.
func TestResendConflicts(t *testing.T) {
	e := newEnv(t)
	a := e.node(t, 1, "a")
	ctx := context.Background()
	first, err := a.Send(ctx, ann, "phone", ch1, "c1", "hi") // not marked: a resend would wait
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ch   domain.ChannelID
		text string
	}{
		{"another text", ch1, "hi!"},
		{"another channel", ch2, "hi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range []*Service{a, e.node(t, 2, "b")} {
				// Bounded: a resend taken for the same message would wait
				// for the first attempt's lease.
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := s.Send(ctx, ann, "phone", tc.ch, "c1", tc.text)
				cancel()
				if domain.CodeOf(err) != domain.CodeConflict {
					t.Fatalf("got %v, want code %s", err, domain.CodeConflict)
				}
			}
		})
	}
	a.Sent(ctx, ann, "c1", first)
	if got := mustSend(t, a, ch1, "c1", "hi"); got != first {
		t.Fatalf("resend with the same text: id %d, want %d", got, first)
	}
	if n := e.log.copies(first); n != 1 {
		t.Fatalf("%d copies of message %d in the log, want 1", n, first)
	}
}

func TestConfigValidate(t *testing.T) {
	topics := eventlog.NewTopics("chat", 1, 1)
	for _, tc := range []struct {
		lease, delivery time.Duration
		ok              bool
	}{
		{0, 0, true}, // the defaults: 10 s and 5 s
		{10 * time.Second, 5 * time.Second, true},
		{6 * time.Second, 5 * time.Second, false},
		{5 * time.Second, 5 * time.Second, false},
		{3 * time.Second, time.Second, true},
	} {
		cfg, err := Config{Topics: topics, ResendLease: tc.lease, DeliveryTimeout: tc.delivery}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("lease %s, delivery timeout %s: %v, want ok=%v", tc.lease, tc.delivery, err, tc.ok)
		}
	}
}
