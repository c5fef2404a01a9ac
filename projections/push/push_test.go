package push

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
	"github.com/evchat/evchat/projections/store/storetest"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// sender records the notifications it is given, and when; it fails the
// first fails calls.
type sender struct {
	mu    sync.Mutex
	fails int
	calls int
	sent  []Notification
	at    []time.Time
}

func (s *sender) Send(_ context.Context, n Notification) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.calls <= s.fails {
		return errors.New("provider down")
	}
	s.sent = append(s.sent, n)
	s.at = append(s.at, time.Now())
	return nil
}

func (s *sender) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, n := range s.sent {
		out = append(out, fmt.Sprintf("%s:%d", n.UserID, n.MessageID))
	}
	return out
}

// presence is a fake presence: online users, or a function of the time.
type presence struct {
	online map[domain.UserID]bool
	fn     func(domain.UserID) bool
}

func (p presence) Of(u domain.UserID) (domain.PresenceChange, bool) {
	if p.fn != nil {
		return domain.PresenceChange{UserID: u, Online: p.fn(u)}, true
	}
	on, ok := p.online[u]
	return domain.PresenceChange{UserID: u, Online: on}, ok
}

// texts is a fake Texts: message id's text is "text of <id>"; those of
// missing are not there in time.
type texts struct {
	missing map[domain.MessageID]bool
	calls   *int
}

func (f texts) Resolve(_ context.Context, ms []domain.InboxMessage) error {
	if f.calls != nil {
		*f.calls++
	}
	for i := range ms {
		if f.missing[ms[i].MessageID] {
			return domain.Errorf(domain.CodeUnavailable, "history has not stored %s", ms[i].MessageID)
		}
		ms[i].Text = "text of " + ms[i].MessageID.String()
	}
	return nil
}

// entry is an inbox entry at an offset of the inbox topic.
type entry struct {
	offset int64
	u      domain.UserID
	id     domain.MessageID
	from   domain.UserID
	sentAt time.Time
}

func records(t *testing.T, es ...entry) []*kgo.Record {
	t.Helper()
	recs := make([]*kgo.Record, len(es))
	for i, e := range es {
		ev := domain.InboxMessage{UserID: e.u, ChannelID: "c", MessageID: e.id, SenderID: e.from, SentAt: e.sentAt}
		r, err := eventlog.Record("chat.inbox.e1", string(e.u), ev, domain.Meta{EventID: fmt.Sprint(e.offset), Time: e.sentAt})
		if err != nil {
			t.Fatal(err)
		}
		r.Offset = e.offset
		recs[i] = r
	}
	return recs
}

func ackAt(st *pebblestore.Store, u domain.UserID, epoch int32, pos int64) error {
	return st.Apply(context.Background(), store.Batch{Cursors: []store.DeviceCursor{{UserID: u, DeviceID: "p", Epoch: epoch, Position: pos, UpdatedAt: t0}}})
}

// TestHandle decides with a clock past every entry's delay: who gets a
// notification, and that a replay (a new projection over the same
// records) and a second copy of an entry send nothing more.
func TestHandle(t *testing.T) {
	now := t0.Add(10 * time.Second) // entries sent at t0 are past the 3s delay
	tests := []struct {
		name    string
		entries []entry
		online  map[domain.UserID]bool
		acks    func(*pebblestore.Store) error
		want    []string
		counts  map[string]float64 // outcomes over the first run and the replay
	}{{
		name:    "recipients without presence get one each",
		entries: []entry{{0, "a", 1, "s", t0}, {1, "b", 1, "s", t0}, {2, "a", 2, "s", t0}},
		want:    []string{"a:1", "b:1", "a:2"},
		counts:  map[string]float64{OutcomeSent: 3, OutcomeReserved: 3},
	}, {
		name:    "online recipient gets nothing",
		entries: []entry{{0, "a", 1, "s", t0}, {1, "b", 1, "s", t0}},
		online:  map[domain.UserID]bool{"a": true, "b": false},
		want:    []string{"b:1"},
		counts:  map[string]float64{OutcomeOnline: 2, OutcomeSent: 1, OutcomeReserved: 1},
	}, {
		name:    "the sender's own copy sends nothing",
		entries: []entry{{0, "s", 1, "s", t0}, {1, "a", 1, "s", t0}},
		want:    []string{"a:1"},
		counts:  map[string]float64{OutcomeSent: 1, OutcomeReserved: 1},
	}, {
		name:    "older than the max age",
		entries: []entry{{0, "a", 1, "s", now.Add(-time.Minute - time.Millisecond)}, {1, "a", 2, "s", now.Add(-time.Minute + time.Second)}},
		want:    []string{"a:2"},
		counts:  map[string]float64{OutcomeTooOld: 2, OutcomeSent: 1, OutcomeReserved: 1},
	}, {
		name:    "a device acknowledged the entry",
		entries: []entry{{4, "a", 1, "s", t0}, {5, "a", 2, "s", t0}, {5, "b", 3, "s", t0}},
		acks: func(st *pebblestore.Store) error {
			return errors.Join(ackAt(st, "a", 1, 4), ackAt(st, "b", 2, 100)) // b acked in another epoch
		},
		want:   []string{"a:2", "b:3"},
		counts: map[string]float64{OutcomeAcknowledged: 2, OutcomeSent: 2, OutcomeReserved: 2},
	}, {
		name:    "a second copy of an entry at a later offset",
		entries: []entry{{0, "a", 1, "s", t0}, {1, "a", 1, "s", t0}},
		want:    []string{"a:1"},
		counts:  map[string]float64{OutcomeSent: 1, OutcomeReserved: 3},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := storetest.OpenPebble(t)
			if tt.acks != nil {
				if err := tt.acks(st); err != nil {
					t.Fatal(err)
				}
			}
			s := &sender{}
			outcomes := NewOutcomes(prometheus.NewRegistry())
			cfg := Config{Delay: 3 * time.Second, MaxAge: time.Minute, Now: func() time.Time { return now }, Outcomes: outcomes}
			recs := records(t, tt.entries...)
			for range 2 { // the first run, then a replay
				if err := New(cfg, st, texts{}, presence{online: tt.online}, s).Handle(context.Background(), 0, recs, &store.Batch{}); err != nil {
					t.Fatal(err)
				}
				if got := s.got(); !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("sent %v, want %v", got, tt.want)
				}
			}
			checkOutcomes(t, outcomes, tt.counts)
		})
	}
}

// checkOutcomes fails unless the counter holds want (outcomes missing
// from want at zero).
func checkOutcomes(t *testing.T, c *prometheus.CounterVec, want map[string]float64) {
	t.Helper()
	for _, o := range []string{OutcomeTooOld, OutcomeOnline, OutcomeAcknowledged, OutcomeReserved, OutcomeSent, OutcomeFailed} {
		if got := testutil.ToFloat64(c.WithLabelValues(o)); got != want[o] {
			t.Errorf("outcome %s counted %v times, want %v", o, got, want[o])
		}
	}
}

// TestHandleHoldsUntilDue: Handle holds each entry until its time plus the
// delay, without waiting, and sends nothing before; handed no records once
// Due has come, it decides the due ones in order, asking presence then, so
// a recipient who came online meanwhile gets nothing. The position it
// allows (Held) is its oldest entry still held.
func TestHandleHoldsUntilDue(t *testing.T) {
	st := storetest.OpenPebble(t)
	s := &sender{}
	now := t0
	online := false
	pr := presence{fn: func(u domain.UserID) bool { return u == "b" && online }}
	cfg := Config{Delay: 3 * time.Second, MaxAge: time.Minute, Now: func() time.Time { return now }}
	recs := records(t, entry{4, "a", 1, "s", t0}, entry{5, "b", 2, "s", t0}, entry{6, "s", 3, "s", t0}, entry{7, "a", 4, "s", t0.Add(time.Second)})
	p := New(cfg, st, texts{}, pr, s)
	check := func(when string, want []string, held int64, due time.Time) {
		t.Helper()
		if got := s.got(); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: sent %v, want %v", when, got, want)
		}
		off, ok := p.Held(0)
		if held < 0 && ok || held >= 0 && (!ok || off != held) {
			t.Fatalf("%s: held from %d (%v), want %d", when, off, ok, held)
		}
		if got := p.Due(); !got.Equal(due) {
			t.Fatalf("%s: due %v, want %v", when, got, due)
		}
	}
	if err := p.Handle(context.Background(), 0, recs, &store.Batch{}); err != nil {
		t.Fatal(err)
	}
	check("handed", nil, 4, t0.Add(3*time.Second))

	now = t0.Add(3 * time.Second)
	online = true // b came online during the delay
	if err := p.Handle(context.Background(), 0, nil, &store.Batch{}); err != nil {
		t.Fatal(err)
	}
	check("3s later", []string{"a:1"}, 7, t0.Add(4*time.Second)) // the sender's own copy is no notification

	now = t0.Add(4 * time.Second)
	if err := p.Handle(context.Background(), 0, nil, &store.Batch{}); err != nil {
		t.Fatal(err)
	}
	check("4s later", []string{"a:1", "a:4"}, -1, time.Time{})
}

// TestHeldAcrossAReset: Reset drops what is held (the runner fetches it
// again from the position Held gave), and a replay of what was decided
// before sends nothing twice.
func TestHeldAcrossAReset(t *testing.T) {
	st := storetest.OpenPebble(t)
	s := &sender{}
	now := t0
	cfg := Config{Delay: time.Hour, MaxAge: 2 * time.Hour, Now: func() time.Time { return now }}
	recs := records(t, entry{0, "a", 1, "s", t0}, entry{1, "b", 2, "s", t0.Add(time.Minute)})
	p := New(cfg, st, texts{}, presence{}, s)
	if err := p.Handle(context.Background(), 0, recs, &store.Batch{}); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(time.Hour)
	if err := p.Handle(context.Background(), 0, nil, &store.Batch{}); err != nil {
		t.Fatal(err)
	}
	if off, ok := p.Held(0); !ok || off != 1 {
		t.Fatalf("held from %d (%v), want 1", off, ok)
	}
	p.Reset()
	if off, ok := p.Held(0); ok || !p.Due().IsZero() {
		t.Fatalf("after Reset: held from %d, due %v", off, p.Due())
	}
	now = t0.Add(time.Hour + time.Minute)
	if err := p.Handle(context.Background(), 0, recs, &store.Batch{}); err != nil { // fetched again from offset 0
		t.Fatal(err)
	}
	if got := s.got(); !reflect.DeepEqual(got, []string{"a:1", "b:2"}) {
		t.Fatalf("sent %v, want a:1 once and b:2", got)
	}
}

// TestHandleSenderFails: a failing provider is tried three times; a
// notification that never went out is not tried again by a replay (at
// most once: it was reserved).
func TestHandleSenderFails(t *testing.T) {
	now := t0.Add(10 * time.Second)
	tests := []struct {
		name      string
		fails     int
		wantCalls int
		want      []string
		counts    map[string]float64
	}{
		{"succeeds on the third try", 2, 3, []string{"a:1"}, map[string]float64{OutcomeSent: 1, OutcomeReserved: 1}},
		{"lost after three tries", 3, 3, nil, map[string]float64{OutcomeFailed: 1, OutcomeReserved: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := storetest.OpenPebble(t)
			s := &sender{fails: tt.fails}
			cfg := Config{Now: func() time.Time { return now }, Outcomes: NewOutcomes(prometheus.NewRegistry())}
			recs := records(t, entry{0, "a", 1, "s", t0})
			for range 2 {
				if err := New(cfg, st, texts{}, presence{}, s).Handle(context.Background(), 0, recs, &store.Batch{}); err != nil {
					t.Fatal(err)
				}
			}
			if s.calls != tt.wantCalls || !reflect.DeepEqual(s.got(), tt.want) {
				t.Fatalf("%d calls, sent %v; want %d, %v", s.calls, s.got(), tt.wantCalls, tt.want)
			}
			checkOutcomes(t, cfg.Outcomes, tt.counts)
		})
	}
}

// failing is a store that does not answer.
type failing struct{}

func (failing) DeviceCursors(context.Context, domain.UserID) ([]store.DeviceCursor, error) {
	return nil, errors.New("store down")
}

func (failing) ReservePush(context.Context, domain.UserID, domain.MessageID, time.Time) (bool, error) {
	return false, errors.New("store down")
}

// TestHandleStoreError: without the store the projection cannot know
// whether it sent already, so it fails the batch and sends nothing.
func TestHandleStoreError(t *testing.T) {
	s := &sender{}
	now := t0.Add(10 * time.Second)
	err := New(Config{Now: func() time.Time { return now }}, failing{}, texts{}, presence{}, s).Handle(context.Background(), 0, records(t, entry{0, "a", 1, "s", t0}), &store.Batch{})
	if err == nil || len(s.got()) != 0 {
		t.Fatalf("err %v, sent %v", err, s.got())
	}
}

// TestTextResolvedBeforeReservation: the notification carries the text
// that Texts resolved, and an entry whose text is not there in time fails
// the batch before anything is reserved, so its run again sends it.
func TestTextResolvedBeforeReservation(t *testing.T) {
	st := storetest.OpenPebble(t)
	now := t0.Add(time.Minute)
	cfg := Config{Now: func() time.Time { return now }}
	recs := records(t, entry{0, "a", 1, "s", t0.Add(50 * time.Second)}, entry{1, "b", 2, "s", t0.Add(50 * time.Second)})
	s := &sender{}
	if err := New(cfg, st, texts{missing: map[domain.MessageID]bool{2: true}}, presence{}, s).Handle(context.Background(), 0, recs, &store.Batch{}); domain.CodeOf(err) != domain.CodeUnavailable {
		t.Fatalf("Handle = %v; want unavailable", err)
	}
	calls := 0
	if err := New(cfg, st, texts{calls: &calls}, presence{}, s).Handle(context.Background(), 0, recs, &store.Batch{}); err != nil {
		t.Fatal(err)
	}
	if got := s.got(); !reflect.DeepEqual(got, []string{"a:1", "b:2"}) {
		t.Fatalf("sent %v", got)
	}
	if calls != 1 {
		t.Errorf("%d resolves for a batch of two; want 1", calls)
	}
	if s.sent[0].Text != "text of 1" || s.sent[1].Text != "text of 2" {
		t.Errorf("texts %q, %q", s.sent[0].Text, s.sent[1].Text)
	}
}
