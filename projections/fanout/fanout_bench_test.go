package fanout

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/txproc"
)

var sentAt = time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)

// newOut returns a txproc.Out that hands every record to produce, as
// txproc's transaction does.
func newOut(tb testing.TB, changelog string, produce func(*kgo.Record)) *txproc.Out {
	tb.Helper()
	return txproc.NewOut(changelog, produce)
}

// newSeeded returns a fan-out whose partition 0 holds group g1 of n
// members, restored as txproc restores it from the changelog, so no broker
// is needed: the seed broker is a port nothing listens on.
func newSeeded(tb testing.TB, n int) (*Projection, domain.Channel) {
	tb.Helper()
	p, err := New(Config{Log: eventlog.Config{Brokers: []string{"127.0.0.1:1"}}})
	if err != nil {
		tb.Fatal(err)
	}
	members := make([]domain.UserID, n)
	for i := range members {
		members[i] = domain.UserID(fmt.Sprint(1000 + i)) // same width: sorted as strings
	}
	c := domain.Channel{ID: "g1", Kind: domain.KindGroup, Name: "team", CreatorID: members[0], Members: members, CreatedAt: sentAt}
	v, err := json.Marshal(c)
	if err != nil {
		tb.Fatal(err)
	}
	p.Restore(0, []byte(c.ID), v)
	if !reflect.DeepEqual(p.state[0][c.ID], c) {
		tb.Fatalf("restored %+v; want %+v", p.state[0][c.ID], c)
	}
	return p, c
}

// record returns ev as the fan-out reads it from the channel topic.
func record(tb testing.TB, p *Projection, offset int64, ev domain.Event) *kgo.Record {
	tb.Helper()
	r, err := eventlog.Record(p.topics.Channels, string(domain.ChannelOf(ev)), ev, domain.Meta{EventID: fmt.Sprint("e", offset), Time: sentAt})
	if err != nil {
		tb.Fatal(err)
	}
	r.Partition, r.Offset = 0, offset
	return r
}

func message(id domain.MessageID, from domain.UserID, text string) domain.MessageSent {
	return domain.MessageSent{ChannelID: "g1", MessageID: id, SenderID: from, DeviceID: "phone", ClientMsgID: fmt.Sprint("c", id), Text: text}
}

// TestPartitionAdmitsAndFansOut drives Process over records of one
// partition of the channel topic.
func TestPartitionAdmitsAndFansOut(t *testing.T) {
	ctx := context.Background()
	p, c := newSeeded(t, 10)
	sender, newcomer, outsider := c.Members[3], domain.UserID("2000"), domain.UserID("3000")

	var got []*kgo.Record
	progress := map[string]string{} // changelog progress records: channel → offset
	out := newOut(t, p.topics.FanoutState, func(r *kgo.Record) {
		if ch, ok := strings.CutPrefix(string(r.Key), progressPrefix); ok && r.Topic == p.topics.FanoutState {
			progress[ch] = string(r.Value)
			return
		}
		got = append(got, r)
	})
	// run processes recs and returns what they emitted besides the
	// channels' progress records, which it checks: one per message fanned
	// out, naming its offset.
	run := func(t *testing.T, recs ...*kgo.Record) []*kgo.Record {
		t.Helper()
		got = nil
		for _, r := range recs {
			clear(progress)
			before := len(got)
			if err := p.Process(ctx, r.Partition, r, out); err != nil {
				t.Fatalf("Process(offset %d): %v", r.Offset, err)
			}
			fanned := len(got) > before && got[len(got)-1].Topic == p.topics.Inbox
			if want := strconv.FormatInt(r.Offset, 10); fanned && progress[string(r.Key)] != want {
				t.Fatalf("offset %d fanned out with progress %v; want %s at %s", r.Offset, progress, r.Key, want)
			}
			if !fanned && len(progress) != 0 {
				t.Fatalf("offset %d: progress %v without a fan-out", r.Offset, progress)
			}
		}
		return got
	}
	// checkInbox checks that recs are one inbox record per member, in
	// member order, each a copy of m at offset of partition 0.
	checkInbox := func(t *testing.T, recs []*kgo.Record, members []domain.UserID, m domain.MessageSent, offset int64) {
		t.Helper()
		if len(recs) != len(members) {
			t.Fatalf("%d records; want one per member, %d", len(recs), len(members))
		}
		for i, r := range recs {
			u := members[i]
			if r.Topic != p.topics.Inbox || string(r.Key) != string(u) {
				t.Errorf("record %d: topic %s key %s; want %s key %s", i, r.Topic, r.Key, p.topics.Inbox, u)
			}
			meta, ev, err := domain.Decode(r.Value)
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
			want := domain.InboxMessage{
				UserID: u, ChannelID: m.ChannelID, MessageID: m.MessageID, SenderID: m.SenderID,
				SentAt: sentAt, ChannelPartition: 0, ChannelOffset: offset,
			}
			in, ok := ev.(domain.InboxMessage)
			if !ok {
				t.Fatalf("record %d holds %T", i, ev)
			}
			if !in.SentAt.Equal(want.SentAt) {
				t.Errorf("record %d: sent at %v; want %v", i, in.SentAt, want.SentAt)
			}
			if in.SentAt = want.SentAt; in != want {
				t.Errorf("record %d: %+v; want %+v", i, in, want)
			}
			if wantID := m.MessageID.String() + "." + string(u); meta.EventID != wantID || !meta.Time.Equal(sentAt) {
				t.Errorf("record %d: meta %+v; want event id %s at %v", i, meta, wantID, sentAt)
			}
		}
	}
	checkChangelog := func(t *testing.T, r *kgo.Record, want domain.Channel) {
		t.Helper()
		if r.Topic != p.topics.FanoutState || r.Partition != 0 || string(r.Key) != string(want.ID) {
			t.Fatalf("record on %s[%d] key %s; want %s[0] key %s", r.Topic, r.Partition, r.Key, p.topics.FanoutState, want.ID)
		}
		var saved domain.Channel
		if err := json.Unmarshal(r.Value, &saved); err != nil {
			t.Fatal(err)
		}
		if saved.ID != want.ID || saved.Kind != want.Kind || !slices.Equal(saved.Members, want.Members) {
			t.Fatalf("changelog holds %+v; want %+v", saved, want)
		}
	}
	members := slices.Clone(c.Members)

	t.Run("message from a member", func(t *testing.T) {
		m := message(1, sender, "hello")
		checkInbox(t, run(t, record(t, p, 10, m)), members, m, 10)
	})
	t.Run("message from a non-member", func(t *testing.T) {
		if recs := run(t, record(t, p, 11, message(2, outsider, "spam"))); len(recs) != 0 {
			t.Fatalf("%d records; want none", len(recs))
		}
	})
	t.Run("message to an unknown channel", func(t *testing.T) {
		m := message(3, sender, "lost")
		m.ChannelID = "g404"
		if recs := run(t, record(t, p, 12, m)); len(recs) != 0 {
			t.Fatalf("%d records; want none", len(recs))
		}
	})
	t.Run("undecodable records are skipped", func(t *testing.T) {
		junk := &kgo.Record{Topic: p.topics.Channels, Key: []byte("g1"), Value: []byte(`{"type":`), Offset: 13}
		unknown := &kgo.Record{Topic: p.topics.Channels, Key: []byte("g1"), Value: []byte(`{"type":"message.edited","version":1,"payload":{}}`), Offset: 14}
		m := message(4, sender, "after the junk")
		checkInbox(t, run(t, junk, unknown, record(t, p, 15, m)), members, m, 15)
	})
	t.Run("member added", func(t *testing.T) {
		recs := run(t, record(t, p, 20, domain.MemberAdded{ChannelID: "g1", UserID: newcomer, ByID: sender}))
		if len(recs) != 1 {
			t.Fatalf("%d records; want one changelog record", len(recs))
		}
		members = append(members, newcomer)
		checkChangelog(t, recs[0], domain.Channel{ID: "g1", Kind: domain.KindGroup, Members: members})
	})
	t.Run("the same member added again is refused", func(t *testing.T) {
		if recs := run(t, record(t, p, 21, domain.MemberAdded{ChannelID: "g1", UserID: newcomer, ByID: sender})); len(recs) != 0 {
			t.Fatalf("%d records; want none", len(recs))
		}
	})
	t.Run("the new member gets later messages", func(t *testing.T) {
		m := message(5, newcomer, "hi all")
		checkInbox(t, run(t, record(t, p, 22, m)), members, m, 22)
	})
	t.Run("a removed member gets no later messages", func(t *testing.T) {
		left := members[1]
		recs := run(t,
			record(t, p, 30, domain.MemberRemoved{ChannelID: "g1", UserID: left, ByID: left}),
			record(t, p, 31, message(6, left, "gone")), // no longer a member: refused
			record(t, p, 32, message(7, sender, "bye")),
		)
		if len(recs) == 0 {
			t.Fatal("no records")
		}
		members = slices.DeleteFunc(members, func(u domain.UserID) bool { return u == left })
		checkChangelog(t, recs[0], domain.Channel{ID: "g1", Kind: domain.KindGroup, Members: members})
		checkInbox(t, recs[1:], members, message(7, sender, "bye"), 32)
	})
	t.Run("log order within a batch", func(t *testing.T) {
		// A message before an add does not reach the newcomer; the one
		// after it does.
		late := domain.UserID("2001")
		m1, m2 := message(8, sender, "before"), message(9, sender, "after")
		recs := run(t,
			record(t, p, 40, m1),
			record(t, p, 41, domain.MemberAdded{ChannelID: "g1", UserID: late, ByID: sender}),
			record(t, p, 42, m2),
		)
		n := len(members)
		if len(recs) != 2*n+2 {
			t.Fatalf("%d records; want %d", len(recs), 2*n+2)
		}
		checkInbox(t, recs[:n], members, m1, 40)
		members = append(members, late)
		checkChangelog(t, recs[n], domain.Channel{ID: "g1", Kind: domain.KindGroup, Members: members})
		checkInbox(t, recs[n+1:], members, m2, 42)
	})
	t.Run("a new channel", func(t *testing.T) {
		created := domain.ChannelCreated{ChannelID: "g2", Kind: domain.KindGroup, CreatorID: "1000", Members: []domain.UserID{"1001", "1000"}}
		m := message(10, "1001", "first")
		m.ChannelID = "g2"
		recs := run(t, record(t, p, 50, created), record(t, p, 51, m))
		if len(recs) != 3 {
			t.Fatalf("%d records; want the changelog then two inbox records", len(recs))
		}
		checkChangelog(t, recs[0], domain.Channel{ID: "g2", Kind: domain.KindGroup, Members: []domain.UserID{"1000", "1001"}})
		checkInbox(t, recs[1:], []domain.UserID{"1000", "1001"}, m, 51)
	})
	t.Run("undecodable state is skipped on restore", func(t *testing.T) {
		p.Restore(0, []byte("g3"), []byte(`{"members":`))
		if _, ok := p.state[0]["g3"]; ok {
			t.Fatal("undecodable state restored")
		}
	})
	t.Run("a message at or below the channel's progress is not fanned out again", func(t *testing.T) {
		// A transaction committed the inbox entries and the progress
		// but its input offsets were lost: the input comes again.
		m := message(12, sender, "once")
		checkInbox(t, run(t, record(t, p, 70, m)), members, m, 70)
		fresh, _ := newSeeded(t, 10)
		for _, ch := range []domain.Channel{p.state[0]["g1"]} {
			b, _ := json.Marshal(ch)
			fresh.Restore(0, []byte(ch.ID), b)
		}
		fresh.Restore(0, []byte(progressPrefix+"g1"), []byte("70"))
		var again []*kgo.Record
		fout := newOut(t, p.topics.FanoutState, func(r *kgo.Record) { again = append(again, r) })
		for _, off := range []int64{69, 70} {
			if err := fresh.Process(ctx, 0, record(t, fresh, off, m), fout); err != nil {
				t.Fatal(err)
			}
		}
		if len(again) != 0 {
			t.Fatalf("%d records for offsets at or below the progress; want none", len(again))
		}
		if err := fresh.Process(ctx, 0, record(t, fresh, 71, message(13, sender, "next")), fout); err != nil {
			t.Fatal(err)
		}
		if len(again) != len(members)+1 {
			t.Fatalf("%d records past the progress; want %d inbox records and the progress", len(again), len(members))
		}
	})
	t.Run("drop forgets every channel", func(t *testing.T) {
		p.Drop()
		if recs := run(t, record(t, p, 60, message(11, sender, "after the drop"))); len(recs) != 0 {
			t.Fatalf("%d records after Drop; want none until a restore", len(recs))
		}
	})
}

// BenchmarkPartition measures the fan-out's work per message of the channel
// topic: decode the record, admit it, and build one encoded inbox record per
// member. The produce function only counts: no broker is involved.
func BenchmarkPartition(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			ctx := context.Background()
			p, c := newSeeded(b, n)
			text := strings.Repeat("Hello, wörld! ", 15)[:200]
			recs := make([]*kgo.Record, 256)
			for i := range recs {
				recs[i] = record(b, p, int64(i), message(domain.MessageID(i+1), c.Members[i%n], text))
			}
			var produced int
			out := newOut(b, p.topics.FanoutState, func(r *kgo.Record) {
				if r.Topic == p.topics.Inbox {
					produced++
				}
			})
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r := recs[i%len(recs)]
				r.Offset = int64(i) // past the channel's progress
				if err := p.Process(ctx, 0, r, out); err != nil {
					b.Fatal(err)
				}
				i++
			}
			if produced != b.N*n {
				b.Fatalf("produced %d inbox records for %d messages; want %d", produced, b.N, b.N*n)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/msg")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(produced), "ns/inbox-record")
		})
	}
}

// TestSendRacingRemoval: a message decided while its sender was a member
// (DecidedAt below the version the sender's removal set) is fanned out to
// the members left, as history keeps it; one decided on the state after
// the removal, or with no decision version, is dropped. The fan-out sets
// Version as history does, or it would drop what history keeps.
func TestSendRacingRemoval(t *testing.T) {
	ctx := context.Background()
	p, c := newSeeded(t, 10)
	sender, newcomer := c.Members[3], domain.UserID("2000")
	var inbox []*kgo.Record
	out := newOut(t, p.topics.FanoutState, func(r *kgo.Record) {
		if r.Topic == p.topics.Inbox {
			inbox = append(inbox, r)
		}
	})
	send := func(id domain.MessageID, decidedAt int64) domain.MessageSent {
		m := message(id, sender, "hi")
		m.DecidedAt = decidedAt
		return m
	}
	fanned := map[domain.MessageID]int{}
	for i, ev := range []domain.Event{
		domain.MemberAdded{ChannelID: c.ID, UserID: newcomer, ByID: c.Members[0]}, // offset 10: version 11
		domain.MemberRemoved{ChannelID: c.ID, UserID: sender, ByID: c.Members[0]}, // offset 11: version 12
		send(50, 11), // decided on version 11, sender a member: stands
		send(51, 12), // decided after the removal: cannot have been acknowledged
		send(52, 0),  // written before decision versions: the old rule
	} {
		inbox = nil
		if err := p.Process(ctx, 0, record(t, p, int64(10+i), ev), out); err != nil {
			t.Fatal(err)
		}
		if m, ok := ev.(domain.MessageSent); ok {
			fanned[m.MessageID] = len(inbox)
		}
	}
	if want := map[domain.MessageID]int{50: 10, 51: 0, 52: 0}; !reflect.DeepEqual(fanned, want) {
		t.Fatalf("inbox entries per message %v, want %v (the 10 members after the removal for 50)", fanned, want)
	}
}
