package chat

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/projector"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// countingStore counts the channel reads of a Service.
type countingStore struct {
	*pebblestore.Store
	reads atomic.Int64
}

func (c *countingStore) Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error) {
	c.reads.Add(1)
	return c.Store.Channel(ctx, id)
}

// project runs the history projection, which stores channels and their
// members, until the test ends.
func (e *env) project(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- projector.Run(ctx, projector.Config{Name: history.Name, Topic: e.cfg.Topics().Channels, Log: e.cfg}, e.st, history.New(e.st, domain.DefaultLimits(), nil))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("history: %v", err)
		}
	})
}

// TestLeaseReadsOnce: sends to a channel read it once a lease, and every
// time without one.
func TestLeaseReadsOnce(t *testing.T) {
	eachLog(t, func(t *testing.T, e *env) {
		e.decide(t, e.st)
		for _, tc := range []struct {
			lease time.Duration
			want  int64
		}{{time.Hour, 1}, {-1, 10}} {
			st := &countingStore{Store: e.st}
			s := e.nodeWith(t, uint16(tc.want), tc.lease, st)
			for i := range 10 {
				mustSend(t, s, ch1, "lease"+time.Duration(tc.lease).String()+string(rune('a'+i)), "hi")
			}
			if got := st.reads.Load(); got != tc.want {
				t.Errorf("lease %v: 10 sends read the channel %d times, want %d", tc.lease, got, tc.want)
			}
		}
	})
}

// TestLeaseAcrossGateways: a member added through one gateway sends at once
// through another that holds the channel from before the addition (a
// refusal is decided again on a fresh read); a member removed through one
// gateway can no longer send through the other once the removal is
// answered, though that gateway read the channel, with the member in it,
// less than a lease before.
func TestLeaseAcrossGateways(t *testing.T) {
	eachLog(t, func(t *testing.T, e *env) {
		e.decide(t, e.st)
		e.project(t)
		const lease = 5 * time.Second
		const cat domain.UserID = "103"
		api, gw := e.nodeWith(t, 1, lease, e.st), e.nodeWith(t, 2, lease, e.st)
		ctx := testCtx(t)
		for _, u := range []domain.UserID{ann, bob, cat} {
			if err := e.st.CreateUser(ctx, store.User{ID: u, Name: "user" + string(u), CreatedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		g, _, err := api.CreateChannel(ctx, ann, domain.KindGroup, "g", []domain.UserID{bob})
		if err != nil {
			t.Fatal(err)
		}
		send := func(u domain.UserID, cm string) error {
			_, err := gw.Send(ctx, u, "phone", g.ID, cm, "hi", nil)
			return err
		}
		if err := send(bob, "b1"); err != nil { // gw now holds g with ann and bob
			t.Fatal(err)
		}
		if _, err := api.AddMember(ctx, ann, g.ID, cat); err != nil {
			t.Fatal(err)
		}
		if err := send(cat, "c1"); err != nil {
			t.Fatalf("a member added a moment ago was refused: %v", err)
		}
		if err := send(bob, "b2"); err != nil { // a lease begun after the addition
			t.Fatal(err)
		}
		began := time.Now()
		if _, err := api.RemoveMember(ctx, ann, g.ID, bob); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(began); took < lease {
			t.Errorf("the removal answered after %v, before the lease of %v ended", took, lease)
		}
		if err := send(bob, "b3"); domain.CodeOf(err) != domain.CodeNotMember {
			t.Fatalf("a removed member's send through the other gateway: %v, want not_member", err)
		}
	})
}
