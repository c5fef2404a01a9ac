package verify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/presence"
)

// TestVerifyPresence runs the real presence projection over a session
// topic (logins, a heartbeat, clock ticks that take ann offline), then
// changes its output topic on purpose, and holds verify to naming each
// change; on the output as written, and after each change is undone, it
// agrees. Before, presence could not be verified at all.
func TestVerifyPresence(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := ensureTopics(t, ctx, eventlog.Config{Brokers: embeddedBrokers(t), Prefix: "p", Partitions: 2})
	topic := cfg.Topics().Sessions
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	add := func(partition int32, key string, at time.Duration, ev domain.Event) {
		r, err := eventlog.Record(topic, key, ev, domain.Meta{EventID: string(rune('a' + len(recs))), Time: t0.Add(at)})
		if err != nil {
			t.Fatal(err)
		}
		r.Partition = partition
		recs = append(recs, r)
	}
	add(0, "ann", 0, domain.DeviceLoggedIn{UserID: ann, DeviceID: "phone"})
	add(1, "cat", time.Second, domain.DeviceLoggedIn{UserID: cat, DeviceID: "phone"})
	add(0, "ann", 5*time.Second, domain.DeviceHeartbeat{UserID: ann, DeviceID: "phone"})
	add(1, "", 10*time.Second, domain.ClockTicked{Partition: 1})
	add(0, "", 40*time.Second, domain.ClockTicked{Partition: 0}) // ann's window (30 s) has passed
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	pres, err := presence.New(presence.Config{Log: cfg, Tick: -1})
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- pres.Run(pctx) }()
	defer func() { stop(); <-done }()
	group := cfg.Group(eventlog.Epoched(presence.Name, 1))
	for {
		pos, err := committed(ctx, cfg, group, topic)
		if err != nil {
			t.Fatal(err)
		}
		if pos[0] == 3 && pos[1] == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the presence projection committed %v, want partition 0 at 3 and 1 at 2", pos)
		case <-time.After(50 * time.Millisecond):
		}
	}

	out := cfg.Topics().Presence
	// Keyed as the projection keys them: a record replaces the user's.
	pcl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer pcl.Close()
	write := func(t *testing.T, key string, ch *domain.PresenceChange) {
		t.Helper()
		r := &kgo.Record{Topic: out, Key: []byte(key)}
		if ch != nil {
			if r, err = eventlog.Record(out, key, domain.PresenceChanged(*ch), domain.Meta{EventID: "x", Time: ch.At}); err != nil {
				t.Fatal(err)
			}
		}
		if err := pcl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	annOffline := domain.PresenceChange{UserID: ann, Online: false, LastActiveAt: t0.Add(5 * time.Second), At: t0.Add(40 * time.Second)}
	check := func(t *testing.T, rules Rules, has ...string) {
		t.Helper()
		rep, err := Run(ctx, cfg, nil, presence.Name, rules)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Entities < 2 || rep.Events != int64(len(recs)) || rep.Partitions != 2 {
			t.Errorf("%s: compared %d users, %d events, %d partitions; want ann and cat, %d, 2", rep.Summary(), rep.Entities, rep.Events, rep.Partitions, len(recs))
		}
		err = rep.Err()
		if len(has) == 0 {
			if err != nil {
				t.Fatalf("%s: %v", rep.Summary(), err)
			}
			return
		}
		if !errors.Is(err, ErrDisagree) {
			t.Fatalf("%s: got %v, want a disagreement", rep.Summary(), err)
		}
		for _, s := range has {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%v: does not say %q", err, s)
			}
		}
	}
	rules := Rules{Limits: domain.DefaultLimits()}
	t.Run("as written", func(t *testing.T) { check(t, rules) })
	t.Run("another window", func(t *testing.T) {
		check(t, Rules{PresenceWindow: time.Minute}, "user ann", "the log says online")
	})
	t.Run("a change the log does not make", func(t *testing.T) {
		wrong := annOffline
		wrong.Online = true
		write(t, "ann", &wrong)
		check(t, rules, "user ann: the log says offline at", "the presence topic online")
		write(t, "ann", &annOffline)
		check(t, rules)
	})
	t.Run("a user the log never names", func(t *testing.T) {
		write(t, "dan", &domain.PresenceChange{UserID: "dan", Online: true, LastActiveAt: t0, At: t0})
		check(t, rules, "user dan: the log says no change", "the presence topic online")
		write(t, "dan", nil)
		check(t, rules)
	})
	t.Run("a change missing", func(t *testing.T) {
		write(t, "cat", nil)
		check(t, rules, "user cat: the log says online", "the presence topic no change")
	})
	t.Run("nothing committed", func(t *testing.T) {
		// A deployment whose presence projection has not run: its log
		// holds a login, its group no offsets.
		other := ensureTopics(t, ctx, eventlog.Config{Brokers: cfg.Brokers, Prefix: "q", Partitions: 2})
		r, err := eventlog.Record(other.Topics().Sessions, "ann", domain.DeviceLoggedIn{UserID: ann, DeviceID: "phone"}, domain.Meta{EventID: "q", Time: t0})
		if err != nil {
			t.Fatal(err)
		}
		if err := pcl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		rep, err := Run(ctx, other, nil, presence.Name, rules)
		if err != nil {
			t.Fatal(err)
		}
		if err := rep.Err(); !errors.Is(err, ErrComparedNothing) {
			t.Fatalf("%s: got %v, want compared nothing", rep.Summary(), err)
		}
	})
}
