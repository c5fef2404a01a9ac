package verify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/sends"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// TestVerifySends: before the processor ran, verify compares nothing and
// says so; once it has decided every request, verify agrees, key by key;
// a decision changed in the store, and a decided message appended a second
// time, are each a difference that names the key.
func TestVerifySends(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := ensureTopics(t, ctx, eventlog.Config{Brokers: embeddedBrokers(t), Prefix: "s", Partitions: 2})
	topics := cfg.Topics()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{CacheSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	app, err := eventlog.NewAppender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	request := func(n int, from domain.UserID, client string, ch domain.ChannelID, text string) {
		req := domain.SendRequested{ReplyTo: "node-1", MessageSent: domain.MessageSent{
			ChannelID: ch, MessageID: domain.MessageID(500 + n), SenderID: from, DeviceID: "phone", ClientMsgID: client, Text: text,
		}}
		if _, err := app.Append(ctx, topics.Sends, string(from), req, domain.Meta{EventID: string(rune('a' + n)), Time: t0.Add(time.Duration(n) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	request(0, ann, "c1", group, "hi")
	request(1, ann, "c1", group, "hi") // a resend: decided by the first
	request(2, bob, "c1", group, "yo")
	request(3, cat, "c9", direct, "hey")
	request(4, ann, "c1", direct, "hi") // a conflict: answered, nothing decided
	const requests, keys = 5, 3

	if rep, err := Run(ctx, cfg, st, sends.Name, Rules{}); err != nil || !errors.Is(rep.Err(), ErrComparedNothing) {
		t.Fatalf("before the processor ran: %+v, %v; want compared nothing", rep, err)
	}

	p, err := sends.New(sends.Config{Log: cfg}, st)
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	var rep Report
	for rep.Events < requests {
		if ctx.Err() != nil {
			t.Fatalf("the processor did not decide every request: %+v", rep)
		}
		time.Sleep(20 * time.Millisecond)
		if rep, err = Run(ctx, cfg, st, sends.Name, Rules{}); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil || rep.Entities != keys {
		t.Fatalf("after the processor: %s, %v; want %d keys agreeing", rep.Summary(), err, keys)
	}

	// A decision changed in the store.
	k := store.SendKey{SenderID: bob, ClientMsgID: "c1"}
	good, err := st.SendDecisions(ctx, []store.SendKey{k})
	if err != nil {
		t.Fatal(err)
	}
	bad := good[k]
	bad.MessageID++
	if err := st.Apply(ctx, store.Batch{Decisions: []store.SendDecision{bad}}); err != nil {
		t.Fatal(err)
	}
	expectDifference(t, ctx, cfg, st, `sender bob, client_msg_id "c1"`)
	if err := st.Apply(ctx, store.Batch{Decisions: []store.SendDecision{good[k]}}); err != nil {
		t.Fatal(err)
	}

	// A decided message in the channel topic twice.
	m := domain.MessageSent{ChannelID: direct, MessageID: 503, SenderID: cat, DeviceID: "phone", ClientMsgID: "c9", Text: "hey"}
	if _, err := app.Append(ctx, topics.Channels, string(direct), m, domain.Meta{EventID: "503", Time: t0}); err != nil {
		t.Fatal(err)
	}
	expectDifference(t, ctx, cfg, st, `sender cat, client_msg_id "c9": decided {SendKey:{SenderID:cat ClientMsgID:c9} ChannelID:d MessageID:503`)
}

func expectDifference(t *testing.T, ctx context.Context, cfg eventlog.Config, st Store, names string) {
	t.Helper()
	rep, err := Run(ctx, cfg, st, sends.Name, Rules{})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(rep.Err(), ErrDisagree) || !strings.Contains(rep.FirstDifference, names) {
		t.Fatalf("got %s: %v; want a difference naming %s", rep.Summary(), rep.Err(), names)
	}
	t.Log(rep.FirstDifference)
}
