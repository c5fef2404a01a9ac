package domain

import (
	"strconv"
	"time"
)

// decodeCanonical reads the events the hot path decodes most, in the
// canonical form Encode writes them (fields in its order, no spaces,
// strings without escapes), in one pass without reflection: the sends
// processor's requests (send.requested), the messages the fan-out and
// history read (message.sent) and the answers every gateway reads
// (send.decided). Decode took 17 µs for a message of 200 characters, most
// of it encoding/json scanning the record twice (the envelope, then its
// payload). ok is false for anything else, valid or not, which Decode's
// general path then reads; for what it takes, the result is the general
// path's (FuzzDecodeCanonical holds them to it).
func decodeCanonical(b []byte) (Meta, Event, bool) {
	s := canon{b: b}
	if !s.lit(`{"type":"`) {
		return Meta{}, nil, false
	}
	var typ string
	switch {
	case s.lit(TypeMessageSent + `"`):
		typ = TypeMessageSent
	case s.lit(TypeSendRequested + `"`):
		typ = TypeSendRequested
	case s.lit(TypeSendDecided + `"`):
		typ = TypeSendDecided
	default:
		return Meta{}, nil, false
	}
	if !s.lit(`,"version":`) {
		return Meta{}, nil, false
	}
	if _, ok := s.int(1, int64(VersionOf(typ))); !ok || !s.lit(`,"event_id":`) {
		return Meta{}, nil, false
	}
	id, ok := s.str()
	if !ok || !s.lit(`,"time":`) {
		return Meta{}, nil, false
	}
	var m Meta
	if !s.time(&m.Time) || m.Time.UTC().Year() < 1 || m.Time.UTC().Year() > 9999 || !s.lit(`,"payload":`) {
		return Meta{}, nil, false
	}
	var ev Event
	switch typ {
	case TypeMessageSent:
		ms, ok := s.messageSent()
		if !ok || !s.lit(`}`) {
			return Meta{}, nil, false
		}
		ev = ms
	case TypeSendRequested:
		ms, ok := s.messageSent()
		if !ok || !s.lit(`,"reply_to":`) {
			return Meta{}, nil, false
		}
		to, ok := s.str()
		if !ok || !s.lit(`}`) {
			return Meta{}, nil, false
		}
		ev = SendRequested{MessageSent: ms, ReplyTo: string(to)}
	case TypeSendDecided:
		d, ok := s.sendDecided()
		if !ok {
			return Meta{}, nil, false
		}
		ev = d
	}
	if !s.lit(`}`) || len(s.b) != 0 {
		return Meta{}, nil, false
	}
	m.EventID = string(id)
	return m, ev, true
}

// messageSent consumes a message.sent payload's fields, from its opening
// brace to its last field (the caller reads what follows: a send.requested
// has one more).
func (s *canon) messageSent() (m MessageSent, ok bool) {
	var ch, snd, dev, cm, text []byte
	if !s.lit(`{"channel_id":`) {
		return m, false
	}
	if ch, ok = s.str(); !ok || !s.lit(`,"message_id":`) {
		return m, false
	}
	raw, ok := s.quoted()
	if !ok || m.MessageID.UnmarshalJSON(raw) != nil || !s.lit(`,"sender_id":`) {
		return m, false
	}
	if snd, ok = s.str(); !ok || !s.lit(`,"device_id":`) {
		return m, false
	}
	if dev, ok = s.str(); !ok || !s.lit(`,"client_msg_id":`) {
		return m, false
	}
	if cm, ok = s.str(); !ok || !s.lit(`,"text":`) {
		return m, false
	}
	if text, ok = s.str(); !ok {
		return m, false
	}
	if s.lit(`,"decided_at":`) {
		if m.DecidedAt, ok = s.int(-1<<63, 1<<63-1); !ok {
			return m, false
		}
	}
	m.ChannelID, m.SenderID, m.DeviceID = ChannelID(ch), UserID(snd), DeviceID(dev)
	m.ClientMsgID, m.Text = string(cm), string(text)
	return m, true
}

// sendDecided consumes a send.decided payload, braces included.
func (s *canon) sendDecided() (d SendDecided, ok bool) {
	if !s.lit(`{"request_id":`) {
		return d, false
	}
	req, ok := s.str()
	if !ok {
		return d, false
	}
	d.RequestID = string(req)
	if s.lit(`,"message_id":`) {
		raw, ok := s.quoted()
		if !ok || d.MessageID.UnmarshalJSON(raw) != nil {
			return d, false
		}
	}
	if s.lit(`,"code":`) {
		c, ok := s.str()
		if !ok {
			return d, false
		}
		d.Code = Code(c)
	}
	if s.lit(`,"message":`) {
		msg, ok := s.str()
		if !ok {
			return d, false
		}
		d.Message = string(msg)
	}
	return d, s.lit(`}`)
}

// encodeCanonical writes the send path's events (message.sent,
// send.requested, send.decided) without reflection: the bytes Encode's
// general path gives. ok is false, and nothing is written, for another
// event, or when a string needs escaping or the time is out of JSON's
// range: those go the general way. FuzzEncodeCanonical holds the two paths
// to the same bytes.
func encodeCanonical(ev Event, m Meta) (b []byte, ok bool) {
	if !plainJSON(m.EventID) || !jsonYear(m.Time.UTC()) {
		return nil, false
	}
	head := func(typ string, n int) []byte {
		b := make([]byte, 0, 128+len(m.EventID)+n)
		b = append(b, `{"type":"`...)
		b = append(b, typ...)
		b = append(b, `","version":`...)
		b = strconv.AppendInt(b, int64(VersionOf(typ)), 10)
		b = append(b, `,"event_id":"`...)
		b = append(b, m.EventID...)
		b = append(b, `","time":"`...)
		b = m.Time.UTC().AppendFormat(b, time.RFC3339Nano)
		return append(b, `","payload":`...)
	}
	switch e := ev.(type) {
	case MessageSent:
		if !e.plain() {
			return nil, false
		}
		b = appendMessageSent(head(TypeMessageSent, e.size()), e)
	case SendRequested:
		if !e.plain() || !plainJSON(e.ReplyTo) {
			return nil, false
		}
		b = appendMessageSent(head(TypeSendRequested, e.size()+len(e.ReplyTo)+16), e.MessageSent)
		b = append(b, `,"reply_to":"`...)
		b = append(b, e.ReplyTo...)
		b = append(b, '"')
	case SendDecided:
		if !plainJSON(e.RequestID) || !plainJSON(string(e.Code)) || !plainJSON(e.Message) {
			return nil, false
		}
		b = head(TypeSendDecided, len(e.RequestID)+len(e.Code)+len(e.Message)+64)
		b = append(b, `{"request_id":"`...)
		b = append(b, e.RequestID...)
		b = append(b, '"')
		if e.MessageID != 0 {
			b = append(b, `,"message_id":"`...)
			b = strconv.AppendUint(b, uint64(e.MessageID), 10)
			b = append(b, '"')
		}
		if e.Code != "" {
			b = append(b, `,"code":"`...)
			b = append(b, e.Code...)
			b = append(b, '"')
		}
		if e.Message != "" {
			b = append(b, `,"message":"`...)
			b = append(b, e.Message...)
			b = append(b, '"')
		}
	default:
		return nil, false
	}
	return append(b, "}}"...), true
}

// plain reports whether every string of m is written as itself.
func (m MessageSent) plain() bool {
	return plainJSON(string(m.ChannelID)) && plainJSON(string(m.SenderID)) && plainJSON(string(m.DeviceID)) &&
		plainJSON(m.ClientMsgID) && plainJSON(m.Text)
}

func (m MessageSent) size() int {
	return 128 + len(m.ChannelID) + len(m.SenderID) + len(m.DeviceID) + len(m.ClientMsgID) + len(m.Text)
}

// appendMessageSent writes m's payload up to its last field, without the
// closing brace (a send.requested has one more field).
func appendMessageSent(b []byte, m MessageSent) []byte {
	b = append(b, `{"channel_id":"`...)
	b = append(b, m.ChannelID...)
	b = append(b, `","message_id":"`...)
	b = strconv.AppendUint(b, uint64(m.MessageID), 10)
	b = append(b, `","sender_id":"`...)
	b = append(b, m.SenderID...)
	b = append(b, `","device_id":"`...)
	b = append(b, m.DeviceID...)
	b = append(b, `","client_msg_id":"`...)
	b = append(b, m.ClientMsgID...)
	b = append(b, `","text":"`...)
	b = append(b, m.Text...)
	b = append(b, '"')
	if m.DecidedAt != 0 {
		b = append(b, `,"decided_at":`...)
		b = strconv.AppendInt(b, m.DecidedAt, 10)
	}
	return b
}
