package ws_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/ws"
	"github.com/evchat/evchat/projections/eventlog"
)

// closed records the devices a Logouts tail closed.
type closed struct {
	mu   sync.Mutex
	devs []string
	more chan struct{}
}

func (c *closed) CloseDevice(u domain.UserID, d domain.DeviceID, why string) {
	c.mu.Lock()
	c.devs = append(c.devs, fmt.Sprintf("%s/%s %s", u, d, why))
	c.mu.Unlock()
	c.more <- struct{}{}
}

// TestLogouts: the tail closes the devices that log out after it started,
// on any partition, and nothing for the logouts before its start or for
// the session topic's other events.
func TestLogouts(t *testing.T) {
	emb, err := eventlog.StartEmbedded("", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	lcfg := eventlog.Config{Brokers: emb.Addrs(), Partitions: 4}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := eventlog.EnsureTopics(ctx, lcfg); err != nil {
		t.Fatal(err)
	}
	app, err := eventlog.NewAppender(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	topic := lcfg.Topics().Sessions
	n := 0
	appendEv := func(u domain.UserID, ev domain.Event) {
		t.Helper()
		n++
		if _, err := app.Append(ctx, topic, string(u), ev, domain.Meta{EventID: fmt.Sprint("e", n), Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	appendEv("early", domain.DeviceLoggedOut{UserID: "early", DeviceID: "phone"})

	got := &closed{more: make(chan struct{}, 100)}
	tail, err := ws.NewLogouts(ctx, lcfg, got, nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- tail.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	var want []string
	for i := range 8 { // users on every partition
		u := domain.UserID(fmt.Sprint("u", i))
		appendEv(u, domain.DeviceLoggedIn{UserID: u, DeviceID: "laptop"})
		appendEv(u, domain.DeviceHeartbeat{UserID: u, DeviceID: "laptop"})
		appendEv(u, domain.DeviceAcked{UserID: u, DeviceID: "laptop", Epoch: 1, Position: 3})
		appendEv(u, domain.DeviceLoggedOut{UserID: u, DeviceID: "laptop"})
		want = append(want, fmt.Sprintf("%s/laptop %s", u, ws.LoggedOutReason))
	}
	for range want {
		select {
		case <-got.more:
		case <-ctx.Done():
			t.Fatalf("closed %v, want %v", got.devs, want)
		}
	}
	// One more logout, after the others in its partition: once it is
	// closed, no other close is still on its way from that partition.
	appendEv("u0", domain.DeviceLoggedOut{UserID: "u0", DeviceID: "last"})
	select {
	case <-got.more:
	case <-ctx.Done():
		t.Fatal("the last logout was not closed")
	}
	want = append(want, "u0/last "+ws.LoggedOutReason)
	got.mu.Lock()
	defer got.mu.Unlock()
	slices.Sort(got.devs)
	slices.Sort(want)
	if !slices.Equal(got.devs, want) {
		t.Fatalf("closed %v, want %v (and not the logout before the tail started)", got.devs, want)
	}
}
