package ws

import (
	"fmt"
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

// BenchmarkTailerUserConns measures the tailer's lookup of a recipient's
// connections, twice per inbox entry (whether to resolve its text, then
// to offer it): in one reused slice, no allocation.
func BenchmarkTailerUserConns(b *testing.B) {
	h := NewHub()
	for i := range 500 {
		h.add(&conn{user: domain.UserID(fmt.Sprint("u", i))})
	}
	t := &Tailer{hub: h}
	users := make([]domain.UserID, 500)
	for i := range users {
		users[i] = domain.UserID(fmt.Sprint("u", i))
	}
	b.ReportAllocs()
	for i := range b.N {
		if len(t.userConns(users[i%len(users)])) != 1 {
			b.Fatal("a user's connection not found")
		}
	}
}
