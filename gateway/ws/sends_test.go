package ws

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/evchat/evchat/domain"
)

// record is a log of what ran, in the order it happened.
type record struct {
	mu  sync.Mutex
	log []string
}

func (r *record) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, s)
}

func (r *record) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

// TestSendsChainPerChannel: a send that blocks holds up the later sends to
// its channel, which then run in the order they were started, and nothing
// else.
func TestSendsChainPerChannel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSends(8)
		done := make(chan struct{})
		var r record
		gate := make(chan struct{})
		run := func(name string, wait <-chan struct{}) func(func()) {
			return func(func()) {
				r.add(name + " start")
				if wait != nil {
					<-wait
				}
				r.add(name + " end")
			}
		}
		s.start(done, "g1", run("a1", gate))
		s.start(done, "g1", run("a2", nil))
		s.start(done, "g2", run("b1", nil))
		s.start(done, "g1", run("a3", nil))
		synctest.Wait()
		blocked := r.get()
		close(gate)
		s.wait()
		slices.Sort(blocked) // a1 and b1 run side by side, in either order
		if want := []string{"a1 start", "b1 end", "b1 start"}; !slices.Equal(blocked, want) {
			t.Errorf("while a1 blocks: %v, want %v", blocked, want)
		}
		got := slices.DeleteFunc(r.get(), func(s string) bool { return s[0] == 'b' })
		if want := []string{"a1 start", "a1 end", "a2 start", "a2 end", "a3 start", "a3 end"}; !slices.Equal(got, want) {
			t.Fatalf("sends to g1: %v, want %v", got, want)
		}
		if len(s.tails) != 0 {
			t.Errorf("%d chains left after every send ended", len(s.tails))
		}
	})
}

// TestSendsNextStartsEarly: a send that lets the next one go (its request
// is in the log) before it ends lets the next send to its channel start,
// in order, while it still waits for its answer.
func TestSendsNextStartsEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSends(8)
		done := make(chan struct{})
		var r record
		answer := make(chan struct{})
		s.start(done, "g1", func(next func()) {
			r.add("a1 appended")
			next()
			next() // twice is once
			<-answer
			r.add("a1 answered")
		})
		s.start(done, "g1", func(next func()) { r.add("a2 appended"); next() })
		s.start(done, "g1", func(func()) { r.add("a3 ended") })
		synctest.Wait()
		if got, want := r.get(), []string{"a1 appended", "a2 appended", "a3 ended"}; !slices.Equal(got, want) {
			t.Fatalf("while a1 waits for its answer: %v, want %v", got, want)
		}
		close(answer)
		s.wait()
		if len(s.tails) != 0 {
			t.Errorf("%d chains left after every send ended", len(s.tails))
		}
	})
}

// TestSendsBackPressure: with every slot taken (a send that blocks and one
// waiting behind it), start waits for a slot instead of dropping the send;
// a closing connection stops the wait.
func TestSendsBackPressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSends(2)
		done := make(chan struct{})
		gate := make(chan struct{})
		var r record
		s.start(done, "g1", func(func()) { <-gate; r.add("a1") })
		s.start(done, "g1", func(func()) { r.add("a2") })
		started := make(chan bool)
		go func() { started <- s.start(done, "g2", func(func()) { r.add("b1") }) }()
		synctest.Wait()
		select {
		case <-started:
			t.Fatal("a third send started with two in flight")
		default:
		}
		close(gate)
		if !<-started {
			t.Fatal("start refused a send with the connection open")
		}
		s.wait()
		if got := r.get(); len(got) != 3 || got[0] != "a1" || !slices.Contains(got, "a2") || !slices.Contains(got, "b1") {
			t.Fatalf("ran %v", got)
		}

		// Full again, and the connection closes while the read loop waits.
		gate = make(chan struct{})
		s.start(done, "g1", func(func()) { <-gate })
		s.start(done, "g1", func(func()) {})
		go func() {
			started <- s.start(done, "g2", func(func()) { t.Error("a send started after the connection closed") })
		}()
		synctest.Wait()
		close(done)
		if <-started {
			t.Fatal("start took a send after the connection closed")
		}
		close(gate)
		s.wait()
	})
}

// TestSendsRunAfterClose: sends taken before the connection closed are
// carried out, in order, even those still waiting for their turn: the
// client may have sent them and gone.
func TestSendsRunAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSends(4)
		done := make(chan struct{})
		gate := make(chan struct{})
		var r record
		s.start(done, domain.ChannelID("g1"), func(func()) { <-gate; r.add("a1") })
		s.start(done, domain.ChannelID("g1"), func(func()) { r.add("a2") })
		close(done)
		close(gate)
		s.wait()
		if got := r.get(); !slices.Equal(got, []string{"a1", "a2"}) {
			t.Fatalf("ran %v, want [a1 a2]", got)
		}
	})
}
