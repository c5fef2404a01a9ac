package projector

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/history"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
	"github.com/evchat/evchat/projections/store/storetest"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// recorder is a Handler around history's projection that records every
// offset it is handed, and can stop the runner, or fail, on one.
type recorder struct {
	h *history.Projection

	mu      sync.Mutex
	handed  map[int32][]int64
	resets  int
	stopAt  int64 // cancel stop when handed this offset (-1: never)
	stop    context.CancelFunc
	failing int // fail this many calls
	onFail  func()
}

func newRecorder(st *pebblestore.Store) *recorder {
	return &recorder{h: history.New(st, domain.DefaultLimits(), nil), handed: map[int32][]int64{}, stopAt: -1}
}

func (r *recorder) Handle(ctx context.Context, p int32, recs []*kgo.Record, b *store.Batch) error {
	r.mu.Lock()
	fail := r.failing > 0
	if fail {
		r.failing--
	}
	r.mu.Unlock()
	if fail {
		if r.onFail != nil {
			r.onFail()
		}
		return errors.New("store down")
	}
	if err := r.h.Handle(ctx, p, recs, b); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range recs {
		r.handed[p] = append(r.handed[p], rec.Offset)
		if rec.Offset == r.stopAt && r.stop != nil {
			r.stop() // as if the process died here, before the batch is written
		}
	}
	return nil
}

func (r *recorder) Reset() {
	r.mu.Lock()
	r.resets++
	r.mu.Unlock()
	r.h.Reset()
}

// fixture is a log on kfake with a two-partition channel topic.
type fixture struct {
	cfg  eventlog.Config
	cl   *kgo.Client
	recs map[int32][]*kgo.Record // everything produced, with offsets
	n    int
}

func newFixture(t *testing.T, ctx context.Context) *fixture {
	t.Helper()
	emb, err := eventlog.StartEmbedded("", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cfg := eventlog.Config{Brokers: emb.Addrs(), Prefix: "u", Partitions: 2}
	if err := eventlog.EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &fixture{cfg: cfg, cl: cl, recs: map[int32][]*kgo.Record{}}
}

// produce appends events of channels "c0" (partition 0) and "c1"
// (partition 1).
func (f *fixture) produce(t *testing.T, ctx context.Context, evs ...domain.Event) {
	t.Helper()
	for _, ev := range evs {
		ch := domain.ChannelOf(ev)
		r, err := eventlog.Record(f.cfg.Topics().Channels, string(ch), ev, domain.Meta{EventID: fmt.Sprint(f.n), Time: t0.Add(time.Duration(f.n) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		f.n++
		r.Partition = int32(ch[1] - '0')
		if err := f.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		f.recs[r.Partition] = append(f.recs[r.Partition], r)
	}
}

// ends returns the next offset of each partition.
func (f *fixture) ends() map[int32]int64 {
	m := map[int32]int64{}
	for p, rs := range f.recs {
		m[p] = rs[len(rs)-1].Offset + 1
	}
	return m
}

// run starts the history projection's runner. Cancelling its context is
// what a dying process looks like to the runner; stop cancels it and
// waits for Run's nil.
func (f *fixture) run(t *testing.T, ctx context.Context, st Store, h Handler) (cancel context.CancelFunc, stop func()) {
	t.Helper()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, Config{Name: history.Name, Topic: f.cfg.Topics().Channels, Log: f.cfg}, st, h)
	}()
	return cancel, func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// waitPositions waits until the stored positions are want.
func waitPositions(t *testing.T, ctx context.Context, st *pebblestore.Store, want map[int32]int64) {
	t.Helper()
	for {
		pos, err := st.Positions(ctx, history.Name)
		if err == nil && reflect.DeepEqual(pos, want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("positions %v (%v), want %v", pos, err, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// digest is history's state of c0 and c1 and users a, b, c, with positions.
func digest(t *testing.T, st *pebblestore.Store) string {
	t.Helper()
	ctx := context.Background()
	var out string
	for _, ch := range []domain.ChannelID{"c0", "c1"} {
		c, err := st.Channel(ctx, ch)
		if err != nil && !errors.Is(err, domain.ErrNotFound) {
			t.Fatal(err)
		}
		out += fmt.Sprintf("%s %v v%d:", ch, c.Members, c.Version)
		ms, err := st.MessagesAfter(ctx, ch, -1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			out += fmt.Sprintf(" %d=%d", m.Offset, m.MessageID)
		}
		out += "\n"
	}
	for _, u := range []domain.UserID{"a", "b", "c"} {
		cs, err := st.ChannelsOf(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		out += fmt.Sprintf("%s in %v\n", u, cs)
	}
	pos, err := st.Positions(ctx, history.Name)
	if err != nil {
		t.Fatal(err)
	}
	return out + fmt.Sprintf("positions %v\n", pos)
}

// once applies every produced record to a fresh store, once, without the
// runner: the state the runner must reach.
func (f *fixture) once(t *testing.T) string {
	t.Helper()
	st := storetest.OpenPebble(t)
	h := history.New(st, domain.DefaultLimits(), nil)
	for p, recs := range f.recs {
		b := store.Batch{Projection: history.Name, Positions: map[int32]int64{p: recs[len(recs)-1].Offset + 1}}
		if err := h.Handle(context.Background(), p, recs, &b); err != nil {
			t.Fatal(err)
		}
		if err := st.Apply(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	return digest(t, st)
}

func msg(ch domain.ChannelID, id domain.MessageID, from domain.UserID) domain.MessageSent {
	return domain.MessageSent{ChannelID: ch, MessageID: id, SenderID: from, DeviceID: "d", ClientMsgID: fmt.Sprint(id), Text: "hi"}
}

// TestRunRestartAndReplay runs the history projection on kfake and the
// Pebble store: it catches up, is stopped in the middle of a fetch (its
// batch never written), resumes from the stored positions, and is finally
// reset and replayed from the start. Offsets below a stored position are
// never handed over again, none is lost, and both the resumed and the
// replayed state equal the log applied once.
func TestRunRestartAndReplay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t, ctx)
	st := storetest.OpenPebble(t)

	f.produce(t, ctx,
		domain.ChannelCreated{ChannelID: "c0", Kind: domain.KindGroup, CreatorID: "a", Members: []domain.UserID{"a", "b"}},
		domain.ChannelCreated{ChannelID: "c1", Kind: domain.KindDirect, CreatorID: "a", Members: []domain.UserID{"a", "c"}},
		msg("c0", 1, "a"), msg("c1", 2, "c"), msg("c0", 3, "b"),
	)
	first := newRecorder(st)
	_, stop := f.run(t, ctx, st, first)
	waitPositions(t, ctx, st, f.ends())
	stop()
	afterFirst := f.ends()

	// A second run that dies while handling the next records.
	f.produce(t, ctx,
		msg("c0", 4, "a"), domain.MemberAdded{ChannelID: "c0", UserID: "c", ByID: "a"}, msg("c1", 5, "a"),
		msg("c0", 6, "c"), domain.MemberRemoved{ChannelID: "c0", UserID: "b", ByID: "b"}, msg("c0", 7, "b"),
		msg("c0", 6, "c"), // a second copy
	)
	second := newRecorder(st)
	second.stopAt = f.recs[0][len(f.recs[0])-2].Offset
	died := make(chan struct{})
	second.mu.Lock()
	cancelSecond, stop := f.run(t, ctx, st, second)
	second.stop = func() { cancelSecond(); close(died) }
	second.mu.Unlock()
	select {
	case <-died:
	case <-ctx.Done():
		t.Fatal("the second run never reached the offset it dies at")
	}
	stop()
	for p, offs := range second.handed {
		if offs[0] != afterFirst[p] {
			t.Errorf("partition %d: the second run started at %d, want %d", p, offs[0], afterFirst[p])
		}
	}
	stored, err := st.Positions(ctx, history.Name)
	if err != nil || stored[0] > second.stopAt {
		t.Fatalf("positions %v (%v) past the batch that was never written (offset %d)", stored, err, second.stopAt)
	}

	third := newRecorder(st)
	_, stop = f.run(t, ctx, st, third)
	waitPositions(t, ctx, st, f.ends())
	stop()

	for p, recs := range f.recs {
		var all []int64
		for _, r := range []*recorder{first, second, third} {
			all = append(all, r.handed[p]...)
		}
		for _, rec := range recs {
			n := 0
			for _, o := range all {
				if o == rec.Offset {
					n++
				}
			}
			switch {
			case n == 0:
				t.Errorf("partition %d offset %d never handled", p, rec.Offset)
			case n > 1 && rec.Offset < stored[p]:
				t.Errorf("partition %d offset %d handled %d times, below the stored position %d", p, rec.Offset, n, stored[p])
			}
		}
		if !slices.IsSorted(third.handed[p]) || len(third.handed[p]) > 0 && third.handed[p][0] != stored[p] {
			t.Errorf("partition %d: resumed at %v, want from %d", p, third.handed[p], stored[p])
		}
	}
	want := f.once(t)
	if got := digest(t, st); got != want {
		t.Fatalf("after the restart:\n%s\napplied once:\n%s", got, want)
	}

	// The operator's replay: reset, then run from the start of the log.
	if err := st.ResetProjection(ctx, history.Name); err != nil {
		t.Fatal(err)
	}
	replay := newRecorder(st)
	_, stop = f.run(t, ctx, st, replay)
	waitPositions(t, ctx, st, f.ends())
	stop()
	if got := digest(t, st); got != want {
		t.Fatalf("after the replay:\n%s\napplied once:\n%s", got, want)
	}
	for p, recs := range f.recs {
		if len(replay.handed[p]) != len(recs) {
			t.Errorf("replay handled %v of partition %d, want all %d records once", replay.handed[p], p, len(recs))
		}
	}
}

// TestRunHandlerError: while the handler fails, the runner writes no
// position and retries the same records after a Reset; once it succeeds
// every record is applied, once.
func TestRunHandlerError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t, ctx)
	st := storetest.OpenPebble(t)
	f.produce(t, ctx,
		domain.ChannelCreated{ChannelID: "c0", Kind: domain.KindGroup, CreatorID: "a", Members: []domain.UserID{"a", "b"}},
		msg("c0", 1, "a"), msg("c0", 2, "b"),
	)
	r := newRecorder(st)
	r.failing = 3
	var seen []map[int32]int64
	r.onFail = func() { // called by the runner's goroutine, between its batches
		pos, err := st.Positions(ctx, history.Name)
		if err != nil {
			t.Error(err)
		}
		seen = append(seen, pos)
	}
	_, stop := f.run(t, ctx, st, r)
	waitPositions(t, ctx, st, f.ends())
	stop()
	if len(seen) != 3 {
		t.Fatalf("%d failed calls, want 3", len(seen))
	}
	for i, pos := range seen {
		if len(pos) != 0 {
			t.Errorf("positions %v at failure %d, want none", pos, i)
		}
	}
	if r.resets < 3 {
		t.Errorf("%d resets after 3 failures", r.resets)
	}
	if want := []int64{0, 1, 2}; !reflect.DeepEqual(r.handed[0], want) {
		t.Errorf("handled %v, want %v", r.handed[0], want)
	}
	if got, want := digest(t, st), f.once(t); got != want {
		t.Fatalf("state:\n%s\nwant:\n%s", got, want)
	}
}

// fakeStore records the batches applied to it.
type fakeStore struct {
	applied []store.Batch
	pos     map[int32]int64
}

func (s *fakeStore) Apply(_ context.Context, b store.Batch) error {
	s.applied = append(s.applied, b)
	return nil
}

func (s *fakeStore) Positions(context.Context, string) (map[int32]int64, error) { return s.pos, nil }

// failOn is a Handler that fails on some partitions and otherwise
// adds one message per record.
type failOn map[int32]bool

func (h failOn) Handle(_ context.Context, p int32, recs []*kgo.Record, b *store.Batch) error {
	if h[p] {
		return errors.New("store down")
	}
	for _, r := range recs {
		b.Messages = append(b.Messages, store.Message{ChannelID: domain.ChannelID(fmt.Sprint(p)), Offset: r.Offset})
	}
	return nil
}

func (failOn) Reset() {}

func fetches(parts map[int32][]int64) kgo.Fetches {
	ft := kgo.FetchTopic{Topic: "t"}
	for _, p := range []int32{0, 1, 2} {
		offs, ok := parts[p]
		if !ok {
			continue
		}
		fp := kgo.FetchPartition{Partition: p}
		for _, o := range offs {
			fp.Records = append(fp.Records, &kgo.Record{Topic: "t", Partition: p, Offset: o})
		}
		ft.Partitions = append(ft.Partitions, fp)
	}
	return kgo.Fetches{{Topics: []kgo.FetchTopic{ft}}}
}

// TestApply: one fetch is one store batch whose positions are just past
// each partition's last record; a handler error on any partition writes
// nothing, not even the partitions handled before it.
func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		parts   map[int32][]int64
		fail    failOn
		wantErr bool
		want    []map[int32]int64 // positions of each batch applied
		msgs    int
	}{
		{"positions past the last record", map[int32][]int64{0: {3, 4, 5}, 2: {9}}, nil, false, []map[int32]int64{{0: 6, 2: 10}}, 4},
		{"empty partitions", map[int32][]int64{0: {}, 1: {7}}, nil, false, []map[int32]int64{{1: 8}}, 1},
		{"nothing fetched writes nothing", map[int32][]int64{0: {}}, nil, false, nil, 0},
		{"error on the first partition", map[int32][]int64{0: {1}, 1: {2}}, failOn{0: true}, true, nil, 0},
		{"error after a partition went well", map[int32][]int64{0: {1}, 1: {2}}, failOn{1: true}, true, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &fakeStore{}
			_, err := apply(context.Background(), "p", st, tt.fail, fetches(tt.parts), nil, nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			var got []map[int32]int64
			msgs := 0
			for _, b := range st.applied {
				if b.Projection != "p" {
					t.Errorf("batch of projection %q", b.Projection)
				}
				got = append(got, b.Positions)
				msgs += len(b.Messages)
			}
			if !reflect.DeepEqual(got, tt.want) || msgs != tt.msgs {
				t.Fatalf("applied positions %v with %d messages, want %v with %d", got, msgs, tt.want, tt.msgs)
			}
		})
	}
}

// TestWaitApplied: it returns once the partition's position is past the
// offset, and an unavailable error when the context ends first.
func TestWaitApplied(t *testing.T) {
	tests := []struct {
		name   string
		pos    map[int32]int64
		offset int64
		ok     bool
	}{
		{"applied", map[int32]int64{1: 6}, 5, true},
		{"position at the offset: not yet applied", map[int32]int64{1: 5}, 5, false},
		{"another partition", map[int32]int64{0: 100}, 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			err := WaitApplied(ctx, &fakeStore{pos: tt.pos}, "p", 1, tt.offset)
			if tt.ok != (err == nil) {
				t.Fatalf("err %v", err)
			}
			var de *domain.Error
			if !tt.ok && (!errors.As(err, &de) || de.Code != domain.CodeUnavailable) {
				t.Fatalf("err %v, want an unavailable domain error", err)
			}
		})
	}
}

func TestRunConfig(t *testing.T) {
	for _, cfg := range []Config{{Topic: "t"}, {Name: "p"}} {
		if err := Run(context.Background(), cfg, &fakeStore{}, failOn{}); err == nil {
			t.Errorf("Run(%+v) without error", cfg)
		}
	}
}

// forgetfulStore is the Pebble store as Cassandra behaves when it is killed
// -9 and restarted: its periodic commit log is replayed only up to its
// last sync marker (some 100 ms behind), so the last writes it
// acknowledged are gone after the restart. Armed, it acknowledges the next
// batch without keeping any of it, then fails the one after (the store is
// down), then works again.
type forgetfulStore struct {
	*pebblestore.Store
	mu      sync.Mutex
	armed   bool
	lost    []store.Batch
	failing int
}

func (s *forgetfulStore) Apply(ctx context.Context, b store.Batch) error {
	s.mu.Lock()
	switch {
	case s.armed:
		s.armed = false
		s.lost = append(s.lost, b)
		s.failing = 1
		s.mu.Unlock()
		return nil // acknowledged, then lost with the commit log's tail
	case s.failing > 0:
		s.failing--
		s.mu.Unlock()
		return domain.Errorf(domain.CodeUnavailable, "cassandra: connection closed")
	}
	s.mu.Unlock()
	return s.Store.Apply(ctx, b)
}

func (s *forgetfulStore) lostBatches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lost)
}

// TestRunStoreLostAcknowledgedBatch: the store acknowledges a batch and
// loses it in a restart (Cassandra killed -9 just after it), while the
// runner's fetch position has moved past it. The runner must not go on
// from its fetch position, leaving the lost message out of history below a
// later stored position for good (TestChaosServers: one acknowledged
// message in the log once, delivered everywhere, missing from history).
func TestRunStoreLostAcknowledgedBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t, ctx)
	pst := storetest.OpenPebble(t)
	st := &forgetfulStore{Store: pst}
	f.produce(t, ctx,
		domain.ChannelCreated{ChannelID: "c0", Kind: domain.KindGroup, CreatorID: "a", Members: []domain.UserID{"a", "b"}},
		msg("c0", 1, "a"),
	)
	h := history.New(st, domain.DefaultLimits(), nil)
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, Config{Name: history.Name, Topic: f.cfg.Topics().Channels, Log: f.cfg}, st, h)
	}()
	defer func() {
		rcancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitPositions(t, ctx, pst, f.ends())

	st.mu.Lock()
	st.armed = true
	st.mu.Unlock()
	f.produce(t, ctx, msg("c0", 2, "b")) // acknowledged by the store, then lost
	for st.lostBatches() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the message's batch never reached the store")
		case <-time.After(10 * time.Millisecond):
		}
	}
	f.produce(t, ctx, msg("c0", 3, "a"), msg("c0", 4, "b")) // after the store's restart
	waitPositions(t, ctx, pst, f.ends())
	if got, want := digest(t, pst), f.once(t); got != want {
		t.Fatalf("state:\n%s\nwant:\n%s", got, want)
	}
}

// blockingStore holds every Apply until release is closed, telling
// applying when the first one begins.
type blockingStore struct {
	*pebblestore.Store
	applying chan struct{}
	release  chan struct{}
	once     sync.Once
}

func (s *blockingStore) Apply(ctx context.Context, b store.Batch) error {
	s.once.Do(func() { close(s.applying) })
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.Apply(ctx, b)
}

// TestLagWhileApplying checks that a projection's lag counts the records
// of the batch it is applying: they are ahead of its position until the
// batch is written. A projection that fetched the whole topic read as 0
// behind while it applied it. Max, /readyz's, stays as of the last commit.
func TestLagWhileApplying(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t, ctx)
	f.produce(t, ctx,
		domain.ChannelCreated{ChannelID: "c0", Kind: domain.KindGroup, CreatorID: "a", Members: []domain.UserID{"a", "b"}},
		msg("c0", 1, "a"), msg("c0", 2, "b"), msg("c0", 3, "a"),
	)
	st := &blockingStore{Store: storetest.OpenPebble(t), applying: make(chan struct{}), release: make(chan struct{})}
	lag := eventlog.NewLag(prometheus.NewRegistry())
	cfg := f.cfg
	cfg.Lag = lag
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, Config{Name: history.Name, Topic: cfg.Topics().Channels, Log: cfg}, st, newRecorder(st.Store))
	}()
	select {
	case <-st.applying:
	case <-ctx.Done():
		t.Fatal("no Apply")
	}
	if got := lag.Of(history.Name); got < 1 {
		t.Errorf("lag %d while the first batch is applied, want its records (1 to 4)", got)
	}
	if got := lag.Max(); got != 0 {
		t.Errorf("Max %d while the first batch is applied, want 0: /readyz's lag is as of the last commit", got)
	}
	close(st.release)
	waitPositions(t, ctx, st.Store, f.ends())
	for lag.Of(history.Name) != 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if got := lag.Of(history.Name); got != 0 {
		t.Errorf("lag %d once every record is applied, want 0", got)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
