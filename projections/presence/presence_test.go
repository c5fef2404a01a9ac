package presence

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
)

// TestReplay feeds the session topic events with chosen times (a
// controlled clock: the ticks are written by the test, the projection's
// own ticker is off), runs the projection, then runs it again from the
// beginning into the next presence epoch: the same changes, at the same
// times, in the same order.
func TestReplay(t *testing.T) {
	emb, err := eventlog.StartEmbedded("", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cfg := eventlog.Config{Brokers: emb.Addrs(), Prefix: "p", Partitions: 1}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := eventlog.EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	topics := cfg.Topics()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	type in struct {
		ev domain.Event
		at float64
	}
	tick := domain.ClockTicked{Partition: 0}
	events := []in{
		{domain.DeviceLoggedIn{UserID: "1", DeviceID: "a"}, 0},
		{domain.DeviceLoggedIn{UserID: "2", DeviceID: "a"}, 1},
		{domain.DeviceHeartbeat{UserID: "1", DeviceID: "a"}, 5},
		{tick, 20},
		{domain.DeviceLoggedIn{UserID: "1", DeviceID: "b"}, 21},  // a second device
		{domain.DeviceLoggedOut{UserID: "2", DeviceID: "a"}, 22}, // logout: offline at once
		{tick, 30},
		{domain.DeviceHeartbeat{UserID: "1", DeviceID: "b"}, 40},
		{tick, 45}, // device a expired, b alive: still online
		{domain.DeviceHeartbeat{UserID: "3", DeviceID: "a"}, 46},
		{tick, 69.9},
		{tick, 70}, // b silent since 40: offline
		{tick, 76}, // 3 silent since 46: offline
		{domain.DeviceHeartbeat{UserID: "3", DeviceID: "a"}, 80},
	}
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i, e := range events {
		r, err := eventlog.Record(topics.Sessions, userKey(e.ev), e.ev, domain.Meta{EventID: fmt.Sprint(i), Time: at(e.at)})
		if err != nil {
			t.Fatal(err)
		}
		r.Partition = 0
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"1 online at 0s", "2 online at 1s", "2 offline at 22s (last 22s)",
		"1 offline at 1m10s (last 40s)", "3 online at 46s", "3 offline at 1m16s (last 46s)", "3 online at 1m20s",
	}
	first := run(t, ctx, cfg, t0, len(want))
	if !slices.Equal(sortedByUser(first), sortedByUser(want)) {
		t.Fatalf("changes:\n%v\nwant (any interleaving of users):\n%v", first, want)
	}

	// Replay as a node rebuilds: the next epoch, with its own output topic,
	// changelog and group, from the beginning of the sessions topic.
	cfg = cfg.WithEpoch(domain.OutputPresence, 2)
	if err := eventlog.EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	second := run(t, ctx, cfg, t0, len(want))
	if !slices.Equal(first, second) {
		t.Fatalf("replay differs:\n%v\n%v", first, second)
	}
}

func userKey(ev domain.Event) string {
	switch ev := ev.(type) {
	case domain.DeviceLoggedIn:
		return string(ev.UserID)
	case domain.DeviceHeartbeat:
		return string(ev.UserID)
	case domain.DeviceLoggedOut:
		return string(ev.UserID)
	}
	return ""
}

// run runs the projection until the presence topic holds n changes and
// returns them as text.
func run(t *testing.T, ctx context.Context, cfg eventlog.Config, t0 time.Time, n int) []string {
	t.Helper()
	p, err := New(Config{Log: cfg, Window: 30 * time.Second, Tick: -1})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(rctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.ConsumeTopics(cfg.Topics().Presence), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []string
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("only %d changes: %v", len(out), out)
		}
		fs.EachRecord(func(r *kgo.Record) {
			_, ev, err := domain.Decode(r.Value)
			if err != nil {
				t.Error(err)
				return
			}
			ch := ev.(domain.PresenceChanged)
			s := fmt.Sprintf("%s online at %v", ch.UserID, ch.At.Sub(t0))
			if !ch.Online {
				s = fmt.Sprintf("%s offline at %v (last %v)", ch.UserID, ch.At.Sub(t0), ch.LastActiveAt.Sub(t0))
			}
			out = append(out, s)
		})
	}
	return out
}

// sortedByUser orders changes by user, keeping each user's order.
func sortedByUser(s []string) []string {
	out := slices.Clone(s)
	slices.SortStableFunc(out, func(a, b string) int { return int(a[0]) - int(b[0]) })
	return out
}
