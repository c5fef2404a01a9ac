package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/fanout"
)

// TestVerifyFanout runs the real fan-out over a channel topic (a group
// that gains cat and loses bob between messages, a message of bob's after
// his removal), then holds verify to what the inbox topic must hold: it
// agrees on the topic as written, and names the user and message of an
// entry twice, an entry missing (the fan-out ran with a group size limit
// that refused cat) and an entry of a message the log never sends the
// user. Before, the fan-out's output could not be verified at all.
func TestVerifyFanout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	brokers := embeddedBrokers(t)
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	events := []domain.Event{
		domain.ChannelCreated{ChannelID: group, Kind: domain.KindGroup, CreatorID: ann, Members: []domain.UserID{ann, bob}},
		domain.MessageSent{ChannelID: group, MessageID: 1, SenderID: ann, ClientMsgID: "a1", Text: "one"},
		domain.MemberAdded{ChannelID: group, UserID: cat, ByID: ann},
		domain.MessageSent{ChannelID: group, MessageID: 2, SenderID: bob, ClientMsgID: "b1", Text: "two"},
		domain.MemberRemoved{ChannelID: group, UserID: bob, ByID: ann},
		domain.MessageSent{ChannelID: group, MessageID: 3, SenderID: ann, ClientMsgID: "a2", Text: "three"},
		domain.MessageSent{ChannelID: group, MessageID: 4, SenderID: bob, ClientMsgID: "b2", Text: "not admitted"},
	}
	// build writes the events into a deployment of its own (prefix) and
	// runs the fan-out over them until it has committed them all.
	build := func(t *testing.T, prefix string, limits domain.Limits, run bool) (eventlog.Config, *kgo.Client) {
		cfg := ensureTopics(t, ctx, eventlog.Config{Brokers: brokers, Prefix: prefix, Partitions: 2})
		cl, err := kgo.NewClient(cfg.ClientOpts()...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		for i, ev := range events {
			r, err := eventlog.Record(cfg.Topics().Channels, string(group), ev, domain.Meta{EventID: fmt.Sprint(i), Time: t0.Add(time.Duration(i) * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if !run {
			return cfg, cl
		}
		fan, err := fanout.New(fanout.Config{Log: cfg, Limits: limits, InstanceID: "v"})
		if err != nil {
			t.Fatal(err)
		}
		fctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- fan.Run(fctx) }()
		t.Cleanup(func() { stop(); <-done })
		group := cfg.Group(eventlog.Epoched(fanout.Name, 1))
		for {
			pos, err := committed(ctx, cfg, group, cfg.Topics().Channels)
			if err != nil {
				t.Fatal(err)
			}
			var at int64
			for _, p := range pos {
				at += p
			}
			if at >= int64(len(events)) {
				return cfg, cl
			}
			select {
			case <-ctx.Done():
				t.Fatalf("the fan-out committed %v, want %d events", pos, len(events))
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	entry := func(u domain.UserID, id domain.MessageID, offset int64) domain.InboxMessage {
		return domain.InboxMessage{UserID: u, ChannelID: group, MessageID: id, SenderID: ann, SentAt: t0, ChannelOffset: offset}
	}
	appendInbox := func(t *testing.T, cfg eventlog.Config, cl *kgo.Client, m domain.InboxMessage) {
		r, err := eventlog.Record(cfg.Topics().Inbox, string(m.UserID), m, domain.Meta{EventID: "x", Time: m.SentAt})
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	rules := Rules{Limits: domain.DefaultLimits()}
	for _, tc := range []struct {
		name   string
		limits domain.Limits
		mutate func(*testing.T, eventlog.Config, *kgo.Client)
		has    []string // empty: agrees
	}{
		{"as written", rules.Limits, nil, nil},
		{"an entry twice", rules.Limits, func(t *testing.T, cfg eventlog.Config, cl *kgo.Client) {
			var first domain.InboxMessage
			if _, err := eventlog.ReadToEnd(ctx, cfg, cfg.Topics().Inbox, eventlog.ReadRange{}, func(r *kgo.Record) {
				if _, ev, err := domain.Decode(r.Value); err == nil {
					if m, ok := ev.(domain.InboxMessage); ok && m.UserID == bob && m.MessageID == 1 {
						first = m
					}
				}
			}); err != nil || first.MessageID != 1 {
				t.Fatalf("bob's entry of message 1: %+v, %v", first, err)
			}
			appendInbox(t, cfg, cl, first)
		}, []string{"user bob, message 1: 2 entries", "want one"}},
		{"entries missing", domain.Limits{MaxGroupSize: 2, MaxTextLen: 100000}, nil,
			[]string{"user cat, message 2", "missing from the inbox topic"}},
		{"an entry the log does not send", rules.Limits, func(t *testing.T, cfg eventlog.Config, cl *kgo.Client) {
			appendInbox(t, cfg, cl, entry(cat, 1, 1))
		}, []string{"user cat, message 1", "the log sends the user no such message"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, cl := build(t, strings.ReplaceAll(tc.name, " ", "-"), tc.limits, true)
			if tc.mutate != nil {
				tc.mutate(t, cfg, cl)
			}
			rep, err := Run(ctx, cfg, nil, fanout.Name, rules)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Entities != 3 || rep.Events != int64(len(events)) {
				t.Errorf("%s: compared %d users and %d events, want ann, bob, cat and %d", rep.Summary(), rep.Entities, rep.Events, len(events))
			}
			err = rep.Err()
			if len(tc.has) == 0 {
				if err != nil {
					t.Fatalf("%s: %v", rep.Summary(), err)
				}
				return
			}
			if !errors.Is(err, ErrDisagree) {
				t.Fatalf("%s: got %v, want a disagreement", rep.Summary(), err)
			}
			for _, s := range tc.has {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%v: does not say %q", err, s)
				}
			}
		})
	}
	t.Run("nothing committed", func(t *testing.T) {
		cfg, _ := build(t, "idle", rules.Limits, false)
		rep, err := Run(ctx, cfg, nil, fanout.Name, rules)
		if err != nil {
			t.Fatal(err)
		}
		if err := rep.Err(); !errors.Is(err, ErrComparedNothing) {
			t.Fatalf("%s: got %v, want compared nothing", rep.Summary(), err)
		}
	})
}
