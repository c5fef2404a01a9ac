package ws

import (
	"sync"

	"github.com/evchat/evchat/domain"
)

// sends carries out one connection's send frames off its read loop, so
// that a send that waits (for the sends processor's answer, see
// gateway/chat) holds up only the later sends to its channel,
// never the connection's other frames or its sends to other channels.
//
// Sends to one channel are chained: each starts once the one before it is
// in the log (or has ended), so they reach the log, and so the channel, in
// the order the client sent them, while the sends processor's answers to
// them are still on their way. At most
// cap(slots) sends are in flight, counting those waiting for their turn in
// a chain; when that many are, start waits (the read loop stops reading:
// back-pressure) rather than dropping a frame.
//
// The connection's handler calls start from its read loop only (the order
// of the calls is the order of the frames) and wait before it returns:
// every goroutine a sends starts has ended by then.
type sends struct {
	slots chan struct{}
	wg    sync.WaitGroup

	mu    sync.Mutex                         // guards tails; taken alone, nothing is taken under it
	tails map[domain.ChannelID]chan struct{} // closed when the last send started to the channel ends
}

func newSends(inFlight int) *sends {
	return &sends{slots: make(chan struct{}, max(1, inFlight)), tails: map[domain.ChannelID]chan struct{}{}}
}

// start runs fn in a goroutine of its own once every send to ch started
// before it has let the next one go: called the next func it was given
// (its request is in the log, whose order the sends processor keeps), or
// ended. It first waits for a free slot, and returns false,
// starting nothing, if done closes meanwhile (the connection is closing;
// the client resends what was not acknowledged).
//
// A send that has started is carried out even when the connection closes
// before its turn: the client may have sent it and gone at once, as it may
// with any frame, and expects it to count (a resend then finds it).
func (s *sends) start(done <-chan struct{}, ch domain.ChannelID, fn func(next func())) bool {
	select {
	case s.slots <- struct{}{}:
	case <-done:
		return false
	}
	mine := make(chan struct{})
	s.mu.Lock()
	prev := s.tails[ch]
	s.tails[ch] = mine
	s.mu.Unlock()
	var once sync.Once
	next := func() {
		once.Do(func() {
			s.mu.Lock()
			if s.tails[ch] == mine {
				delete(s.tails, ch)
			}
			s.mu.Unlock()
			close(mine)
		})
	}
	s.wg.Go(func() {
		defer func() {
			next()
			<-s.slots
		}()
		if prev != nil {
			<-prev
		}
		fn(next)
	})
	return true
}

// wait waits for every send started to end.
func (s *sends) wait() { s.wg.Wait() }
