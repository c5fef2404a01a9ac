package sends

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/sends/sendstest"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/txproc"
)

// key is the key of client message id c of the tests' sender.
func key(c string) store.SendKey { return store.SendKey{SenderID: "u1", ClientMsgID: c} }

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// request is the send.requested record at offset of partition 0.
func request(t *testing.T, offset int64, id domain.MessageID, client string, ch domain.ChannelID, text string) *kgo.Record {
	t.Helper()
	req := domain.SendRequested{MessageSent: domain.MessageSent{ChannelID: ch, MessageID: id, SenderID: "u1", DeviceID: "d", ClientMsgID: client, Text: text, DecidedAt: 3}, ReplyTo: "node-1"}
	v, err := domain.Encode(req, domain.Meta{EventID: fmt.Sprint("r", offset), Time: t0.Add(time.Duration(offset) * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: "chat.sends", Key: []byte("u1"), Value: v, Offset: offset}
}

// batch runs one batch through p as txproc does and returns what it
// emitted: the message.sent records and the answers.
func batch(t *testing.T, p *Processor, recs ...*kgo.Record) (sent []domain.MessageSent, answers []domain.SendDecided) {
	sent, answers, _ = batchProgress(t, p, recs...)
	return sent, answers
}

// batchProgress is batch, and it returns the progress the batch saved to
// the changelog too.
func batchProgress(t *testing.T, p *Processor, recs ...*kgo.Record) (sent []domain.MessageSent, answers []domain.SendDecided, progress []string) {
	t.Helper()
	ctx := context.Background()
	var out []*kgo.Record
	o := txproc.NewOut("chat.sends-state", func(r *kgo.Record) { out = append(out, r) })
	if err := p.Prepare(ctx, recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := p.Process(ctx, 0, r, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx, o); err != nil {
		t.Fatal(err)
	}
	for _, r := range out {
		if r.Topic == "chat.sends-state" {
			progress = append(progress, fmt.Sprintf("%d:%s=%s", r.Partition, r.Key, r.Value))
			continue
		}
		m, ev, err := domain.Decode(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		switch ev := ev.(type) {
		case domain.MessageSent:
			if r.Topic != "chat.channels" || string(r.Key) != string(ev.ChannelID) || m.EventID != ev.MessageID.String() {
				t.Fatalf("message.sent to %s, key %s, event id %s: %+v", r.Topic, r.Key, m.EventID, ev)
			}
			sent = append(sent, ev)
		case domain.SendDecided:
			if r.Topic != "chat.send-replies" || string(r.Key) != "node-1" {
				t.Fatalf("answer to %s, key %s", r.Topic, r.Key)
			}
			answers = append(answers, ev)
		}
	}
	return sent, answers, progress
}

func newProcessor(t *testing.T, st Store) *Processor {
	t.Helper()
	p, err := New(Config{Log: eventlog.Config{Brokers: []string{"127.0.0.1:1"}}}, st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDecide(t *testing.T) {
	st := sendstest.New()
	p := newProcessor(t, st)
	// The first request of c1 becomes the message; its resend in the same
	// batch and in a later one gets its id; c2 is another message.
	sent, answers := batch(t, p,
		request(t, 0, 11, "c1", "g1", "hi"),
		request(t, 1, 12, "c1", "g1", "hi"),
		request(t, 2, 13, "c2", "g1", "yo"),
	)
	if len(sent) != 2 || sent[0].MessageID != 11 || sent[1].MessageID != 13 || sent[0].Text != "hi" || sent[0].DecidedAt != 3 {
		t.Fatalf("sent %+v, want messages 11 and 13", sent)
	}
	want := []domain.SendDecided{{RequestID: "r0", MessageID: 11}, {RequestID: "r1", MessageID: 11}, {RequestID: "r2", MessageID: 13}}
	if fmt.Sprint(answers) != fmt.Sprint(want) {
		t.Fatalf("answers %+v, want %+v", answers, want)
	}
	if d := st.Decision(key("c1")); d.MessageID != 11 || d.Offset != 0 || d.ChannelID != "g1" || d.TextHash != TextHash("hi") {
		t.Fatalf("decision of c1: %+v", d)
	}
	sent, answers = batch(t, p,
		request(t, 3, 14, "c1", "g1", "hi"),
		request(t, 4, 15, "c1", "g1", "other"),
		request(t, 5, 16, "c1", "g2", "hi"),
	)
	if len(sent) != 0 {
		t.Fatalf("resends appended %+v", sent)
	}
	if answers[0].MessageID != 11 || answers[1].Code != domain.CodeConflict || answers[2].Code != domain.CodeConflict {
		t.Fatalf("answers %+v, want 11 then two conflicts", answers)
	}
}

// TestDecideAgain: a batch processed again after its transaction aborted,
// with its decisions already stored, appends its first requests' messages
// again (the aborted transaction's are gone) and writes their decisions
// again with them, and a later request of the key still only gets the id.
func TestDecideAgain(t *testing.T) {
	st := sendstest.New()
	p := newProcessor(t, st)
	recs := []*kgo.Record{request(t, 7, 21, "c1", "g1", "hi"), request(t, 8, 22, "c1", "g1", "hi")}
	batch(t, p, recs...)
	p.Drop() // the transaction aborted
	sent, answers := batch(t, p, recs...)
	if n := st.Saves(key("c1")); n != 2 {
		t.Fatalf("the decision of c1 written %d times, want twice: with the aborted batch and with the one that commits its message", n)
	}
	if len(sent) != 1 || sent[0].MessageID != 21 {
		t.Fatalf("sent %+v again, want message 21 once", sent)
	}
	if answers[0].MessageID != 21 || answers[1].MessageID != 21 {
		t.Fatalf("answers %+v, want 21 twice", answers)
	}
	if sent, _ := batch(t, p, recs[1]); len(sent) != 0 {
		t.Fatalf("a later request alone appended %+v", sent)
	}
}

// TestProgress: each batch saves how far it got in its partition; a
// processor that restored that progress passes over the records below it
// (a committed transaction answered them and appended their messages),
// though the group's offsets were lost and they come again.
func TestProgress(t *testing.T) {
	st := sendstest.New()
	p := newProcessor(t, st)
	recs := []*kgo.Record{request(t, 7, 21, "c1", "g1", "hi"), request(t, 8, 22, "c2", "g1", "yo")}
	_, _, progress := batchProgress(t, p, recs...)
	if fmt.Sprint(progress) != "[0:progress=9]" {
		t.Fatalf("progress %v, want [0:progress=9]", progress)
	}
	// The records come again in this run (the commit's offsets were not
	// kept), and in a new one that restored the changelog.
	for _, restart := range []bool{false, true} {
		if restart {
			p = newProcessor(t, st)
			p.Restore(0, []byte("progress"), []byte("9"))
		}
		sent, answers := batch(t, p, append(recs, request(t, 9, 23, "c1", "g1", "hi"))...)
		if len(sent) != 0 || len(answers) != 1 || answers[0].MessageID != 21 {
			t.Fatalf("restart %v: sent %+v, answers %+v; want only the resend at 9 answered, with 21", restart, sent, answers)
		}
	}
}

// TestMend: a store that loses the decisions (and progress) of batches
// whose transactions committed, as a one-node Cassandra does on kill -9, is
// mended from the log: before the next batch of the partition, a resend of
// a lost key is answered with the id its first request was decided with,
// nothing is appended, and every lost decision is back; with no input, Idle
// does the same.
func TestMend(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := eventlog.Config{Brokers: c.ListenAddrs(), Partitions: 1}
	if err := eventlog.EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// logged appends the requests to partition 0 of the sends topic, at
	// the offsets they name.
	logged := func(recs ...*kgo.Record) []*kgo.Record {
		t.Helper()
		for _, r := range recs {
			got, err := cl.ProduceSync(ctx, &kgo.Record{Topic: cfg.Topics().Sends, Key: r.Key, Value: r.Value}).First()
			if err != nil || got.Offset != r.Offset {
				t.Fatalf("request at %d: appended at %v, %v", r.Offset, got, err)
			}
		}
		return recs
	}
	st := sendstest.New()
	mended := prometheus.NewCounter(prometheus.CounterOpts{Name: "mended"})
	p, err := New(Config{Log: cfg, Mended: mended}, st)
	if err != nil {
		t.Fatal(err)
	}
	batch(t, p, logged(request(t, 0, 11, "c1", "g1", "hi"), request(t, 1, 12, "c2", "g1", "yo"))...)
	before := st.Snapshot()
	batch(t, p, logged(request(t, 2, 13, "c3", "g1", "hey"), request(t, 3, 14, "c2", "g1", "yo"), request(t, 4, 15, "c4", "g1", "ho"))...)
	want := map[string]store.SendDecision{}
	for _, c := range []string{"c1", "c2", "c3", "c4"} {
		want[c] = st.Decision(key(c))
	}
	check := func(when string, progress int64) {
		t.Helper()
		for c, d := range want {
			if got := st.Decision(key(c)); got != d {
				t.Errorf("%s: the decision of %s is %+v, want %+v", when, c, got, d)
			}
		}
		if pos, _ := st.Positions(ctx, Name); pos[0] != progress {
			t.Errorf("%s: the store's progress %v, want %d", when, pos, progress)
		}
	}

	st.Lose(before)
	sent, answers := batch(t, p, logged(request(t, 5, 16, "c3", "g1", "hey"))...)
	if len(sent) != 0 || len(answers) != 1 || answers[0].MessageID != 13 {
		t.Fatalf("a resend of a key the store lost: sent %+v, answers %+v; want only an answer, with 13", sent, answers)
	}
	check("after the batch", 6)
	if n := testutil.ToFloat64(mended); n != 2 {
		t.Errorf("mended %v decisions, want 2 (c3 and c4)", n)
	}

	st.Lose(before)
	if err := p.Idle(ctx, []int32{0}); err != nil {
		t.Fatal(err)
	}
	check("after Idle", 6)

	// A mend past its deadline stops after a step, its progress saved;
	// the next goes on from there.
	defer func(n int64) { mendStep = n }(mendStep)
	mendStep = 2
	st.Lose(before)
	for i, want := range []int64{4, 6} {
		pos, _ := st.Positions(ctx, Name)
		_, err := p.mendBehind(ctx, []int32{0}, pos, time.Now())
		if got, _ := st.Positions(ctx, Name); got[0] != want || (want < 6) != (err != nil) {
			t.Fatalf("mend %d past its deadline: progress %v, %v; want %d", i, got, err, want)
		}
	}
	check("after two steps", 6)
	// Each batch's decisions and each mend's are replayable: the store
	// need not fsync them before the commit, since a mend like these
	// gets back what a crash took.
	if n := st.Durable(); n != 0 {
		t.Errorf("%d of the processor's writes were not marked replayable", n)
	}
}
