package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/inbox"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// fixture is a log on kfake, in inbox epoch 2, and its records read back.
type fixture struct {
	cfg      eventlog.Config
	channels map[int32][]*kgo.Record
	inbox    map[int32][]*kgo.Record
}

const (
	ann, bob, cat = domain.UserID("ann"), domain.UserID("bob"), domain.UserID("cat")
	group, direct = domain.ChannelID("g"), domain.ChannelID("d")
)

// embeddedBrokers starts an embedded broker for the test's length and
// returns its addresses.
func embeddedBrokers(t *testing.T) []string {
	t.Helper()
	emb, err := eventlog.StartEmbedded("", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	return emb.Addrs()
}

// ensureTopics makes cfg's topics and returns cfg.
func ensureTopics(t *testing.T, ctx context.Context, cfg eventlog.Config) eventlog.Config {
	t.Helper()
	if err := eventlog.EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newFixture writes channel g (ann and bob, partition 0) and channel d
// (ann and cat, partition 1) with their messages, one a resend of the same
// message id, and the inbox entries of epoch 2 that the fan-out would
// write: ann's and bob's in partition 0, cat's in partition 1, and a
// second copy of one of bob's entries.
func newFixture(t *testing.T, ctx context.Context) fixture {
	t.Helper()
	cfg := ensureTopics(t, ctx, eventlog.Config{Brokers: embeddedBrokers(t), Prefix: "v", Partitions: 2, InboxEpoch: 2})
	topics := cfg.Topics()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	add := func(topic string, partition int32, key string, ev domain.Event) {
		r, err := eventlog.Record(topic, key, ev, domain.Meta{EventID: fmt.Sprint(len(recs)), Time: t0.Add(time.Duration(len(recs)) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		r.Partition = partition
		recs = append(recs, r)
	}
	add(topics.Channels, 0, string(group), domain.ChannelCreated{ChannelID: group, Kind: domain.KindGroup, CreatorID: ann, Members: []domain.UserID{ann, bob}})
	add(topics.Channels, 1, string(direct), domain.ChannelCreated{ChannelID: direct, Kind: domain.KindDirect, CreatorID: ann, Members: []domain.UserID{ann, cat}})
	type sent struct {
		partition int32
		m         domain.MessageSent
	}
	var msgs []sent
	for i := range 6 {
		ch, from, p := group, []domain.UserID{ann, bob}[i%2], int32(0)
		if i%3 == 2 {
			ch, from, p = direct, cat, 1
		}
		m := domain.MessageSent{ChannelID: ch, MessageID: domain.MessageID(100 + i), SenderID: from, DeviceID: "phone", ClientMsgID: fmt.Sprint(i), Text: fmt.Sprint("text ", i)}
		add(topics.Channels, p, string(ch), m)
		msgs = append(msgs, sent{p, m})
	}
	add(topics.Channels, 0, string(group), msgs[1].m) // a resend that got appended twice: history drops it
	for _, s := range msgs {
		members := []domain.UserID{ann, bob}
		if s.m.ChannelID == direct {
			members = []domain.UserID{ann, cat}
		}
		for _, u := range members {
			p := int32(0)
			if u == cat {
				p = 1
			}
			add(topics.Inbox, p, string(u), domain.InboxMessage{UserID: u, ChannelID: s.m.ChannelID, MessageID: s.m.MessageID,
				SenderID: s.m.SenderID, Text: s.m.Text, SentAt: t0, ChannelPartition: s.partition})
		}
	}
	// A second copy of bob's entry of message 101 at a later offset.
	add(topics.Inbox, 0, string(bob), domain.InboxMessage{UserID: bob, ChannelID: group, MessageID: 101, SenderID: bob, Text: "text 1", SentAt: t0})

	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, r := range recs {
		count[r.Topic]++
	}
	return fixture{
		cfg:      cfg,
		channels: readAll(t, ctx, cfg, topics.Channels, count[topics.Channels]),
		inbox:    readAll(t, ctx, cfg, topics.Inbox, count[topics.Inbox]),
	}
}

// readAll reads n records of topic, by partition.
func readAll(t *testing.T, ctx context.Context, cfg eventlog.Config, topic string, n int) map[int32][]*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := map[int32][]*kgo.Record{}
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s: %v", got, n, topic, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			out[r.Partition] = append(out[r.Partition], r)
			got++
		})
	}
	return out
}

// count is the number of records of a topic.
func count(recs map[int32][]*kgo.Record) int64 {
	var n int64
	for _, rs := range recs {
		n += int64(len(rs))
	}
	return n
}

// offsetOf finds the offset of the first inbox record of (u, message id),
// or of the first message.sent of id when u is "".
func offsetOf(t *testing.T, recs map[int32][]*kgo.Record, u domain.UserID, id domain.MessageID) int64 {
	t.Helper()
	for _, p := range []int32{0, 1} {
		for _, r := range recs[p] {
			_, ev, err := domain.Decode(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			switch ev := ev.(type) {
			case domain.InboxMessage:
				if ev.UserID == u && ev.MessageID == id {
					return r.Offset
				}
			case domain.MessageSent:
				if u == "" && ev.MessageID == id {
					return r.Offset
				}
			}
		}
	}
	t.Fatalf("no record of %q %d", u, id)
	return 0
}

// build runs the real history and inbox projections over the fixture's
// records into a new Pebble store, one batch per partition, letting mutate
// change each batch before it is applied.
func (f fixture) build(t *testing.T, ctx context.Context, mutate func(*store.Batch)) *pebblestore.Store {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{CacheSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	run := func(name string, h interface {
		Handle(context.Context, int32, []*kgo.Record, *store.Batch) error
	}, recs map[int32][]*kgo.Record) {
		for _, p := range []int32{0, 1} {
			rs := recs[p]
			b := store.Batch{Projection: name, Positions: map[int32]int64{p: rs[len(rs)-1].Offset + 1}}
			if err := h.Handle(ctx, p, rs, &b); err != nil {
				t.Fatal(err)
			}
			mutate(&b)
			if err := st.Apply(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	run(history.Name, history.New(st, domain.DefaultLimits(), nil), f.channels)
	run(eventlog.Epoched(inbox.Name, 2), inbox.New(st, 2, nil, nil), f.inbox)
	return st
}

// want is what verifying one projection must say: no error, or err with
// every string of has in its message.
type want struct {
	err error
	has []string
}

// TestVerify builds the store with the real projections, changes it on
// purpose (an entry or a message changed, missing, added; positions under
// the name verify read before inbox epochs), and holds verify to catching
// each change, by name and position, while it agrees on the store as the
// projections built it, with the number of entities and events it
// compared.
func TestVerify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t, ctx)
	bobSecond := offsetOf(t, f.inbox, bob, 103) // bob's entry of message 103
	annFirst := offsetOf(t, f.inbox, ann, 100)  // in bob's partition, never bob's
	sent4 := offsetOf(t, f.channels, "", 104)   // message 104 in channel g
	created := f.channels[0][0].Offset          // channel.created of g
	pos := func(o int64) string { return fmt.Sprintf("user bob, position %d (partition 0)", o) }
	at := func(o int64) string { return fmt.Sprintf("offset %d", o) }
	ok := want{}

	cases := []struct {
		name    string
		mutate  func(*store.Batch)
		history want
		inbox   want
	}{
		{"as built", func(*store.Batch) {}, ok, ok},
		{"inbox entry changed", func(b *store.Batch) {
			for i, e := range b.Inbox {
				if e.UserID == bob && e.Offset == bobSecond {
					b.Inbox[i].Message.Text = "tampered"
				}
			}
		}, ok, want{ErrDisagree, []string{"inbox epoch 2", pos(bobSecond), "differs", "tampered"}}},
		{"inbox entry missing", func(b *store.Batch) {
			b.Inbox = slices.DeleteFunc(b.Inbox, func(e store.InboxEntry) bool { return e.UserID == bob && e.Offset == bobSecond })
		}, ok, want{ErrDisagree, []string{pos(bobSecond), "message 103 is missing from the store"}}},
		{"inbox entry added", func(b *store.Batch) {
			if b.Projection == "inbox.e2" && b.Positions[0] > 0 {
				b.Inbox = append(b.Inbox, store.InboxEntry{UserID: bob, Epoch: 2, Partition: 0, Offset: annFirst,
					Message: domain.InboxMessage{UserID: bob, ChannelID: group, MessageID: 999, SenderID: ann, Text: "forged"}})
			}
		}, ok, want{ErrDisagree, []string{pos(annFirst), "message 999 is in the store but not in the log"}}},
		{"message changed", func(b *store.Batch) {
			for i, m := range b.Messages {
				if m.MessageID == 104 {
					b.Messages[i].Text = "tampered"
				}
			}
		}, want{ErrDisagree, []string{"channel g: message 104 at " + at(sent4) + " differs", "tampered"}}, ok},
		{"message missing", func(b *store.Batch) {
			b.Messages = slices.DeleteFunc(b.Messages, func(m store.Message) bool { return m.MessageID == 104 })
		}, want{ErrDisagree, []string{"channel g: message 104 at " + at(sent4) + " is missing from the store"}}, ok},
		{"message added", func(b *store.Batch) {
			if b.Projection == history.Name && b.Positions[0] > 0 {
				b.Messages = append(b.Messages, store.Message{ChannelID: group, Offset: created, MessageID: 999, SenderID: ann, Text: "forged"})
			}
		}, want{ErrDisagree, []string{"channel g: message 999 at " + at(created) + " is in the store but not in the log"}}, ok},
		// Issue 11: the inbox's positions under the name "inbox", as
		// before epochs, where verify once looked and found none.
		{"inbox positions under another name", func(b *store.Batch) {
			if b.Projection == "inbox.e2" {
				b.Projection = inbox.Name
			}
		}, ok, want{ErrComparedNothing, []string{`no positions under "inbox.e2"`, "v.inbox.e2 holds 13 offsets"}}},
		{"nothing applied yet", func(b *store.Batch) { b.Positions = nil },
			want{ErrComparedNothing, []string{`no positions under "history"`}},
			want{ErrComparedNothing, []string{`no positions under "inbox.e2"`}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := f.build(t, ctx, c.mutate)
			for _, p := range []struct {
				name     string
				want     want
				entities int
				events   int64
			}{
				{history.Name, c.history, 2, count(f.channels)},
				{inbox.Name, c.inbox, 3, count(f.inbox)},
			} {
				rep, err := Run(ctx, f.cfg, st, p.name, Rules{Limits: domain.DefaultLimits()})
				if err != nil {
					t.Fatalf("%s: %v", p.name, err)
				}
				t.Logf("%s\n%v", rep.Summary(), rep.Err())
				got := rep.Err()
				switch {
				case p.want.err == nil && got != nil:
					t.Errorf("%s: %v", p.name, got)
				case p.want.err != nil && !errors.Is(got, p.want.err):
					t.Errorf("%s: got %v, want %v", p.name, got, p.want.err)
				case rep.Agree != (got == nil):
					t.Errorf("%s: agree %v with error %v", p.name, rep.Agree, got)
				}
				for _, s := range p.want.has {
					if got == nil || !strings.Contains(got.Error(), s) {
						t.Errorf("%s: %v\ndoes not say %q", p.name, got, s)
					}
				}
				if rep.LogRecords != p.events {
					t.Errorf("%s: log records %d, want %d", p.name, rep.LogRecords, p.events)
				}
				if errors.Is(p.want.err, ErrComparedNothing) {
					if rep.Entities != 0 || rep.Events != 0 {
						t.Errorf("%s: compared %d entities and %d events, want none", p.name, rep.Entities, rep.Events)
					}
					continue
				}
				if rep.Entities != p.entities || rep.Events != p.events {
					t.Errorf("%s: compared %d entities and %d events, want %d and %d", p.name, rep.Entities, rep.Events, p.entities, p.events)
				}
			}
			if c.name == "as built" {
				rep, _ := Run(ctx, f.cfg, st, inbox.Name, Rules{Limits: domain.DefaultLimits()})
				if s := rep.Summary(); rep.Epoch != 2 || !strings.Contains(s, "verify inbox epoch 2: compared 3 users and 13 events of v.inbox.e2 (13 offsets in the topic) up to the positions under inbox.e2") {
					t.Errorf("summary: %s", s)
				}
			}
		})
	}
}

// TestVerifyEmptyLog: with nothing in the log, there is nothing to
// compare, and that is no failure; an unknown projection is a bad request.
func TestVerifyEmptyLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := ensureTopics(t, ctx, eventlog.Config{Brokers: embeddedBrokers(t), Prefix: "empty", Partitions: 2})
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{CacheSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, p := range Projections {
		rep, err := Run(ctx, cfg, st, p, Rules{Limits: domain.DefaultLimits()})
		if err != nil || rep.Err() != nil || !rep.Agree || rep.LogRecords != 0 {
			t.Errorf("%s on an empty log: %+v, %v, %v", p, rep, err, rep.Err())
		}
	}
	if _, err := Run(ctx, cfg, st, "push", Rules{Limits: domain.DefaultLimits()}); domain.CodeOf(err) != domain.CodeBadRequest {
		t.Errorf("verify push: %v, want bad_request", err)
	}
}
