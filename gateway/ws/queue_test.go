package ws

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
)

func frameOf(n int) outFrame { return outFrame{head: make([]byte, n)} }

func TestSendQueueBounds(t *testing.T) {
	for _, tc := range []struct {
		name                string
		maxFrames, maxBytes int
		push                []int // frame sizes
		want                []bool
	}{
		{"frames", 3, 1000, []int{1, 1, 1, 1}, []bool{true, true, true, false}},
		{"bytes", 100, 100, []int{40, 40, 21, 20}, []bool{true, true, false, true}},
		{"one frame larger than the bound goes alone", 100, 100, []int{500, 1}, []bool{true, false}},
		{"but not behind another", 100, 100, []int{1, 500}, []bool{true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newSendQueue(tc.maxFrames, tc.maxBytes)
			for i, n := range tc.push {
				if got := q.push(frameOf(n)); got != tc.want[i] {
					t.Fatalf("push %d of %d bytes: %v, want %v", i, n, got, tc.want[i])
				}
			}
		})
	}
}

func TestSendQueueCountsWhatIsBeingWritten(t *testing.T) {
	q := newSendQueue(10, 100)
	q.push(frameOf(30))
	q.push(frameOf(30))
	batch := q.take()
	if len(batch) != 2 {
		t.Fatalf("took %d frames", len(batch))
	}
	if f, b := q.queued(); f != 2 || b != 60 {
		t.Fatalf("queued while written: %d frames %d bytes, want 2, 60", f, b)
	}
	if !q.halfFull() {
		t.Fatal("60 of 100 bytes: want half full")
	}
	if q.push(frameOf(41)) {
		t.Fatal("frames being written left no room for 41 bytes")
	}
	if q.roomFor(1, 1) {
		t.Fatal("room in half the queue while 60 of 100 bytes are taken")
	}
	q.written(batch[0])
	select {
	case <-q.drained:
	default:
		t.Fatal("no drained signal")
	}
	q.written(batch[1])
	if f, b := q.queued(); f != 0 || b != 0 {
		t.Fatalf("after writing: %d frames %d bytes", f, b)
	}
	if !q.roomFor(1000, 1<<20) {
		t.Fatal("an empty queue has room for anything")
	}
	if !q.push(frameOf(100)) {
		t.Fatal("a frame of the whole bound refused by an empty queue")
	}
}

func TestBodyCacheSharesAndBounds(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	msg := func(id int, text string) domain.InboxMessage {
		return domain.InboxMessage{UserID: "u", ChannelID: "g1", MessageID: domain.MessageID(id), SenderID: "s", Text: text, SentAt: at}
	}
	bc := newBodyCache(2, 1000)
	big := strings.Repeat("<", 300)
	a, err := bc.messageFrame(1, 7, msg(1, big))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := bc.messageFrame(1, 9, msg(1, big))
	if &a.body[0] != &b.body[0] {
		t.Fatal("two frames of one message do not share the body")
	}
	// The frame is one JSON object with the recipient's position, and `<`
	// takes one byte.
	var got ServerFrame
	if err := json.Unmarshal(append(append([]byte{}, b.head...), b.body...), &got); err != nil {
		t.Fatalf("frame %s%s: %v", b.head, b.body, err)
	}
	if got.Type != TypeMessage || *got.Position != 9 || *got.Epoch != 1 || got.Text != big || got.MessageID != 1 || !got.SentAt.Equal(at) {
		t.Fatalf("decoded %+v", got)
	}
	if b.size() > len(big)+200 {
		t.Fatalf("a frame of %d `<` takes %d bytes: escaped", len(big), b.size())
	}
	// Bounded: a third message evicts the first; too large a body is not kept.
	bc.messageFrame(1, 1, msg(2, "x"))
	bc.messageFrame(1, 1, msg(3, big))
	if _, ok := bc.byID[1]; ok || len(bc.byID) != 2 {
		t.Fatalf("kept %d bodies, message 1 among them: %v", len(bc.byID), ok)
	}
	bc.messageFrame(1, 1, msg(4, strings.Repeat("y", 2000)))
	if _, ok := bc.byID[4]; ok || bc.bytes > 1000 {
		t.Fatalf("kept a body over the byte bound; %d bytes", bc.bytes)
	}
}

func TestHubCaps(t *testing.T) {
	h := NewHub()
	first, err := h.reserve("u", "d1", 3, 2)
	if err != nil || !first {
		t.Fatalf("first: %v %v", first, err)
	}
	if first, err := h.reserve("u", "d1", 3, 2); err != nil || first {
		t.Fatalf("second of a device: first=%v %v", first, err)
	}
	if _, err := h.reserve("u", "d1", 3, 2); domain.CodeOf(err) != domain.CodeTooManyConnections {
		t.Fatalf("third of a device (cap 2): %v", err)
	}
	if _, err := h.reserve("u", "d2", 3, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := h.reserve("u", "d3", 3, 2); domain.CodeOf(err) != domain.CodeTooManyConnections {
		t.Fatalf("fourth of a user (cap 3): %v", err)
	}
	if _, err := h.reserve("v", "d1", 3, 2); err != nil {
		t.Fatalf("another user is capped by u's connections: %v", err)
	}
	if got := len(h.devices()); got != 3 {
		t.Fatalf("%d devices, want 3 (u/d1, u/d2, v/d1): one each however many connections", got)
	}
	h.release("u", "d1")
	if _, err := h.reserve("u", "d3", 3, 2); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	for _, d := range []domain.DeviceID{"d1", "d2", "d3"} {
		h.release("u", d)
	}
	h.release("v", "d1")
	if got := len(h.devices()); got != 0 {
		t.Fatalf("%d devices after every release", got)
	}
}
