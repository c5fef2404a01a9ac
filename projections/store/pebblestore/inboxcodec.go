package pebblestore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// inboxCompact marks an inbox entry's value in the compact form that
// encodeInbox writes. A value that starts with '{' is the JSON of
// inboxRecord, the form written before: both are read.
//
// An inbox has an entry per member per message, so its bytes are most of
// what a message into a group costs the store: the JSON form took ~330
// bytes an entry, this one ~60 (the user, epoch and offset are in the key;
// an entry of today carries no text, see domain.InboxMessage).
const inboxCompact byte = 1

// encodeInbox returns the compact value of e: the form byte, then the
// inbox partition, the message's recipient (empty when it is the entry's
// user, as always), channel, message id, sender, sent-at (Unix seconds and
// nanoseconds), channel partition and offset, and text, as varints and
// length-prefixed strings.
func encodeInbox(e store.InboxEntry) []byte {
	m := e.Message
	recipient := string(m.UserID)
	if m.UserID == e.UserID {
		recipient = ""
	}
	b := make([]byte, 0, 48+len(recipient)+len(m.ChannelID)+len(m.SenderID)+len(m.Text))
	b = append(b, inboxCompact)
	b = binary.AppendVarint(b, int64(e.Partition))
	b = appendString(b, recipient)
	b = appendString(b, string(m.ChannelID))
	b = binary.AppendUvarint(b, uint64(m.MessageID))
	b = appendString(b, string(m.SenderID))
	b = binary.AppendVarint(b, m.SentAt.Unix())
	b = binary.AppendUvarint(b, uint64(m.SentAt.Nanosecond()))
	b = binary.AppendVarint(b, int64(m.ChannelPartition))
	b = binary.AppendVarint(b, m.ChannelOffset)
	return appendString(b, m.Text)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errInboxValue = errors.New("malformed inbox entry")

// decodeInbox reads the value v of u's entry at (epoch, offset), in either
// form.
func decodeInbox(u domain.UserID, epoch int32, offset int64, v []byte) (store.InboxEntry, error) {
	if len(v) > 0 && v[0] == '{' {
		var r inboxRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return store.InboxEntry{}, err
		}
		return store.InboxEntry(r), nil
	}
	if len(v) == 0 || v[0] != inboxCompact {
		return store.InboxEntry{}, errInboxValue
	}
	d := decoder{b: v[1:]}
	e := store.InboxEntry{UserID: u, Epoch: epoch, Offset: offset}
	e.Partition = int32(d.varint())
	m := &e.Message
	m.UserID = domain.UserID(d.string())
	if m.UserID == "" {
		m.UserID = u
	}
	m.ChannelID = domain.ChannelID(d.string())
	m.MessageID = domain.MessageID(d.uvarint())
	m.SenderID = domain.UserID(d.string())
	sec := d.varint()
	m.SentAt = time.Unix(sec, int64(d.uvarint())).UTC()
	m.ChannelPartition = int32(d.varint())
	m.ChannelOffset = d.varint()
	m.Text = d.string()
	if d.bad || len(d.b) != 0 {
		return store.InboxEntry{}, errInboxValue
	}
	return e, nil
}

// decoder reads varints and strings; bad is set at the first that does
// not fit.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) uvarint() uint64 {
	n, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[k:]
	return n
}

func (d *decoder) varint() int64 {
	n, k := binary.Varint(d.b)
	if k <= 0 {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[k:]
	return n
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.bad, d.b = true, nil
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
