package eventlog

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/net/nettest"

	"github.com/evchat/evchat/domain"
)

// TestPipe holds the in-memory connection to what net.Conn promises
// (golang.org/x/net/nettest: reads and writes in both directions,
// deadlines in the past, present and future, Close unblocking both ends,
// concurrent use), as kgo and kfake use it.
func TestPipe(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2 = pipe(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9092})
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

// TestEmbeddedInMemory: a client of the broker's process that dials
// through Embedded.Dial (Config.Dial, as the node's clients do) reaches
// the broker in memory, and appends and reads there; a client without it
// (another process, a tool) still reaches it over TCP.
func TestEmbeddedInMemory(t *testing.T) {
	emb, err := StartEmbedded(t.TempDir(), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mem := Config{Brokers: emb.Addrs(), Dial: emb.Dial}
	if err := EnsureTopics(ctx, mem); err != nil {
		t.Fatal(err)
	}
	app, err := NewAppender(mem)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	topic := mem.Topics().Channels
	for i := range 20 {
		ev := domain.MessageSent{ChannelID: "g1", MessageID: domain.MessageID(i + 1), SenderID: "u", DeviceID: "d", ClientMsgID: fmt.Sprint(i), Text: "hello"}
		if _, err := app.Append(ctx, topic, "g1", ev, domain.Meta{EventID: fmt.Sprint(i), Time: time.UnixMilli(1).UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	if n := emb.ln.tcpConns.Load(); n != 0 {
		t.Fatalf("%d TCP connections from clients that dial in memory", n)
	}
	if n := emb.ln.memConns.Load(); n == 0 {
		t.Fatal("no connection in memory")
	}
	read := func(cfg Config) int {
		n := 0
		if _, err := ReadToEnd(ctx, cfg, topic, ReadRange{}, func(*kgo.Record) { n++ }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := read(mem); n != 20 {
		t.Fatalf("read %d records in memory, want 20", n)
	}
	if n := read(Config{Brokers: emb.Addrs()}); n != 20 {
		t.Fatalf("read %d records over TCP, want 20", n)
	}
	if emb.ln.tcpConns.Load() == 0 {
		t.Fatal("the TCP client did not connect over TCP")
	}
}
