package domain_test

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
)

// canonicalSamples returns records of the send path's events as Encode
// writes them (the fast path reads every one), and spellings of the same
// events it leaves to the general path.
func canonicalSamples(t testing.TB) (canonical, other [][]byte) {
	t.Helper()
	msg := domain.MessageSent{ChannelID: "g468192741203755011", MessageID: 468192741203755009, SenderID: "468192741203755008",
		DeviceID: "phone-1", ClientMsgID: "c-7f3a", Text: "hello wörld 😀"}
	decided := msg
	decided.DecidedAt = 42
	events := []domain.Event{
		msg, decided,
		domain.SendRequested{MessageSent: msg, ReplyTo: "gw-1"},
		domain.SendRequested{MessageSent: decided, ReplyTo: ""},
		domain.SendDecided{RequestID: "r-1", MessageID: 468192741203755009},
		domain.SendDecided{RequestID: "r-2", Code: domain.CodeConflict, Message: "client message id c-7f3a was used for another text"},
		domain.SendDecided{RequestID: ""},
	}
	for _, ev := range events {
		for _, m := range []domain.Meta{{EventID: "e-1", Time: at}, {EventID: "", Time: at.In(time.FixedZone("x", -3600))}} {
			b, err := domain.Encode(ev, m)
			if err != nil {
				t.Fatal(err)
			}
			canonical = append(canonical, b)
		}
	}
	quoted := msg
	quoted.Text = `say "hi" <b>`
	b, err := domain.Encode(quoted, domain.Meta{EventID: "e-2", Time: at})
	if err != nil {
		t.Fatal(err)
	}
	first := canonical[0]
	other = append(other,
		b, // escapes in the text
		bytes.Replace(first, []byte(`"version":1`), []byte(`"version": 1`), 1),
		bytes.Replace(first, []byte(`{"channel_id"`), []byte(`{"sender_id":"x","channel_id"`), 1),
		bytes.Replace(first, []byte(`"message_id":"468192741203755009"`), []byte(`"message_id":468192741203755009`), 1),
		append(append([]byte{}, first...), ' '),
	)
	return canonical, other
}

// TestDecodeCanonical: the send path's events as Encode writes them take
// the fast path and read as the general path reads them; other spellings
// go the general way, and still decode.
func TestDecodeCanonical(t *testing.T) {
	canonical, other := canonicalSamples(t)
	for _, b := range canonical {
		m, ev, ok := domain.DecodeCanonical(b)
		if !ok {
			t.Fatalf("%s: not taken by the fast path", b)
		}
		wm, wev, err := domain.DecodeGeneral(b)
		if err != nil {
			t.Fatalf("%s: general path: %v", b, err)
		}
		if !reflect.DeepEqual(ev, wev) || m.EventID != wm.EventID || !m.Time.Equal(wm.Time) || m.Time.Location().String() != wm.Time.Location().String() {
			t.Fatalf("%s:\nfast    %+v %#v\ngeneral %+v %#v", b, m, ev, wm, wev)
		}
	}
	// Decode takes it: fewer allocations than the general path.
	fast := testing.AllocsPerRun(20, func() { _, _, _ = domain.Decode(canonical[0]) })
	general := testing.AllocsPerRun(20, func() { _, _, _ = domain.DecodeGeneral(canonical[0]) })
	if fast >= general {
		t.Errorf("Decode of a canonical message.sent: %.0f allocations, the general path %.0f: the fast path is not taken", fast, general)
	}
	for _, b := range other {
		if _, _, ok := domain.DecodeCanonical(b); ok {
			t.Errorf("%s: taken by the fast path", b)
		}
		if _, _, err := domain.Decode(b); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
}

// FuzzDecodeCanonical holds the fast path to the general one: whatever it
// takes, it reads as encoding/json does.
func FuzzDecodeCanonical(f *testing.F) {
	canonical, other := canonicalSamples(f)
	for _, b := range append(canonical, other...) {
		f.Add(b)
	}
	f.Add([]byte(`{"type":"send.decided","version":1,"event_id":"e","time":"2025-01-02T03:04:05Z","payload":{"request_id":"r","message_id":"0"}}`))
	f.Add([]byte(`{"type":"message.sent","version":1,"event_id":"e","time":"0000-01-01T00:00:00+01:00","payload":{"channel_id":"g","message_id":"1","sender_id":"s","device_id":"d","client_msg_id":"c","text":"t","decided_at":-0}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ev, ok := domain.DecodeCanonical(b)
		if !ok {
			return
		}
		wm, wev, err := domain.DecodeGeneral(b)
		if err != nil {
			t.Fatalf("fast path took %q, general path: %v", b, err)
		}
		if !reflect.DeepEqual(ev, wev) || m.EventID != wm.EventID || !m.Time.Equal(wm.Time) {
			t.Fatalf("%q:\nfast    %+v %#v\ngeneral %+v %#v", b, m, ev, wm, wev)
		}
	})
}

// TestEncodeCanonical: the send path's events take Encode's fast path and
// it writes the general path's bytes; events it cannot write as they are
// go the general way.
func TestEncodeCanonical(t *testing.T) {
	msg := domain.MessageSent{ChannelID: "g1", MessageID: 468192741203755009, SenderID: "s", DeviceID: "d", ClientMsgID: "c", Text: "wörld 😀"}
	m := domain.Meta{EventID: "e-1", Time: at.In(time.FixedZone("x", 3600))}
	for _, ev := range []domain.Event{
		msg, domain.SendRequested{MessageSent: msg, ReplyTo: "gw"},
		domain.SendDecided{RequestID: "r", MessageID: 7}, domain.SendDecided{RequestID: "r", Code: domain.CodeConflict, Message: "no"},
	} {
		if _, ok := domain.EncodeCanonical(ev, m); !ok {
			t.Errorf("%#v did not take the fast path", ev)
		}
		sameEncoding(t, ev, m)
	}
	quoted := msg
	quoted.Text = `say "hi"`
	for name, ev := range map[string]domain.Event{
		"an escape":      quoted,
		"html reply_to":  domain.SendRequested{MessageSent: msg, ReplyTo: "<gw>"},
		"a control code": domain.SendDecided{RequestID: "r\n"},
		"another event":  domain.MemberAdded{ChannelID: "g1", UserID: "u", ByID: "u"},
	} {
		if _, ok := domain.EncodeCanonical(ev, m); ok {
			t.Errorf("%s: took the fast path", name)
		}
	}
	if _, ok := domain.EncodeCanonical(msg, domain.Meta{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}); ok {
		t.Error("year 10000: took the fast path")
	}
}

// sameEncoding fails unless Encode's fast path, if it takes ev, writes the
// general path's bytes.
func sameEncoding(t *testing.T, ev domain.Event, m domain.Meta) {
	t.Helper()
	got, ok := domain.EncodeCanonical(ev, m)
	if !ok {
		return
	}
	want, err := domain.EncodeGeneral(ev, m)
	if err != nil {
		t.Fatalf("general path: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("fast    %s\ngeneral %s", got, want)
	}
}

// FuzzEncodeCanonical holds Encode's fast path to its general path.
func FuzzEncodeCanonical(f *testing.F) {
	f.Add("g1", uint64(468192741203755009), "s", "d", "c", "hello wörld", int64(0), "gw", "e-1", int64(1764511200123456789), 0)
	f.Add("g\u2028", uint64(1), "<s>", "d\x7f", "", "a\xff", int64(-5), "", "", int64(-1), 1)
	f.Add("r", uint64(0), "conflict", "", "", "said no", int64(0), "", "e", int64(0), 2)
	f.Fuzz(func(t *testing.T, ch string, id uint64, sender, dev, cm, text string, decided int64, replyTo, eventID string, at int64, kind int) {
		msg := domain.MessageSent{ChannelID: domain.ChannelID(ch), MessageID: domain.MessageID(id), SenderID: domain.UserID(sender),
			DeviceID: domain.DeviceID(dev), ClientMsgID: cm, Text: text, DecidedAt: decided}
		var ev domain.Event
		switch kind % 3 {
		case 0:
			ev = msg
		case 1:
			ev = domain.SendRequested{MessageSent: msg, ReplyTo: replyTo}
		default:
			ev = domain.SendDecided{RequestID: ch, MessageID: domain.MessageID(id), Code: domain.Code(sender), Message: text}
		}
		sameEncoding(t, ev, domain.Meta{EventID: eventID, Time: time.Unix(0, at)})
	})
}
