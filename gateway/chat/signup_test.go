package chat

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/auth"
	"github.com/evchat/evchat/gateway/replies"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// TestSignUpLogDown: a sign-up while the log takes no record is answered
// unavailable and leaves no account behind (the name is free, nothing is
// in the log); the same sign-up once the log is back succeeds, with
// exactly one user.registered for the account. Before: the account was
// made in the store, user.registered never reached the log, and the
// sign-up was answered with success.
func TestSignUpLogDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var down atomic.Bool
	// Down, every produce is answered NOT_ENOUGH_REPLICAS: the log takes
	// no record (acks=all), and the producer retries until its delivery
	// timeout. (A closed connection would leave the batch in flight, which
	// an idempotent producer never gives up on.)
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	lcfg := eventlog.Config{Brokers: c.ListenAddrs(), Prefix: "chat", Partitions: 1, DeliveryTimeout: 2 * time.Second}
	s, ps := newLoggedService(t, ctx, lcfg)
	registered := func() []domain.UserRegistered {
		t.Helper()
		var out []domain.UserRegistered
		_, err := eventlog.ReadToEnd(ctx, lcfg, lcfg.Topics().Sessions, eventlog.ReadRange{}, func(r *kgo.Record) {
			if _, ev, err := domain.Decode(r.Value); err == nil {
				if u, ok := ev.(domain.UserRegistered); ok {
					out = append(out, u)
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	down.Store(true)
	if _, err := s.SignUp(ctx, "Ann", "correct horse"); domain.CodeOf(err) != domain.CodeUnavailable {
		t.Fatalf("sign-up with the log down: %v, want unavailable", err)
	}
	if u, err := ps.UserByName(ctx, "ann"); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("after the failed sign-up the store holds %+v (%v): a half-made account", u, err)
	}

	down.Store(false)
	u, err := s.SignUp(ctx, "Ann", "correct horse")
	if err != nil {
		t.Fatalf("the same sign-up once the log is back: %v", err)
	}
	got, err := ps.UserByName(ctx, "ann")
	if err != nil || got.ID != u.ID {
		t.Fatalf("the account: %+v %v, want id %s", got, err, u.ID)
	}
	if regs := registered(); fmt.Sprint(regs) != fmt.Sprint([]domain.UserRegistered{{UserID: u.ID, Name: "ann"}}) {
		t.Fatalf("user.registered in the log: %+v, want the one of %s", regs, u.ID)
	}
}

// TestLoginLegacyName: an account made before names were canonical, stored
// under "Ann" as typed then, still logs in with "Ann" (the canonical "ann"
// finds nothing), and a wrong password is still refused. Before, it could
// not log in at all.
func TestLoginLegacyName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	emb, err := eventlog.StartEmbedded("", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	s, ps := newLoggedService(t, ctx, eventlog.Config{Brokers: emb.Addrs(), Prefix: "chat", Partitions: 1})
	hash, err := auth.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.CreateUser(ctx, store.User{ID: "7", Name: "Ann", PasswordHash: hash, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cl, _, err := s.Login(ctx, "Ann", "correct horse", "phone")
	if err != nil || cl.UserID != "7" {
		t.Fatalf("legacy account's login: %+v %v, want user 7", cl, err)
	}
	if _, _, err := s.Login(ctx, "Ann", "wrong", "phone"); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("wrong password: %v, want unauthorized", err)
	}
}

// newLoggedService returns a Service on a real appender to the log of lcfg
// (its topics made) and a Pebble store of its own.
func newLoggedService(t *testing.T, ctx context.Context, lcfg eventlog.Config) (*Service, *pebblestore.Store) {
	t.Helper()
	if err := eventlog.EnsureTopics(ctx, lcfg); err != nil {
		t.Fatal(err)
	}
	app, err := eventlog.NewAppender(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	ps, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	tokens, err := auth.NewTokens([]byte("0123456789abcdef0123456789abcdef"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// No sends here: a reader that never runs.
	s, err := New(Config{Topics: lcfg.Topics(), Replies: &replies.Reader{}}, ps, app, &counter{}, tokens)
	if err != nil {
		t.Fatal(err)
	}
	return s, ps
}
