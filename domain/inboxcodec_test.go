package domain_test

import (
	"bytes"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/evchat/evchat/domain"
)

// inboxSamples are inbox records as the fan-out writes them (version 2),
// and as version 1 wrote them (with the text, ASCII or not), and other
// spellings of the same entries that only Decode reads.
func inboxSamples(t testing.TB) (canonical, other [][]byte) {
	entry := domain.InboxMessage{UserID: "468192741203755010", ChannelID: "g468192741203755011", MessageID: 468192741203755009,
		SenderID: "468192741203755008", SentAt: at.Add(-time.Second), ChannelPartition: 3, ChannelOffset: 1234567}
	v2, err := domain.Encode(entry, domain.Meta{EventID: "e-1", Time: at})
	if err != nil {
		t.Fatal(err)
	}
	v1 := func(text string) []byte {
		b := bytes.Replace(v2, []byte(`"version":2`), []byte(`"version":1`), 1)
		return bytes.Replace(b, []byte(`"sent_at"`), []byte(`"text":`+strconv.Quote(text)+`,"sent_at"`), 1)
	}
	canonical = [][]byte{v2, v1("hello"), v1("Hello, wörld! ☃"),
		bytes.Replace(v2, []byte(`"sent_at"`), []byte(`"text":"dropped","sent_at"`), 1), // text in version 2: ignored
		bytes.Replace(v2, []byte(`"channel_partition":3`), []byte(`"channel_partition":-0`), 1)}
	other = [][]byte{
		bytes.Replace(v2, []byte(`,"version"`), []byte(`, "version"`), 1),                              // a space
		bytes.Replace(v2, []byte(`"g468192741203755011"`), []byte(`"g46819274120375\u0030011"`), 1),    // an escape
		bytes.Replace(v2, []byte(`"channel_offset":1234567`), []byte(`"channel_offset":1234567.0`), 1), // not an integer: an error
		bytes.Replace(v2, []byte(`"version":2`), []byte(`"version":3`), 1),                             // unknown version: an error
		bytes.Replace(v2, []byte(`"message_id":"468192741203755009"`), []byte(`"message_id":"0"`), 1),  // no id: an error
	}
	return canonical, other
}

// TestDecodeInbox: the records the fan-out writes take the fast path, and
// every sample decodes as Decode decodes it.
func TestDecodeInbox(t *testing.T) {
	canonical, other := inboxSamples(t)
	for i, b := range canonical {
		if _, ok := domain.DecodeInboxCanonical(b); !ok {
			t.Errorf("canonical sample %d did not take the fast path: %s", i, b)
		}
		sameAsDecode(t, b)
	}
	for i, b := range other {
		if _, ok := domain.DecodeInboxCanonical(b); ok {
			t.Errorf("sample %d took the fast path: %s", i, b)
		}
		sameAsDecode(t, b)
	}
	// Another event on the inbox topic: not an entry, no error.
	hb, err := domain.Encode(domain.DeviceHeartbeat{UserID: "u1", DeviceID: "d1"}, domain.Meta{EventID: "e-2", Time: at})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := domain.DecodeInbox(hb); ok || err != nil {
		t.Errorf("heartbeat: ok %v err %v", ok, err)
	}
}

// sameAsDecode fails unless DecodeInbox gives what Decode gives for b.
func sameAsDecode(t *testing.T, b []byte) {
	t.Helper()
	got, gotOK, gotErr := domain.DecodeInbox(b)
	_, ev, err := domain.Decode(b)
	want, wantOK := ev.(domain.InboxMessage)
	if (gotErr == nil) != (err == nil) || gotOK != wantOK || !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\nDecodeInbox %+v %v %v\nDecode      %+v %v %v", b, got, gotOK, gotErr, want, wantOK, err)
	}
}

// FuzzDecodeInbox holds the fast path to Decode: whatever it takes, it
// reads as Decode does.
func FuzzDecodeInbox(f *testing.F) {
	canonical, other := inboxSamples(f)
	for _, b := range append(canonical, other...) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := domain.DecodeInboxCanonical(b)
		if !ok {
			return
		}
		_, ev, err := domain.Decode(b)
		if err != nil {
			t.Fatalf("fast path took %q, Decode: %v", b, err)
		}
		if want, isEntry := ev.(domain.InboxMessage); !isEntry || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\nfast   %+v\nDecode %+v", b, got, ev)
		}
	})
}

// TestEncodeInbox: the entries the fan-out writes take Encode's fast path,
// and it writes the general path's bytes; entries it cannot write as they
// are go the general way.
func TestEncodeInbox(t *testing.T) {
	entry := domain.InboxMessage{UserID: "468192741203755010", ChannelID: "g468192741203755011", MessageID: 468192741203755009,
		SenderID: "468192741203755008", SentAt: at.Add(-time.Second + 5), ChannelPartition: 3, ChannelOffset: 1234567}
	m := domain.Meta{EventID: "e-1", Time: at}
	if _, ok := domain.EncodeInboxCanonical(entry, m); !ok {
		t.Fatal("a fan-out entry did not take the fast path")
	}
	sameAsGeneral(t, entry, m)
	withText := entry
	withText.Text = "hello"
	sameAsGeneral(t, withText, m)
	withText.Text = "wörld 😀\x7f"
	if _, ok := domain.EncodeInboxCanonical(withText, m); !ok {
		t.Fatal("an entry with text beyond ASCII did not take the fast path")
	}
	sameAsGeneral(t, withText, m)
	for name, e := range map[string]domain.InboxMessage{
		"an escape": func() domain.InboxMessage { e := entry; e.Text = `say "hi"`; return e }(),
		"html":      func() domain.InboxMessage { e := entry; e.SenderID = "a<b"; return e }(),
		"U+2028":    func() domain.InboxMessage { e := entry; e.Text = "a\u2028b"; return e }(),
		"not UTF-8": func() domain.InboxMessage { e := entry; e.Text = "a\xffb"; return e }(),
		"a zone":    func() domain.InboxMessage { e := entry; e.SentAt = at.In(time.FixedZone("x", 3600)); return e }(),
		"year 10000": func() domain.InboxMessage {
			e := entry
			e.SentAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
			return e
		}(),
		"a control octet": func() domain.InboxMessage { e := entry; e.ChannelID = "g\x01"; return e }(),
	} {
		if _, ok := domain.EncodeInboxCanonical(e, m); ok {
			t.Errorf("%s: took the fast path", name)
		}
	}
}

// sameAsGeneral fails unless Encode's fast path, if it takes e, writes the
// general path's bytes.
func sameAsGeneral(t *testing.T, e domain.InboxMessage, m domain.Meta) {
	t.Helper()
	got, ok := domain.EncodeInboxCanonical(e, m)
	if !ok {
		return
	}
	want, err := domain.EncodeGeneral(e, m)
	if err != nil {
		t.Fatalf("general path: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("fast    %s\ngeneral %s", got, want)
	}
}

// FuzzEncodeInbox holds Encode's fast path to its general path.
func FuzzEncodeInbox(f *testing.F) {
	f.Add("468192741203755010", "g1", uint64(468192741203755009), "s", "", "e-1", int64(1764511200123456789), int64(1764511200000000000), int32(3), int64(1234567))
	f.Add("u", "d1-2", uint64(1), "s", "hi there", "", int64(0), int64(-1), int32(-1), int64(0))
	f.Fuzz(func(t *testing.T, u, ch string, id uint64, sender, text, eventID string, sent, at int64, part int32, off int64) {
		e := domain.InboxMessage{UserID: domain.UserID(u), ChannelID: domain.ChannelID(ch), MessageID: domain.MessageID(id),
			SenderID: domain.UserID(sender), Text: text, SentAt: time.Unix(0, sent).UTC(), ChannelPartition: part, ChannelOffset: off}
		sameAsGeneral(t, e, domain.Meta{EventID: eventID, Time: time.Unix(0, at)})
	})
}

// TestEncodeInboxAllocatesOnce: the buffer an inbox record is encoded into
// is sized for the longest record of its strings (the largest numbers,
// times with nanoseconds), so it never grows: its capacity is what it was
// made with.
func TestEncodeInboxAllocatesOnce(t *testing.T) {
	longest := time.Date(9999, 12, 31, 23, 59, 59, 123456789, time.UTC)
	for _, e := range []domain.InboxMessage{
		{UserID: "u", ChannelID: "c", MessageID: 1, SenderID: "s", SentAt: at},
		{UserID: "468192741203755010", ChannelID: "g468192741203755011", MessageID: 1<<64 - 1, SenderID: "468192741203755008",
			SentAt: longest, ChannelPartition: -1 << 31, ChannelOffset: -1 << 63},
	} {
		m := domain.Meta{EventID: "18446744073709551615.468192741203755010", Time: longest}
		v, err := domain.Encode(e, m)
		if err != nil {
			t.Fatal(err)
		}
		want := domain.InboxFixedLen + len(m.EventID) + len(e.UserID) + len(e.ChannelID) + len(e.SenderID)
		if cap(v) != want {
			t.Fatalf("record of %d bytes in a buffer of %d, want %d: it grew", len(v), cap(v), want)
		}
	}
}
