package chat

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/replies"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/sends"
	"github.com/evchat/evchat/projections/sends/sendstest"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// The send path on its real parts: a log (kfake, and real Kafka when
// EVCHAT_KAFKA names it: deploy/servers.sh start), the sends processor,
// each node's replies reader and appender, and a Pebble store that holds
// two channels. cmd/chatd's tests run the whole node on both backends.

type counter struct{ n atomic.Uint64 }

func (c *counter) NextID() (uint64, error) { return 1000 + c.n.Add(1), nil }

const (
	ann domain.UserID    = "101"
	bob domain.UserID    = "102"
	ch1 domain.ChannelID = "g1"
	ch2 domain.ChannelID = "g2"
)

// env is one deployment: a log, a store and an id source that every node
// (Service) of a test shares.
type env struct {
	cfg eventlog.Config
	st  *pebblestore.Store
	ids *counter
}

// eachLog runs fn on kfake, and on the real Kafka EVCHAT_KAFKA names (CI
// must name it).
func eachLog(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("kfake", func(t *testing.T) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": "900000"}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		fn(t, newEnv(t, eventlog.Config{Brokers: c.ListenAddrs(), Partitions: 2}))
	})
	k := os.Getenv("EVCHAT_KAFKA")
	if k == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must run the send tests on real Kafka: EVCHAT_KAFKA is unset")
		}
		return
	}
	t.Run("kafka", func(t *testing.T) {
		prefix := fmt.Sprintf("chattest%d", time.Now().UnixNano())
		fn(t, newEnv(t, eventlog.Config{Brokers: strings.Split(k, ","), Prefix: prefix, Partitions: 2}))
	})
}

func newEnv(t *testing.T, cfg eventlog.Config) *env {
	t.Helper()
	if err := eventlog.EnsureTopics(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
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
	return &env{cfg: cfg, st: ps, ids: &counter{}}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// decide runs the sends processor until the returned stop is called (or
// the test ends).
func (e *env) decide(t *testing.T, st sends.Store) (stop func()) {
	t.Helper()
	p, err := sends.New(sends.Config{Log: e.cfg}, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sends processor: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// node starts a gateway process (Service) of machine id node: its
// appender and its replies reader.
func (e *env) node(t *testing.T, node uint16) *Service {
	t.Helper()
	return e.nodeWith(t, node, 0, e.st)
}

// nodeWith is node with a channel lease (0: the default) and a store of
// its own.
func (e *env) nodeWith(t *testing.T, node uint16, lease time.Duration, st Store) *Service {
	t.Helper()
	app, err := eventlog.NewAppender(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	r, err := replies.New(testCtx(t), e.cfg, node, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replies reader: %v", err)
		}
	})
	s, err := New(Config{Topics: e.cfg.Topics(), Replies: r, ChannelLease: lease}, st, app, e.ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// copies counts the committed message.sent records of id in the channel
// topic.
func (e *env) copies(t *testing.T, id domain.MessageID) int {
	t.Helper()
	n := 0
	_, err := eventlog.ReadToEnd(testCtx(t), e.cfg, e.cfg.Topics().Channels, eventlog.ReadRange{}, func(rec *kgo.Record) {
		if _, ev, err := domain.Decode(rec.Value); err == nil {
			if m, ok := ev.(domain.MessageSent); ok && m.MessageID == id {
				n++
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustSend(t *testing.T, s *Service, ch domain.ChannelID, clientMsgID, text string) domain.MessageID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := s.Send(ctx, ann, "phone", ch, clientMsgID, text, nil)
	if err != nil {
		t.Fatalf("send %s: %v", clientMsgID, err)
	}
	return id
}

type result struct {
	id  domain.MessageID
	err error
}

func goSend(s *Service, ch domain.ChannelID, clientMsgID, text string) <-chan result {
	out := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		id, err := s.Send(ctx, ann, "phone", ch, clientMsgID, text, nil)
		out <- result{id, err}
	}()
	return out
}

// TestResend: a resend, on the same node or another, is answered with the
// first id, and the message is in the log once; another client message id
// is another message.
func TestResend(t *testing.T) {
	eachLog(t, func(t *testing.T, e *env) {
		e.decide(t, e.st)
		a := e.node(t, 1)
		id := mustSend(t, a, ch1, "c1", "hi")
		for _, s := range []*Service{a, e.node(t, 2)} {
			if got := mustSend(t, s, ch1, "c1", "hi"); got != id {
				t.Fatalf("resend: id %d, want the first %d", got, id)
			}
		}
		if n := e.copies(t, id); n != 1 {
			t.Fatalf("%d copies of message %d in the log, want 1", n, id)
		}
		if other := mustSend(t, a, ch1, "c2", "hi"); other == id || e.copies(t, other) != 1 {
			t.Fatalf("another client message id: id %d (first %d), %d copies", other, id, e.copies(t, other))
		}
	})
}

// TestConcurrentSends: two gateways given the same send many times at
// once get one message, and every attempt is acknowledged with its id.
func TestConcurrentSends(t *testing.T) {
	eachLog(t, func(t *testing.T, e *env) {
		nodes := []*Service{e.node(t, 1), e.node(t, 2)}
		// The processor starts after every attempt is in the log: they are
		// decided together, in one batch, the first in the log winning.
		var outs []<-chan result
		const n = 8
		for i := range n {
			outs = append(outs, goSend(nodes[i%2], ch1, "c1", "hi"))
		}
		waitRequests(t, e, n)
		e.decide(t, e.st)
		var id domain.MessageID
		for i, out := range outs {
			r := <-out
			if r.err != nil || (id != 0 && r.id != id) {
				t.Fatalf("attempt %d: id %d, %v; want one id for all (%d)", i, r.id, r.err, id)
			}
			id = r.id
		}
		if n := e.copies(t, id); n != 1 {
			t.Fatalf("%d copies of message %d in the log, want 1", n, id)
		}
	})
}

// waitRequests waits until the sends topic holds n requests.
func waitRequests(t *testing.T, e *env, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := 0
		_, err := eventlog.ReadToEnd(testCtx(t), e.cfg, e.cfg.Topics().Sends, eventlog.ReadRange{}, func(*kgo.Record) { got++ })
		if err != nil {
			t.Fatal(err)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests in the sends topic, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestResendOfAnUnansweredSend: a send that got no answer in time (the
// processor was down) fails with unavailable; its request stays in the
// log. A resend on another node is answered with the first request's
// id, and the message is in the log once: the log's first request decides.
func TestResendOfAnUnansweredSend(t *testing.T) {
	eachLog(t, func(t *testing.T, e *env) {
		a, b := e.node(t, 1), e.node(t, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := a.Send(ctx, ann, "phone", ch1, "c1", "hi", nil)
		cancel()
		if domain.CodeOf(err) != domain.CodeUnavailable {
			t.Fatalf("a send nobody answers: %v, want code %s", err, domain.CodeUnavailable)
		}
		var first domain.SendRequested
		_, err = eventlog.ReadToEnd(testCtx(t), e.cfg, e.cfg.Topics().Sends, eventlog.ReadRange{}, func(rec *kgo.Record) {
			if _, ev, err := domain.Decode(rec.Value); err == nil {
				first = ev.(domain.SendRequested)
			}
		})
		if err != nil || first.MessageID == 0 {
			t.Fatalf("the first request: %+v, %v", first, err)
		}
		e.decide(t, e.st)
		if got := mustSend(t, b, ch1, "c1", "hi"); got != first.MessageID {
			t.Fatalf("resend: id %d, want the first request's %d", got, first.MessageID)
		}
		if n := e.copies(t, first.MessageID); n != 1 {
			t.Fatalf("%d copies of message %d in the log, want 1", n, first.MessageID)
		}
	})
}

// TestProcessorRestarts: decisions outlive the processor: a resend after
// it restarts is answered with the first id, and nothing is appended.
func TestProcessorRestarts(t *testing.T) {
	eachLog(t, func(t *testing.T, e *env) {
		stop := e.decide(t, e.st)
		a := e.node(t, 1)
		id := mustSend(t, a, ch1, "c1", "hi")
		stop()
		e.decide(t, e.st)
		if got := mustSend(t, a, ch1, "c1", "hi"); got != id {
			t.Fatalf("resend after a restart: id %d, want %d", got, id)
		}
		if n := e.copies(t, id); n != 1 {
			t.Fatalf("%d copies of message %d in the log, want 1", n, id)
		}
	})
}

// failingFlush is the store, whose first save of decisions is written and
// then reported failed: the transaction aborts with the decisions stored.
type failingFlush struct {
	*pebblestore.Store
	failed atomic.Bool
}

func (f *failingFlush) Apply(ctx context.Context, b store.Batch) error {
	if err := f.Store.Apply(ctx, b); err != nil {
		return err
	}
	if len(b.Decisions) > 0 && f.failed.CompareAndSwap(false, true) {
		return errors.New("written, but the transaction will not commit")
	}
	return nil
}

// TestAbortAfterTheDecisionIsStored: a batch whose decisions reached the
// store but whose transaction did not commit is processed again, and the
// message is appended then: the acknowledged id is in the log, once.
func TestAbortAfterTheDecisionIsStored(t *testing.T) {
	eachLog(t, func(t *testing.T, e *env) {
		st := &failingFlush{Store: e.st}
		e.decide(t, st)
		id := mustSend(t, e.node(t, 1), ch1, "c1", "hi")
		if !st.failed.Load() {
			t.Fatal("no batch was aborted")
		}
		if n := e.copies(t, id); n != 1 {
			t.Fatalf("%d copies of the acknowledged message %d in the log, want 1", n, id)
		}
	})
}

// TestStoreLosesDecisions: a store that loses the decisions of committed
// batches (a one-node Cassandra killed -9) gets them back from the log:
// with no input, by the running processor on its own, and a resend of a
// lost key is answered with the first id, the message in the log once.
func TestStoreLosesDecisions(t *testing.T) {
	eachLog(t, func(t *testing.T, e *env) {
		st := sendstest.New()
		e.decide(t, st)
		a := e.node(t, 1)
		mustSend(t, a, ch1, "c1", "hi")
		before := st.Snapshot()
		id := mustSend(t, a, ch1, "c2", "yo")
		k := store.SendKey{SenderID: ann, ClientMsgID: "c2"}
		decided := st.Decision(k)
		if decided.MessageID != id {
			t.Fatalf("the decision of c2: %+v, want message %d", decided, id)
		}
		st.Lose(before)
		deadline := time.Now().Add(time.Minute)
		for st.Decision(k) != decided {
			if time.Now().After(deadline) {
				t.Fatalf("the lost decision of c2 is not back after a minute: %+v", st.Decision(k))
			}
			time.Sleep(20 * time.Millisecond)
		}
		st.Lose(before)
		if got := mustSend(t, e.node(t, 2), ch1, "c2", "yo"); got != id {
			t.Fatalf("a resend of a key the store lost: id %d, want the first %d", got, id)
		}
		if n := e.copies(t, id); n != 1 {
			t.Fatalf("%d copies of message %d in the log, want 1", n, id)
		}
	})
}

// TestSendPastItsDeadline: a send whose context has ended, whichever step
// it reached, fails with "unavailable" (the client resends), not with an
// internal error.
func TestSendPastItsDeadline(t *testing.T) {
	eachLog(t, func(t *testing.T, e *env) {
		e.decide(t, e.st)
		a := e.node(t, 1)
		expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
		defer cancel()
		canceled, cancel2 := context.WithCancel(context.Background())
		cancel2()
		for name, ctx := range map[string]context.Context{"past its deadline": expired, "canceled": canceled} {
			if _, err := a.Send(ctx, ann, "phone", ch1, "c1", "hi", nil); domain.CodeOf(err) != domain.CodeUnavailable {
				t.Errorf("a send %s: %v, want code %s", name, err, domain.CodeUnavailable)
			}
		}
		if id := mustSend(t, a, ch1, "c1", "hi"); e.copies(t, id) != 1 {
			t.Fatalf("the resend: %d copies of message %d in the log, want 1", e.copies(t, id), id)
		}
	})
}

// TestResendConflicts: the same client message id with another text or
// channel is refused, on any node, and the first message stands.
func TestResendConflicts(t *testing.T) {
	eachLog(t, func(t *testing.T, e *env) {
		e.decide(t, e.st)
		a := e.node(t, 1)
		first := mustSend(t, a, ch1, "c1", "hi")
		for _, tc := range []struct {
			name string
			ch   domain.ChannelID
			text string
		}{
			{"another text", ch1, "hi!"},
			{"another channel", ch2, "hi"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, s := range []*Service{a, e.node(t, 2)} {
					_, err := s.Send(testCtx(t), ann, "phone", tc.ch, "c1", tc.text, nil)
					if domain.CodeOf(err) != domain.CodeConflict {
						t.Fatalf("got %v, want code %s", err, domain.CodeConflict)
					}
				}
			})
		}
		if got := mustSend(t, a, ch1, "c1", "hi"); got != first {
			t.Fatalf("resend with the same text: id %d, want %d", got, first)
		}
		if n := e.copies(t, first); n != 1 {
			t.Fatalf("%d copies of message %d in the log, want 1", n, first)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	topics := eventlog.NewTopics("chat", 1, 1)
	r := &replies.Reader{}
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Topics: topics, Replies: r}, true},
		{Config{Topics: topics}, false},
		{Config{Replies: r}, false},
	} {
		cfg, err := tc.cfg.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
}
