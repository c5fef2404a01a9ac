package domain

import (
	"bytes"
	"strconv"
	"time"
	"unicode/utf8"
)

// DecodeInbox reads an inbox record: the entry, ok true when the record
// holds an inbox.message event (false for another event), or the error
// Decode gives.
//
// Every reader of the inbox topic decodes every record (the tailer, the
// inbox projection, push), so the records Encode writes, the exact bytes
// of its canonical form (fields in its order, no spaces, strings without
// escapes), are read in one pass without reflection, about ten times
// faster than Decode; anything else (another event, another writer's
// spelling of the same JSON) goes through Decode. Both give the same
// result for every input the fast path takes: FuzzDecodeInbox holds them
// to it.
func DecodeInbox(b []byte) (InboxMessage, bool, error) {
	if m, ok := decodeInboxCanonical(b); ok {
		return m, true, nil
	}
	_, ev, err := Decode(b)
	if err != nil {
		return InboxMessage{}, false, err
	}
	m, ok := ev.(InboxMessage)
	return m, ok, nil
}

// decodeInboxCanonical reads an inbox entry in the canonical form Encode
// writes; ok is false for anything else, valid or not.
func decodeInboxCanonical(b []byte) (m InboxMessage, ok bool) {
	s := canon{b: b}
	if !s.lit(`{"type":"inbox.message","version":`) {
		return m, false
	}
	version, ok := s.int(1, int64(VersionOf(TypeInboxMessage)))
	if !ok || !s.lit(`,"event_id":`) {
		return m, false
	}
	if _, ok := s.str(); !ok || !s.lit(`,"time":`) {
		return m, false
	}
	var at time.Time
	if !s.time(&at) || at.UTC().Year() < 1 || at.UTC().Year() > 9999 {
		return m, false
	}
	var u, ch, snd []byte
	if !s.lit(`,"payload":{"user_id":`) {
		return m, false
	}
	if u, ok = s.str(); !ok || !s.lit(`,"channel_id":`) {
		return m, false
	}
	if ch, ok = s.str(); !ok || !s.lit(`,"message_id":`) {
		return m, false
	}
	raw, ok := s.quoted()
	if !ok || m.MessageID.UnmarshalJSON(raw) != nil || m.MessageID == 0 || !s.lit(`,"sender_id":`) {
		return m, false
	}
	if snd, ok = s.str(); !ok {
		return m, false
	}
	if s.lit(`,"text":`) {
		text, ok := s.str()
		if !ok {
			return m, false
		}
		if version < 2 { // not a field of version 2: ignored, as Decode does
			m.Text = string(text)
		}
	}
	if !s.lit(`,"sent_at":`) || !s.time(&m.SentAt) || !s.lit(`,"channel_partition":`) {
		return m, false
	}
	p, ok := s.int(-1<<31, 1<<31-1)
	if !ok || !s.lit(`,"channel_offset":`) {
		return m, false
	}
	if m.ChannelOffset, ok = s.int(-1<<63, 1<<63-1); !ok || !s.lit(`}}`) || len(s.b) != 0 {
		return m, false
	}
	m.ChannelPartition = int32(p)
	m.UserID, m.ChannelID, m.SenderID = UserID(u), ChannelID(ch), UserID(snd)
	return m, true
}

// canon reads the canonical form from the front of b.
type canon struct{ b []byte }

// lit consumes l if b starts with it.
func (s *canon) lit(l string) bool {
	if len(s.b) < len(l) || string(s.b[:len(l)]) != l {
		return false
	}
	s.b = s.b[len(l):]
	return true
}

// quoted consumes a string with no escape, no control character and only
// valid UTF-8 (what encoding/json reads as its bytes), quotes included.
func (s *canon) quoted() ([]byte, bool) {
	if len(s.b) == 0 || s.b[0] != '"' {
		return nil, false
	}
	end := bytes.IndexByte(s.b[1:], '"')
	if end < 0 {
		return nil, false
	}
	q := s.b[:end+2]
	ascii := true
	for _, c := range q[1 : end+1] {
		if c < 0x20 || c == '\\' {
			return nil, false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(q[1:end+1]) {
		return nil, false
	}
	s.b = s.b[end+2:]
	return q, true
}

// str consumes a string as quoted does and returns its contents.
func (s *canon) str() ([]byte, bool) {
	q, ok := s.quoted()
	if !ok {
		return nil, false
	}
	return q[1 : len(q)-1], true
}

// time consumes a time as encoding/json reads one into a time.Time.
func (s *canon) time(t *time.Time) bool {
	q, ok := s.quoted()
	return ok && t.UnmarshalJSON(q) == nil
}

// int consumes an integer in JSON's form without fraction or exponent
// (-?(0|[1-9][0-9]*)), within [lo, hi].
func (s *canon) int(lo, hi int64) (int64, bool) {
	n := 0
	if n < len(s.b) && s.b[n] == '-' {
		n++
	}
	start := n
	for n < len(s.b) && s.b[n] >= '0' && s.b[n] <= '9' {
		n++
	}
	if n == start || (s.b[start] == '0' && n > start+1) {
		return 0, false
	}
	v, err := strconv.ParseInt(string(s.b[:n]), 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, false
	}
	s.b = s.b[n:]
	return v, true
}

// encodeInboxCanonical writes an inbox entry's record without reflection,
// the bytes Encode's general path gives (the fan-out writes one per member
// per message: json.Marshal was 5% of the CPU at 2,000 msg/s). ok is false,
// and nothing is written, when a string needs escaping or a time is out of
// JSON's range, or the time sent is not in UTC: those go the general way. FuzzEncodeInbox holds the two
// paths to the same bytes.
func encodeInboxCanonical(im InboxMessage, m Meta) (b []byte, ok bool) {
	if !plainJSON(m.EventID) || !plainJSON(string(im.UserID)) || !plainJSON(string(im.ChannelID)) ||
		!plainJSON(string(im.SenderID)) || !plainJSON(im.Text) || !jsonYear(m.Time.UTC()) ||
		im.SentAt.Location() != time.UTC || !jsonYear(im.SentAt) {
		return nil, false
	}
	b = make([]byte, 0, inboxFixedLen+len(m.EventID)+len(im.UserID)+len(im.ChannelID)+len(im.SenderID)+len(im.Text))
	b = append(b, `{"type":"inbox.message","version":`...)
	b = strconv.AppendInt(b, int64(VersionOf(TypeInboxMessage)), 10)
	b = append(b, `,"event_id":"`...)
	b = append(b, m.EventID...)
	b = append(b, `","time":"`...)
	b = m.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","payload":{"user_id":"`...)
	b = append(b, im.UserID...)
	b = append(b, `","channel_id":"`...)
	b = append(b, im.ChannelID...)
	b = append(b, `","message_id":"`...)
	b = strconv.AppendUint(b, uint64(im.MessageID), 10)
	b = append(b, `","sender_id":"`...)
	b = append(b, im.SenderID...)
	if im.Text != "" {
		b = append(b, `","text":"`...)
		b = append(b, im.Text...)
	}
	b = append(b, `","sent_at":"`...)
	b = im.SentAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","channel_partition":`...)
	b = strconv.AppendInt(b, int64(im.ChannelPartition), 10)
	b = append(b, `,"channel_offset":`...)
	b = strconv.AppendInt(b, im.ChannelOffset, 10)
	return append(b, "}}"...), true
}

// inboxFixedLen bounds what an inbox record holds besides its strings:
// the field names and punctuation (193 bytes with the text's), two times
// (35 bytes each at most in RFC 3339 with nanoseconds), the version, the
// message id, the partition and the offset (3, 20, 11 and 20 digits at
// most). With it encodeInboxCanonical allocates once, not twice: 240 was
// short by the times.
const inboxFixedLen = 193 + 2*35 + 3 + 20 + 11 + 20

// plainJSON reports whether s is written in JSON as itself between quotes
// by encoding/json: valid UTF-8 without control characters, '"', '\\',
// the characters it escapes for HTML and U+2028 and U+2029 (which it
// escapes for JavaScript).
func plainJSON(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c < 0x20, c == '"', c == '\\', c == '<', c == '>', c == '&':
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || r == '\u2028' || r == '\u2029' {
			return false
		}
		i += n
	}
	return true
}

// jsonYear reports whether t's year is one time.Time.MarshalJSON writes.
func jsonYear(t time.Time) bool {
	y := t.Year()
	return y >= 0 && y <= 9999
}
