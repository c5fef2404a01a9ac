package ws

import (
	"testing"

	"github.com/evchat/evchat/domain"
)

// BenchmarkConnOfferLive measures a live entry handed to a connection
// that takes it (the tailer's path per connection), its frame already
// encoded, the writer draining the queue as it goes.
func BenchmarkConnOfferLive(b *testing.B) {
	c := benchConn()
	f := outFrame{head: make([]byte, 100)}
	m := domain.InboxMessage{Text: "hello"}
	b.ReportAllocs()
	for i := range b.N {
		m.MessageID = domain.MessageID(i + 1)
		c.offer(int64(i), m, f)
		if i%64 == 63 {
			for _, f := range c.q.take() {
				c.q.written(f)
			}
		}
	}
}

func benchConn() *conn {
	return &conn{q: newSendQueue(1024, 2<<20), done: make(chan struct{}), behind: func() {}, h: newHandoff(10000, 2<<20)}
}
