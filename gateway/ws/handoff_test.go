package ws

import (
	"slices"
	"strings"
	"testing"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// The hand-off's rules (see handoff), table by table, without a network or
// a store: Server.sync drives the same methods in the same order as play.

func entry(offset int64, id domain.MessageID, text string) store.InboxEntry {
	return store.InboxEntry{Offset: offset, Message: domain.InboxMessage{MessageID: id, Text: text}}
}

// partition is one user's entries in an inbox partition, in offset order
// (other users' entries leave gaps between the offsets).
type partition []store.InboxEntry

// after returns the store's answer to a read of the user's inbox after an
// offset: the next limit entries, whether or not the projection's
// position has passed them (the store may be ahead of the tailer).
func (p partition) after(after int64, limit int) []store.InboxEntry {
	i, _ := slices.BinarySearchFunc(p, after+1, func(e store.InboxEntry, o int64) int { return int(e.Offset - o) })
	return p[i:min(len(p), i+limit)]
}

// round describes one sync as the device and the partition see it.
type round struct {
	position int64 // the device's position
	point    int64 // the tailer's point T when the sync begins
	stored   int64 // the inbox projection's position at the first store read; T from the second on
	page     int   // the store's page size
	maxBuf   int   // the most live entries buffered
	// arrive[i] is the moment the i-th entry at or past T arrives live:
	// moment k < reads is before the k-th store read, then before each
	// step of the drain; past every moment, after the sync.
	arrive []int
	// had: the messages the device had in an older epoch (a carry-over:
	// the sync starts at -1 and passes over these).
	had []domain.MessageID
}

// play runs a sync of r over p as Server.syncRound and fromStore do, and
// returns the offsets that went to the device, in order, and how many
// rounds it took.
func play(t *testing.T, p partition, r round) (got []int64, rounds int) {
	t.Helper()
	h := newHandoff(r.maxBuf, 1<<20)
	if r.had != nil {
		h.had = carried(slices.Clone(r.had))
	}
	take := func(es []pending) {
		for _, e := range es {
			if h.take(e.offset, e.msg.MessageID) {
				got = append(got, e.offset)
			}
		}
	}
	var live partition
	for _, e := range p {
		if e.Offset >= r.point {
			live = append(live, e)
		}
	}
	offered, moment := 0, 0
	point := r.point // the tailer's point: past every entry offered
	offer := func(upto int) {
		for ; offered < len(live) && (offered >= len(r.arrive) || r.arrive[offered] <= upto); offered++ {
			e := live[offered]
			point = e.Offset + 1
			switch h.offer(e.Offset, e.Message, func() bool { return false }) {
			case offerDeliver:
				take([]pending{{e.Offset, e.Message}})
			case offerBehind:
				t.Fatalf("offer of %d: behind with a queue never full", e.Offset)
			}
		}
	}
	position, stored := r.position, r.stored
	for {
		rounds++
		if rounds > 10 {
			t.Fatalf("more than 10 rounds")
		}
		h.begin(position)
		tp := point
		for after := position; after+1 < tp; {
			offer(moment)
			moment++
			if upto := min(stored, tp); after+1 < upto {
				var ps []pending
				ps, after = storePage(p.after(after, r.page), upto, 1<<20, r.page)
				take(ps)
			}
			stored = tp // the projection moves on
		}
		for {
			offer(moment)
			moment++
			batch, step := h.next()
			if step == stepDeliver {
				take(batch)
				continue
			}
			if step == stepAgain {
				position, stored = h.last, point // what was dropped is in the store by now
			}
			break
		}
		if h.syncing {
			continue
		}
		offer(1 << 30) // the rest arrives live, after the sync
		if h.last != p[len(p)-1].Offset {
			t.Fatalf("position %d after the sync, want %d", h.last, p[len(p)-1].Offset)
		}
		return got, rounds
	}
}

// want returns the offsets past position.
func (p partition) want(position int64) []int64 {
	var out []int64
	for _, e := range p {
		if e.Offset > position {
			out = append(out, e.Offset)
		}
	}
	return out
}

func TestHandoffSync(t *testing.T) {
	// The user's entries at these offsets of the partition; every text
	// resolved, every message once.
	p := partition{entry(0, 1, "a"), entry(2, 2, "b"), entry(3, 3, "c"), entry(5, 4, "d"), entry(7, 5, "e"), entry(8, 6, "f")}
	tests := []struct {
		name   string
		r      round
		rounds int
	}{
		{"nothing missed, nothing live", round{position: 8, point: 9, stored: 9, page: 500, maxBuf: 100}, 1},
		{"everything from the store", round{position: -1, point: 9, stored: 9, page: 500, maxBuf: 100}, 1},
		{"everything live", round{position: -1, point: 0, stored: 0, page: 500, maxBuf: 100}, 1},
		{"the hand-off at an entry of the user", round{position: 0, point: 3, stored: 3, page: 500, maxBuf: 100}, 1},
		{"the hand-off between two entries", round{position: 0, point: 4, stored: 4, page: 500, maxBuf: 100}, 1},
		{"live entries arrive before the first read", round{position: -1, point: 4, stored: 4, page: 500, maxBuf: 100, arrive: []int{0, 0, 0}}, 1},
		{"live entries arrive during the drain", round{position: -1, point: 4, stored: 4, page: 500, maxBuf: 100, arrive: []int{1, 2, 3}}, 1},
		{"pages of one entry", round{position: -1, point: 6, stored: 6, page: 1, maxBuf: 100, arrive: []int{0, 2}}, 1},
		{"the projection behind the tailer's point", round{position: -1, point: 8, stored: 3, page: 500, maxBuf: 100, arrive: []int{1}}, 1},
		{"the projection behind, at an entry of the user", round{position: -1, point: 8, stored: 2, page: 2, maxBuf: 100}, 1},
		{"the projection not started", round{position: 2, point: 8, stored: -1, page: 500, maxBuf: 100}, 1},
		{"too many live entries: round again", round{position: -1, point: 3, stored: 3, page: 500, maxBuf: 2, arrive: []int{0, 0, 0, 0}}, 2},
		{"too many live entries, with the store behind", round{position: 0, point: 5, stored: 3, page: 1, maxBuf: 1, arrive: []int{0, 1, 1}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rounds := play(t, p, tt.r)
			if want := p.want(tt.r.position); !slices.Equal(got, want) {
				t.Errorf("delivered %v, want %v", got, want)
			}
			if rounds != tt.rounds {
				t.Errorf("%d rounds, want %d", rounds, tt.rounds)
			}
		})
	}
}

// TestHandoffCarryOver: a device that had some messages in an older epoch
// (in another order there: the new epoch is a rebuild) gets every other
// entry of the current one, once, whenever the live ones arrive, and ends
// at the current epoch's last position.
func TestHandoffCarryOver(t *testing.T) {
	p := partition{entry(0, 3, "c"), entry(1, 1, "a"), entry(4, 2, "b"), entry(5, 6, "f"), entry(6, 4, "d"), entry(9, 5, "e")}
	tests := []struct {
		name string
		had  []domain.MessageID
		r    round
		want []int64
	}{
		{"it had nothing of them", []domain.MessageID{99}, round{point: 10, stored: 10, page: 500, maxBuf: 100}, []int64{0, 1, 4, 5, 6, 9}},
		{"it had the first three", []domain.MessageID{1, 2, 3}, round{point: 10, stored: 10, page: 500, maxBuf: 100}, []int64{5, 6, 9}},
		{"it had some in between", []domain.MessageID{1, 6, 5}, round{point: 10, stored: 10, page: 2, maxBuf: 100}, []int64{0, 4, 6}},
		{"it had them all", []domain.MessageID{1, 2, 3, 4, 5, 6}, round{point: 10, stored: 10, page: 1, maxBuf: 100}, nil},
		{"some arrive live", []domain.MessageID{1, 2, 3}, round{point: 5, stored: 5, page: 500, maxBuf: 100, arrive: []int{0, 1, 9}}, []int64{5, 6, 9}},
		{"the buffer overflows", []domain.MessageID{2, 4}, round{point: 1, stored: 1, page: 1, maxBuf: 1, arrive: []int{0, 0, 0, 0, 0}}, []int64{0, 1, 5, 9}},
		// The rebuild's fan-out lags the old epoch's at the switch: the
		// new epoch's entries of messages the device had live in the old
		// one arrive live after the sync.
		{"what it had arrives live after the sync", []domain.MessageID{4, 5}, round{point: 5, stored: 5, page: 500, maxBuf: 100, arrive: []int{9, 9, 9}}, []int64{0, 1, 4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.position, tt.r.had = -1, tt.had
			if got, _ := play(t, p, tt.r); !slices.Equal(got, tt.want) {
				t.Errorf("delivered %v, want %v", got, tt.want)
			}
		})
	}
}

// TestHandoffSyncEveryInterleaving plays every position, tailer's point,
// projection position, page size, buffer bound and moment of arrival of
// the live entries on a small partition: every entry past the position
// arrives once, in order, whatever the interleaving.
func TestHandoffSyncEveryInterleaving(t *testing.T) {
	p := partition{entry(0, 1, "a"), entry(2, 2, "b"), entry(3, 3, "c"), entry(5, 4, "d"), entry(6, 5, "e")}
	end := int64(7)
	runs := 0
	for position := int64(-1); position < end; position++ {
		for point := position + 1; point <= end; point++ {
			for stored := position; stored <= point; stored++ {
				for _, page := range []int{1, 2, 500} {
					for _, maxBuf := range []int{1, 2, 100} {
						n := len(p.want(point - 1))
						for _, arrive := range arrivals(n, 4) {
							r := round{position: position, point: point, stored: stored, page: page, maxBuf: maxBuf, arrive: arrive}
							got, _ := play(t, p, r)
							if want := p.want(position); !slices.Equal(got, want) {
								t.Fatalf("%+v: delivered %v, want %v", r, got, want)
							}
							runs++
						}
					}
				}
			}
		}
	}
	t.Logf("%d interleavings", runs)
}

// arrivals returns every non-decreasing assignment of n live entries to
// moments 0 to m.
func arrivals(n, m int) [][]int {
	if n == 0 {
		return [][]int{nil}
	}
	var out [][]int
	for _, rest := range arrivals(n-1, m) {
		from := 0
		if len(rest) > 0 {
			from = rest[len(rest)-1]
		}
		for k := from; k <= m; k++ {
			out = append(out, append(slices.Clone(rest), k))
		}
	}
	return out
}

func TestHandoffConnect(t *testing.T) {
	e := func(o int64) domain.InboxMessage {
		return domain.InboxMessage{MessageID: domain.MessageID(o + 100), Text: "x"}
	}
	tests := []struct {
		name   string
		point  int64 // the log's end when the device connected
		resume bool
		offers []int64 // the tailer's offers, in order (it may be behind the end)
		want   []int64 // delivered live
		buf    int     // waiting for the sync
	}{
		{"live from the end on", 5, false, []int64{5, 6}, []int64{5, 6}, 0},
		{"the tailer behind the end: nothing older", 5, false, []int64{3, 4, 5, 6}, []int64{5, 6}, 0},
		{"an empty partition", 0, false, []int64{0, 1}, []int64{0, 1}, 0},
		{"resuming: everything waits for the sync", 5, true, []int64{4, 5, 6}, nil, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandoff(100, 1<<20)
			h.connect(tt.point, tt.resume)
			var got []int64
			for _, o := range tt.offers {
				if h.offer(o, e(o), func() bool { return false }) == offerDeliver && h.take(o, e(o).MessageID) {
					got = append(got, o)
				}
			}
			if !slices.Equal(got, tt.want) || len(h.buf) != tt.buf {
				t.Errorf("delivered %v with %d buffered, want %v with %d", got, len(h.buf), tt.want, tt.buf)
			}
		})
	}
}

func TestHandoffOffer(t *testing.T) {
	text := domain.InboxMessage{MessageID: 1, Text: "xyz"}
	noText := domain.InboxMessage{MessageID: 1, ChannelID: "c"}
	tests := []struct {
		name     string
		syncing  bool
		dropping bool
		buffered int // entries already waiting
		m        domain.InboxMessage
		halfFull bool
		want     offerAction
		// after the offer
		dropsNext bool
		buf       int
	}{
		{"delivered", false, false, 0, text, false, offerDeliver, false, 0},
		{"a slow client catches up", false, false, 0, text, true, offerBehind, true, 0},
		{"without its text: from the store", false, false, 0, noText, false, offerBehind, true, 0},
		{"buffered during a sync", true, false, 0, text, true, offerNone, false, 1},
		{"the buffer's entries are full: dropped", true, false, 2, text, false, offerNone, true, 0},
		{"without its text during a sync: dropped", true, false, 0, noText, false, offerNone, true, 0},
		{"while catching up: dropped", true, true, 0, text, false, offerNone, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandoff(2, 1<<20)
			h.syncing, h.dropping = tt.syncing, tt.dropping
			for i := range tt.buffered {
				h.buf = append(h.buf, pending{int64(i), text})
			}
			asked := false
			got := h.offer(10, tt.m, func() bool { asked = true; return tt.halfFull })
			if got != tt.want || h.takesLive() == tt.dropsNext || len(h.buf) != tt.buf {
				t.Errorf("offer: %d, takes live %v, %d buffered; want %d, %v, %d", got, h.takesLive(), len(h.buf), tt.want, !tt.dropsNext, tt.buf)
			}
			if asked && (tt.syncing || tt.dropping) {
				t.Errorf("asked for the queue's state while syncing")
			}
		})
	}
	t.Run("the buffer's bytes are full: dropped", func(t *testing.T) {
		h := newHandoff(100, 5)
		h.begin(-1)
		h.offer(0, text, nil)
		h.offer(1, text, nil) // 6 bytes > 5
		if _, step := h.next(); step != stepAgain {
			t.Errorf("step %d, want stepAgain", step)
		}
	})
	t.Run("a catch-up takes live entries again once synced", func(t *testing.T) {
		h := newHandoff(100, 1<<20)
		h.offer(0, text, func() bool { return true })
		h.begin(-1)
		if !h.takesLive() {
			t.Fatal("a round does not take live entries")
		}
		if _, step := h.next(); step != stepSynced || h.syncing {
			t.Errorf("step %d, syncing %v; want stepSynced, false", step, h.syncing)
		}
		if h.offer(1, text, func() bool { return false }) != offerDeliver {
			t.Error("not delivered live after the catch-up")
		}
	})
}

func TestHandoffTake(t *testing.T) {
	type try struct {
		offset int64
		id     domain.MessageID
		want   bool
	}
	tests := []struct {
		name  string
		last  int64
		had   []domain.MessageID
		tries []try
		last2 int64
	}{
		{"past the position", 4, nil, []try{{5, 1, true}, {7, 2, true}}, 7},
		{"at or before the position", 4, nil, []try{{4, 1, false}, {3, 2, false}}, 4},
		{"a second copy of a message", -1, nil, []try{{0, 1, true}, {1, 1, false}, {2, 2, true}}, 2},
		{"carried over: what the device had is passed over", -1, []domain.MessageID{7, 9},
			[]try{{0, 9, false}, {1, 8, true}, {2, 7, false}, {3, 6, true}}, 3},
		{"carried over, the last had: the position moves past it", -1, []domain.MessageID{7}, []try{{0, 8, true}, {1, 7, false}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandoff(100, 1<<20)
			h.last = tt.last
			if tt.had != nil {
				h.had = carried(slices.Clone(tt.had))
			}
			for _, x := range tt.tries {
				if got := h.take(x.offset, x.id); got != x.want {
					t.Errorf("take(%d, %d) = %v, want %v", x.offset, x.id, got, x.want)
				}
			}
			if h.last != tt.last2 {
				t.Errorf("position %d, want %d", h.last, tt.last2)
			}
		})
	}
}

func TestStorePage(t *testing.T) {
	p := partition{entry(1, 1, "aaa"), entry(2, 2, "bbb"), entry(4, 3, "ccc"), entry(5, 4, "ddd")}
	tests := []struct {
		name     string
		es       []store.InboxEntry
		upto     int64
		maxBytes int
		page     int
		want     []int64
		next     int64
	}{
		{"all below upto", p, 6, 100, 500, []int64{1, 2, 4, 5}, 5},
		{"none stored: on to upto", nil, 6, 100, 500, nil, 5},
		{"cut at upto", p, 4, 100, 500, []int64{1, 2}, 3},
		{"cut at upto, past the last entry below it", p, 5, 100, 500, []int64{1, 2, 4}, 4},
		{"a full page: on from its last", p[:2], 6, 100, 2, []int64{1, 2}, 2},
		{"a full page cut at upto", p[:2], 2, 100, 2, []int64{1}, 1},
		{"the bytes run out", p, 6, 7, 500, []int64{1, 2}, 2},
		{"one entry larger than the bound", p, 6, 2, 500, []int64{1}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, next := storePage(tt.es, tt.upto, tt.maxBytes, tt.page)
			var got []int64
			for _, x := range ps {
				got = append(got, x.offset)
			}
			if !slices.Equal(got, tt.want) || next != tt.next {
				t.Errorf("picked %v, next %d; want %v, %d", got, next, tt.want, tt.next)
			}
		})
	}
}

func TestHandoffFail(t *testing.T) {
	h := newHandoff(100, 1<<20)
	h.begin(-1)
	h.offer(0, domain.InboxMessage{MessageID: 1, Text: strings.Repeat("x", 10)}, nil)
	h.fail()
	if len(h.buf) != 0 || h.bufBytes != 0 {
		t.Errorf("after fail: %d buffered, %d bytes", len(h.buf), h.bufBytes)
	}
}
