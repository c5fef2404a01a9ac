package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/evchat/evchat/domain"
)

// encodeFrame encodes a frame other than a message. HTML characters are
// not escaped: `<` stays one byte, not six (\u003c), so a text of 100,000
// of them is a 100 KB frame, not a 600 KB one.
func encodeFrame(f ServerFrame) (outFrame, error) {
	b, err := marshal(f)
	return outFrame{head: b}, err
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// messageHead is the part of a message frame that differs per recipient:
// its inbox epoch and position.
func messageHead(epoch int32, offset int64) []byte {
	b := make([]byte, 0, 64)
	b = append(b, `{"type":"message","epoch":`...)
	b = strconv.AppendInt(b, int64(epoch), 10)
	b = append(b, `,"position":`...)
	b = strconv.AppendInt(b, offset, 10)
	return append(b, ',')
}

// messageBody is the rest of a message frame, the same for every recipient.
type messageBody struct {
	ChannelID domain.ChannelID `json:"channel_id"`
	MessageID domain.MessageID `json:"message_id"`
	SenderID  domain.UserID    `json:"sender_id"`
	Text      string           `json:"text"`
	SentAt    time.Time        `json:"sent_at"`
}

// bodyCache keeps the encoded bodies of the messages delivered last, so
// that a message going to many users (one inbox entry each, each decoded
// on its own) is encoded once and every connection's queue holds the same
// bytes. It is bounded in entries and bytes, and forgets the oldest first;
// a body it forgot is encoded again, costing time, never correctness.
type bodyCache struct {
	maxEntries, maxBytes int

	mu    sync.Mutex
	byID  map[domain.MessageID][]byte
	order []domain.MessageID // oldest first
	bytes int
}

func newBodyCache(maxEntries, maxBytes int) *bodyCache {
	return &bodyCache{maxEntries: maxEntries, maxBytes: maxBytes, byID: map[domain.MessageID][]byte{}}
}

// errUnresolved refuses to encode an inbox entry whose text was not
// resolved: its body would go out, and be shared, without the text.
var errUnresolved = errors.New("ws: inbox entry without its text")

// body returns m's encoded body, from the cache when it has it.
func (bc *bodyCache) body(m domain.InboxMessage) ([]byte, error) {
	if !m.Resolved() {
		return nil, errUnresolved
	}
	bc.mu.Lock()
	b, ok := bc.byID[m.MessageID]
	bc.mu.Unlock()
	if ok {
		return b, nil
	}
	full, err := marshal(messageBody{ChannelID: m.ChannelID, MessageID: m.MessageID, SenderID: m.SenderID, Text: m.Text, SentAt: m.SentAt})
	if err != nil {
		return nil, err
	}
	b = full[1:] // without "{": the head opens the object
	if len(b) > bc.maxBytes {
		return b, nil // too large to keep
	}
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if old, ok := bc.byID[m.MessageID]; ok {
		return old, nil // encoded meanwhile by another caller
	}
	for len(bc.order) > 0 && (len(bc.order) >= bc.maxEntries || bc.bytes+len(b) > bc.maxBytes) {
		id := bc.order[0]
		bc.order = bc.order[1:]
		bc.bytes -= len(bc.byID[id])
		delete(bc.byID, id)
	}
	bc.byID[m.MessageID] = b
	bc.order = append(bc.order, m.MessageID)
	bc.bytes += len(b)
	return b, nil
}

// messageFrame returns the frame of inbox entry offset of epoch, sharing
// the message's body with every other frame of the message.
func (bc *bodyCache) messageFrame(epoch int32, offset int64, m domain.InboxMessage) (outFrame, error) {
	b, err := bc.body(m)
	if err != nil {
		return outFrame{}, err
	}
	return outFrame{head: messageHead(epoch, offset), body: b}, nil
}
