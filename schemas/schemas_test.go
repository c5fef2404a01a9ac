package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v4"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/schemas"
)

const (
	alice = domain.UserID("468192741203755008")
	bob   = domain.UserID("468192741203755010")
	carol = domain.UserID("468192741203755012")
	group = domain.ChannelID("g468192741203755011")
	msgID = domain.MessageID(468192741203755009)
)

// domainEventTypes is every type domain.Decode knows.
var domainEventTypes = []string{
	domain.TypeChannelCreated,
	domain.TypeMemberAdded,
	domain.TypeMemberRemoved,
	domain.TypeMessageSent,
	domain.TypeUserRegistered,
	domain.TypeDeviceLoggedIn,
	domain.TypeDeviceLogout,
	domain.TypeInboxMessage,
	domain.TypeHeartbeat,
	domain.TypeDeviceAcked,
	domain.TypeChannelRead,
	domain.TypeClockTicked,
	domain.TypePresence,
	domain.TypeEpochStarted,
	domain.TypeSendRequested,
	domain.TypeSendDecided,
}

// sampleEvents has at least one event of every type.
func sampleEvents() []domain.Event {
	direct := domain.DirectChannelID(bob, alice)
	return []domain.Event{
		domain.ChannelCreated{ChannelID: group, Kind: domain.KindGroup, Name: "Lunch 🍜", CreatorID: alice, Members: []domain.UserID{alice, bob}},
		domain.ChannelCreated{ChannelID: group, Kind: domain.KindGroup, CreatorID: alice, Members: []domain.UserID{alice}},
		domain.ChannelCreated{ChannelID: direct, Kind: domain.KindDirect, CreatorID: bob, Members: []domain.UserID{alice, bob}},
		domain.MemberAdded{ChannelID: group, UserID: carol, ByID: alice},
		domain.MemberRemoved{ChannelID: group, UserID: carol, ByID: carol},
		domain.MessageSent{ChannelID: group, MessageID: msgID, SenderID: alice, DeviceID: "phone-1", ClientMsgID: "c-1", Text: "hello", DecidedAt: 42},
		domain.MessageSent{ChannelID: direct, MessageID: domain.MessageID(^uint64(0)), SenderID: bob, DeviceID: "web.tab_2", ClientMsgID: strings.Repeat("x", 64), Text: strings.Repeat("é", 100_000)},
		domain.UserRegistered{UserID: alice, Name: "alice.b-c_d"},
		domain.DeviceLoggedIn{UserID: alice, DeviceID: "phone-1"},
		domain.DeviceLoggedOut{UserID: alice, DeviceID: "phone-1"},
		domain.InboxMessage{UserID: bob, ChannelID: group, MessageID: msgID, SenderID: alice, SentAt: time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC), ChannelPartition: 3, ChannelOffset: 0},
		domain.DeviceHeartbeat{UserID: alice, DeviceID: "phone-1"},
		domain.DeviceAcked{UserID: alice, DeviceID: "phone-1", Epoch: 1, Position: 0},
		domain.DeviceAcked{UserID: alice, DeviceID: "web.tab_2", Epoch: 2147483647, Position: 9223372036854775807},
		domain.ChannelRead{UserID: bob, DeviceID: "phone-1", ChannelID: group, MessageID: msgID, Seq: 0},
		domain.ChannelRead{UserID: bob, DeviceID: "d", ChannelID: direct, MessageID: msgID, Seq: 1 << 40},
		domain.ClockTicked{Partition: 0},
		domain.ClockTicked{Partition: 2147483647},
		domain.EpochStarted{Output: domain.OutputInbox, Epoch: 2},
		domain.EpochStarted{Output: domain.OutputPresence, Epoch: 2147483647},
		domain.PresenceChanged{UserID: alice, Online: true, LastActiveAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), At: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
		domain.PresenceChanged{UserID: bob, Online: false, LastActiveAt: time.Date(2025, 1, 2, 3, 4, 5, 1, time.UTC), At: time.Date(2025, 1, 2, 3, 4, 35, 0, time.UTC)},
		// A change built as domain.ApplyPresence builds it.
		presenceOf(domain.DeviceLoggedIn{UserID: carol, DeviceID: "phone-1"}),
		domain.SendRequested{MessageSent: domain.MessageSent{ChannelID: group, MessageID: msgID, SenderID: alice, DeviceID: "phone-1", ClientMsgID: "c-1", Text: "hello", DecidedAt: 42}, ReplyTo: "node-7"},
		domain.SendRequested{MessageSent: domain.MessageSent{ChannelID: direct, MessageID: domain.MessageID(^uint64(0)), SenderID: bob, DeviceID: "web.tab_2", ClientMsgID: strings.Repeat("x", 64), Text: strings.Repeat("é", 100_000)}, ReplyTo: "node-65535"},
		domain.SendDecided{RequestID: "468192741203755013", MessageID: msgID},
		domain.SendDecided{RequestID: "r", Code: domain.CodeConflict, Message: `client_msg_id "c-1" was used for another text`},
	}
}

// presenceOf returns the change that ev makes to a user never seen before.
func presenceOf(ev domain.Event) domain.PresenceChanged {
	_, ch := domain.ApplyPresence(domain.Presence{}, ev, time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600)), domain.DefaultPresenceWindow)
	if ch == nil {
		panic("no presence change")
	}
	return domain.PresenceChanged(*ch)
}

func encode(t *testing.T, ev domain.Event) []byte {
	t.Helper()
	b, err := domain.Encode(ev, domain.Meta{EventID: "ev-1", Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidateEventEveryType(t *testing.T) {
	seen := map[string]bool{}
	for i, ev := range sampleEvents() {
		t.Run(fmt.Sprintf("%s/%d", ev.EventType(), i), func(t *testing.T) {
			b := encode(t, ev)
			if err := schemas.ValidateEvent(b); err != nil {
				t.Fatalf("ValidateEvent(%.300s): %v", b, err)
			}
			if _, got, err := domain.Decode(b); err != nil || got.EventType() != ev.EventType() {
				t.Fatalf("domain.Decode: %v, %v", got, err)
			}
		})
		seen[ev.EventType()] = true
	}
	for _, typ := range domainEventTypes {
		if !seen[typ] {
			t.Errorf("no sample of %s", typ)
		}
	}
}

func TestEventTypes(t *testing.T) {
	want := slices.Sorted(slices.Values(domainEventTypes))
	if got := schemas.EventTypes(); !slices.Equal(got, want) {
		t.Fatalf("EventTypes() = %v, want %v", got, want)
	}
}

// mutate decodes the envelope b, lets f change it and encodes it again.
func mutate(t *testing.T, b []byte, f func(env, payload map[string]any)) []byte {
	t.Helper()
	var env map[string]any
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	payload, _ := env["payload"].(map[string]any)
	f(env, payload)
	out, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestValidateEventRefuses(t *testing.T) {
	sent := domain.MessageSent{ChannelID: group, MessageID: msgID, SenderID: alice, DeviceID: "phone-1", ClientMsgID: "c-1", Text: "hello"}
	inbox := domain.InboxMessage{UserID: bob, ChannelID: group, MessageID: msgID, SenderID: alice, SentAt: time.Now()}
	created := domain.ChannelCreated{ChannelID: domain.DirectChannelID(alice, bob), Kind: domain.KindDirect, CreatorID: alice, Members: []domain.UserID{alice, bob}}
	beat := domain.DeviceHeartbeat{UserID: alice, DeviceID: "phone-1"}
	acked := domain.DeviceAcked{UserID: alice, DeviceID: "phone-1", Epoch: 1, Position: 41}
	read := domain.ChannelRead{UserID: bob, DeviceID: "phone-1", ChannelID: group, MessageID: msgID, Seq: 7}
	tick := domain.ClockTicked{Partition: 3}
	pres := domain.PresenceChanged{UserID: alice, Online: true, LastActiveAt: time.Now(), At: time.Now()}
	req := domain.SendRequested{MessageSent: domain.MessageSent{ChannelID: group, MessageID: msgID, SenderID: alice, DeviceID: "phone-1", ClientMsgID: "c-1", Text: "hello"}, ReplyTo: "node-1"}
	decided := domain.SendDecided{RequestID: "468192741203755013", MessageID: msgID}
	refused := domain.SendDecided{RequestID: "468192741203755013", Code: domain.CodeConflict, Message: "used for another text"}
	set := func(k string, v any) func(env, payload map[string]any) {
		return func(_, p map[string]any) { p[k] = v }
	}
	tests := []struct {
		name string
		raw  []byte
		code domain.Code
	}{
		{"not json", []byte(`{"type":`), domain.CodeBadRequest},
		{"trailing data", append(encode(t, sent), " {}"...), domain.CodeBadRequest},
		{"array", []byte(`[]`), domain.CodeBadRequest},
		{"envelope without event_id", mutate(t, encode(t, sent), func(e, _ map[string]any) { delete(e, "event_id") }), domain.CodeBadRequest},
		{"envelope without payload", mutate(t, encode(t, sent), func(e, _ map[string]any) { delete(e, "payload") }), domain.CodeBadRequest},
		{"envelope time not RFC 3339", mutate(t, encode(t, sent), func(e, _ map[string]any) { e["time"] = "2025-01-02 03:04:05" }), domain.CodeBadRequest},
		{"envelope version a string", mutate(t, encode(t, sent), func(e, _ map[string]any) { e["version"] = "1" }), domain.CodeBadRequest},
		{"payload a string", mutate(t, encode(t, sent), func(e, _ map[string]any) { e["payload"] = "x" }), domain.CodeBadRequest},
		{"unknown type", mutate(t, encode(t, sent), func(e, _ map[string]any) { e["type"] = "message.edited" }), domain.CodeUnknownType},
		{"unknown version", mutate(t, encode(t, sent), func(e, _ map[string]any) { e["version"] = 2 }), domain.CodeUnknownType},
		{"missing channel_id", mutate(t, encode(t, sent), func(_, p map[string]any) { delete(p, "channel_id") }), domain.CodeBadRequest},
		{"missing text", mutate(t, encode(t, sent), func(_, p map[string]any) { delete(p, "text") }), domain.CodeBadRequest},
		{"missing message_id", mutate(t, encode(t, sent), func(_, p map[string]any) { delete(p, "message_id") }), domain.CodeBadRequest},
		{"message_id a number", mutate(t, encode(t, sent), set("message_id", 468192741203755009)), domain.CodeBadRequest},
		{"message_id not decimal", mutate(t, encode(t, sent), set("message_id", "0x1f")), domain.CodeBadRequest},
		{"message_id zero", mutate(t, encode(t, sent), set("message_id", "0")), domain.CodeBadRequest},
		{"message_id negative", mutate(t, encode(t, sent), set("message_id", "-5")), domain.CodeBadRequest},
		{"message_id leading zero", mutate(t, encode(t, sent), set("message_id", "0468")), domain.CodeBadRequest},
		{"message_id 21 digits", mutate(t, encode(t, sent), set("message_id", "123456789012345678901")), domain.CodeBadRequest},
		{"text empty", mutate(t, encode(t, sent), set("text", "")), domain.CodeBadRequest},
		{"text over 100000 characters", encode(t, domain.MessageSent{ChannelID: group, MessageID: msgID, SenderID: alice, DeviceID: "d", ClientMsgID: "c", Text: strings.Repeat("a", 100_001)}), domain.CodeBadRequest},
		{"text over 100000 characters of 4 bytes", encode(t, domain.MessageSent{ChannelID: group, MessageID: msgID, SenderID: alice, DeviceID: "d", ClientMsgID: "c", Text: strings.Repeat("🍜", 100_001)}), domain.CodeBadRequest},
		{"client_msg_id over 64", mutate(t, encode(t, sent), set("client_msg_id", strings.Repeat("x", 65))), domain.CodeBadRequest},
		{"device_id with a space", mutate(t, encode(t, sent), set("device_id", "my phone")), domain.CodeBadRequest},
		{"channel_id malformed", mutate(t, encode(t, sent), set("channel_id", "general")), domain.CodeBadRequest},
		{"user_id not decimal", encode(t, domain.DeviceLoggedIn{UserID: "alice", DeviceID: "d"}), domain.CodeBadRequest},
		{"user name with a slash", encode(t, domain.UserRegistered{UserID: alice, Name: "a/b"}), domain.CodeBadRequest},
		{"direct channel of three", mutate(t, encode(t, created), set("members", []string{string(alice), string(bob), string(carol)})), domain.CodeBadRequest},
		{"unknown kind", mutate(t, encode(t, created), set("kind", "broadcast")), domain.CodeBadRequest},
		{"duplicate members", mutate(t, encode(t, created), set("members", []string{string(alice), string(alice)})), domain.CodeBadRequest},
		{"channel name over 200", mutate(t, encode(t, created), set("name", strings.Repeat("n", 201))), domain.CodeBadRequest},
		{"member.added without by_id", mutate(t, encode(t, domain.MemberAdded{ChannelID: group, UserID: bob, ByID: alice}), func(_, p map[string]any) { delete(p, "by_id") }), domain.CodeBadRequest},
		{"inbox sent_at not a time", mutate(t, encode(t, inbox), set("sent_at", "yesterday")), domain.CodeBadRequest},
		{"inbox negative offset", mutate(t, encode(t, inbox), set("channel_offset", -1)), domain.CodeBadRequest},
		{"inbox fractional partition", mutate(t, encode(t, inbox), set("channel_partition", 1.5)), domain.CodeBadRequest},

		{"heartbeat without device_id", mutate(t, encode(t, beat), func(_, p map[string]any) { delete(p, "device_id") }), domain.CodeBadRequest},
		{"heartbeat user_id not decimal", encode(t, domain.DeviceHeartbeat{UserID: "alice", DeviceID: "d"}), domain.CodeBadRequest},
		{"heartbeat empty event_id", mutate(t, encode(t, beat), func(e, _ map[string]any) { e["event_id"] = "" }), domain.CodeBadRequest},
		{"acked without epoch", mutate(t, encode(t, acked), func(_, p map[string]any) { delete(p, "epoch") }), domain.CodeBadRequest},
		{"acked without position", mutate(t, encode(t, acked), func(_, p map[string]any) { delete(p, "position") }), domain.CodeBadRequest},
		{"acked position -1", mutate(t, encode(t, acked), set("position", -1)), domain.CodeBadRequest},
		{"acked position a string", mutate(t, encode(t, acked), set("position", "7")), domain.CodeBadRequest},
		{"acked epoch over int32", mutate(t, encode(t, acked), set("epoch", 2147483648)), domain.CodeBadRequest},
		{"acked negative epoch", encode(t, domain.DeviceAcked{UserID: alice, DeviceID: "d", Epoch: -1, Position: 3}), domain.CodeBadRequest},
		{"read without seq", mutate(t, encode(t, read), func(_, p map[string]any) { delete(p, "seq") }), domain.CodeBadRequest},
		{"read without channel_id", mutate(t, encode(t, read), func(_, p map[string]any) { delete(p, "channel_id") }), domain.CodeBadRequest},
		{"read negative seq", mutate(t, encode(t, read), set("seq", -1)), domain.CodeBadRequest},
		{"read message_id a number", mutate(t, encode(t, read), set("message_id", 468192741203755009)), domain.CodeBadRequest},
		{"read message_id zero", encode(t, domain.ChannelRead{UserID: bob, DeviceID: "d", ChannelID: group, MessageID: 0, Seq: 1}), domain.CodeBadRequest},
		{"tick without partition", mutate(t, encode(t, tick), func(_, p map[string]any) { delete(p, "partition") }), domain.CodeBadRequest},
		{"tick negative partition", encode(t, domain.ClockTicked{Partition: -1}), domain.CodeBadRequest},
		{"tick partition over int32", mutate(t, encode(t, tick), set("partition", 2147483648)), domain.CodeBadRequest},
		{"presence without online", mutate(t, encode(t, pres), func(_, p map[string]any) { delete(p, "online") }), domain.CodeBadRequest},
		{"presence without at", mutate(t, encode(t, pres), func(_, p map[string]any) { delete(p, "at") }), domain.CodeBadRequest},
		{"presence online a string", mutate(t, encode(t, pres), set("online", "true")), domain.CodeBadRequest},
		{"presence last_active_at null", mutate(t, encode(t, pres), set("last_active_at", nil)), domain.CodeBadRequest},
		{"presence at not RFC 3339", mutate(t, encode(t, pres), set("at", "2025-01-02")), domain.CodeBadRequest},

		{"request without message_id", mutate(t, encode(t, req), func(_, p map[string]any) { delete(p, "message_id") }), domain.CodeBadRequest},
		{"request message_id zero", encode(t, domain.SendRequested{MessageSent: domain.MessageSent{ChannelID: group, SenderID: alice, DeviceID: "d", ClientMsgID: "c", Text: "hi"}, ReplyTo: "node-1"}), domain.CodeBadRequest},
		{"request without reply_to", mutate(t, encode(t, req), func(_, p map[string]any) { delete(p, "reply_to") }), domain.CodeBadRequest},
		{"request empty reply_to", mutate(t, encode(t, req), set("reply_to", "")), domain.CodeBadRequest},
		{"request without client_msg_id", mutate(t, encode(t, req), func(_, p map[string]any) { delete(p, "client_msg_id") }), domain.CodeBadRequest},
		{"request without sender_id", mutate(t, encode(t, req), func(_, p map[string]any) { delete(p, "sender_id") }), domain.CodeBadRequest},
		{"request empty text", mutate(t, encode(t, req), set("text", "")), domain.CodeBadRequest},
		{"request negative decided_at", mutate(t, encode(t, req), set("decided_at", -1)), domain.CodeBadRequest},
		{"request channel_id malformed", mutate(t, encode(t, req), set("channel_id", "general")), domain.CodeBadRequest},
		{"decided without request_id", mutate(t, encode(t, decided), func(_, p map[string]any) { delete(p, "request_id") }), domain.CodeBadRequest},
		{"decided empty request_id", mutate(t, encode(t, decided), set("request_id", "")), domain.CodeBadRequest},
		{"decided neither message_id nor code", encode(t, domain.SendDecided{RequestID: "r"}), domain.CodeBadRequest},
		{"decided both message_id and code", mutate(t, encode(t, refused), set("message_id", "9")), domain.CodeBadRequest},
		{"decided code without message", mutate(t, encode(t, refused), func(_, p map[string]any) { delete(p, "message") }), domain.CodeBadRequest},
		{"decided unknown code", mutate(t, encode(t, refused), set("code", "oops")), domain.CodeBadRequest},
		{"decided message_id a number", mutate(t, encode(t, decided), set("message_id", 468192741203755009)), domain.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := schemas.ValidateEvent(tt.raw)
			if err == nil {
				t.Fatalf("ValidateEvent(%.200s) = nil, want %s", tt.raw, tt.code)
			}
			if got := domain.CodeOf(err); got != tt.code {
				t.Fatalf("code %s, want %s: %v", got, tt.code, err)
			}
		})
	}
}

// TestValidateEventIDs holds the envelope to the event ids writers use:
// anything non-empty, "tick" on every clock.ticked included.
func TestValidateEventIDs(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, tt := range []struct {
		ev domain.Event
		id string
	}{
		{domain.ClockTicked{Partition: 0}, "tick"},
		{domain.DeviceHeartbeat{UserID: alice, DeviceID: "phone-1"}, "hb"},
		{domain.DeviceHeartbeat{UserID: alice, DeviceID: "phone-1"}, "hb." + string(alice) + "." + strings.Repeat("d", 64) + ".1735787045000000006"},
		{domain.PresenceChanged{UserID: alice, Online: true, LastActiveAt: at, At: at}, string(alice) + "@" + at.Format(time.RFC3339Nano)},
		{domain.DeviceAcked{UserID: alice, DeviceID: "d", Epoch: 1, Position: 1}, "468192741203755013"},
		// A reply carries its request's event id, which is the gateway's
		// id of the request.
		{domain.SendDecided{RequestID: "468192741203755013", MessageID: msgID}, "468192741203755013"},
	} {
		b, err := domain.Encode(tt.ev, domain.Meta{EventID: tt.id, Time: at})
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas.ValidateEvent(b); err != nil {
			t.Errorf("%s with event_id %q: %v", tt.ev.EventType(), tt.id, err)
		}
	}
}

func TestValidateEventAcceptsUnknownFields(t *testing.T) {
	b := mutate(t, encode(t, domain.UserRegistered{UserID: alice, Name: "alice"}), func(e, p map[string]any) {
		e["trace_id"] = "abc"
		p["avatar"] = map[string]any{"url": "x"}
	})
	if err := schemas.ValidateEvent(b); err != nil {
		t.Fatal(err)
	}
}

func TestEventFiles(t *testing.T) {
	entries, err := os.ReadDir("events")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("events", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %v", doc["$schema"])
			}
			if doc["title"] == nil || doc["description"] == nil || doc["type"] != "object" {
				t.Errorf("want a title, a description and type object")
			}
			// Readers ignore unknown fields: no file may close its objects.
			if doc["additionalProperties"] != true {
				t.Errorf("additionalProperties = %v, want true", doc["additionalProperties"])
			}
			base, _ := strings.CutSuffix(e.Name(), ".json")
			i := strings.LastIndex(base, ".v")
			if i <= 0 {
				t.Fatalf("want <type>.v<version>.json")
			}
			name, version := base[:i], base[i+2:]
			if version != "1" {
				// A later version keeps its first beside it (rule 2 of
				// Schema evolution) and is the one writers use.
				if _, err := os.Stat(filepath.Join("events", name+".v1.json")); err != nil {
					t.Errorf("%s has no version 1 beside it: %v", e.Name(), err)
				}
				if v, err := strconv.Atoi(version); err != nil || v > domain.VersionOf(name) {
					t.Errorf("%s: domain writes version %d", e.Name(), domain.VersionOf(name))
				}
			}
			if name != "envelope" {
				if version == "1" {
					types = append(types, name)
				}
				if !strings.HasPrefix(doc["title"].(string), name+", version "+version) {
					t.Errorf("title %q does not name %s version %s", doc["title"], name, version)
				}
			}
		})
	}
	if got := schemas.EventTypes(); !slices.Equal(got, types) {
		t.Errorf("files name types %v; EventTypes() = %v", types, got)
	}
}

type frameCase struct {
	name string
	raw  string
	code domain.Code // "" when valid
}

var clientFrames = []frameCase{
	{"send", `{"type":"send","channel_id":"g1","client_msg_id":"c-1","text":"hi"}`, ""},
	{"send direct, unknown field", `{"type":"send","channel_id":"d1-2","client_msg_id":"c","text":"hi","reply_to":"5"}`, ""},
	{"send 100000 characters", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":"` + strings.Repeat("é", 100_000) + `"}`, ""},
	{"send 64-character client_msg_id", `{"type":"send","channel_id":"g1","client_msg_id":"` + strings.Repeat("c", 64) + `","text":"hi"}`, ""},
	{"sync", `{"type":"sync","epoch":1,"position":41}`, ""},
	{"sync nothing yet", `{"type":"sync","epoch":1,"position":-1}`, ""},
	{"sync largest", `{"type":"sync","epoch":2147483647,"position":9223372036854775807}`, ""},
	{"sync from the last received", `{"type":"sync","epoch":1}`, ""},
	{"ping", `{"type":"ping"}`, ""},
	{"received", `{"type":"received","epoch":1,"position":0}`, ""},
	{"received largest", `{"type":"received","epoch":2147483647,"position":9223372036854775807}`, ""},
	{"read", `{"type":"read","channel_id":"g468192741203755011","message_id":"468192741203755009"}`, ""},
	{"read direct, unknown field", `{"type":"read","channel_id":"d1-2","message_id":"9","at":"now"}`, ""},

	{"not json", `{"type":"ping"`, domain.CodeBadRequest},
	{"not an object", `"ping"`, domain.CodeBadRequest},
	{"no type", `{"channel_id":"g1"}`, domain.CodeBadRequest},
	{"type a number", `{"type":1}`, domain.CodeBadRequest},
	{"unknown type", `{"type":"edit","message_id":"1"}`, domain.CodeUnknownType},
	{"server type from client", `{"type":"pong"}`, domain.CodeUnknownType},
	{"send without text", `{"type":"send","channel_id":"g1","client_msg_id":"c"}`, domain.CodeBadRequest},
	{"send empty text", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":""}`, domain.CodeBadRequest},
	{"send text over 100000", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":"` + strings.Repeat("a", 100_001) + `"}`, domain.CodeBadRequest},
	{"send without client_msg_id", `{"type":"send","channel_id":"g1","text":"hi"}`, domain.CodeBadRequest},
	{"send empty client_msg_id", `{"type":"send","channel_id":"g1","client_msg_id":"","text":"hi"}`, domain.CodeBadRequest},
	{"send client_msg_id over 64", `{"type":"send","channel_id":"g1","client_msg_id":"` + strings.Repeat("c", 65) + `","text":"hi"}`, domain.CodeBadRequest},
	{"send bad channel_id", `{"type":"send","channel_id":"general","client_msg_id":"c","text":"hi"}`, domain.CodeBadRequest},
	{"send text a number", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":5}`, domain.CodeBadRequest},
	{"sync null position", `{"type":"sync","epoch":1,"position":null}`, domain.CodeBadRequest},
	{"sync without epoch", `{"type":"sync","position":1}`, domain.CodeBadRequest},
	{"sync position -2", `{"type":"sync","epoch":1,"position":-2}`, domain.CodeBadRequest},
	{"sync position over int64", `{"type":"sync","epoch":1,"position":9223372036854775808}`, domain.CodeBadRequest},
	{"sync position fractional", `{"type":"sync","epoch":1,"position":1.5}`, domain.CodeBadRequest},
	{"sync position a string", `{"type":"sync","epoch":1,"position":"4"}`, domain.CodeBadRequest},
	{"sync epoch over int32", `{"type":"sync","epoch":2147483648,"position":1}`, domain.CodeBadRequest},
	{"sync negative epoch", `{"type":"sync","epoch":-1,"position":1}`, domain.CodeBadRequest},
	{"received position -1", `{"type":"received","epoch":1,"position":-1}`, domain.CodeBadRequest},
	{"received without position", `{"type":"received","epoch":1}`, domain.CodeBadRequest},
	{"received without epoch", `{"type":"received","position":4}`, domain.CodeBadRequest},
	{"received position fractional", `{"type":"received","epoch":1,"position":2.5}`, domain.CodeBadRequest},
	{"received position over int64", `{"type":"received","epoch":1,"position":9223372036854775808}`, domain.CodeBadRequest},
	{"received epoch over int32", `{"type":"received","epoch":2147483648,"position":1}`, domain.CodeBadRequest},
	{"read without message_id", `{"type":"read","channel_id":"g1"}`, domain.CodeBadRequest},
	{"read without channel_id", `{"type":"read","message_id":"9"}`, domain.CodeBadRequest},
	{"read message_id a number", `{"type":"read","channel_id":"g1","message_id":468192741203755009}`, domain.CodeBadRequest},
	{"read message_id zero", `{"type":"read","channel_id":"g1","message_id":"0"}`, domain.CodeBadRequest},
	{"read message_id not decimal", `{"type":"read","channel_id":"g1","message_id":"abc"}`, domain.CodeBadRequest},
	{"read bad channel_id", `{"type":"read","channel_id":"general","message_id":"9"}`, domain.CodeBadRequest},
}

var serverFrames = []frameCase{
	{"hello", `{"type":"hello","user_id":"468192741203755008","device_id":"phone-1","epoch":1}`, ""},
	{"ack", `{"type":"ack","client_msg_id":"c-1","channel_id":"g1","message_id":"468192741203755009"}`, ""},
	{"message", `{"type":"message","epoch":1,"position":0,"channel_id":"g1","message_id":"9","sender_id":"8","text":"hi","sent_at":"2025-01-02T03:04:05.123Z"}`, ""},
	{"synced", `{"type":"synced","epoch":1,"position":-1}`, ""},
	{"synced at 7", `{"type":"synced","epoch":1,"position":7}`, ""},
	{"resync", `{"type":"resync","epoch":2}`, ""},
	{"pong", `{"type":"pong"}`, ""},
	{"error", `{"type":"error","code":"not_member","message":"not a member"}`, ""},
	{"error of a send", `{"type":"error","code":"too_long","message":"too long","client_msg_id":"c-1"}`, ""},
	{"presence online", `{"type":"presence","user_id":"468192741203755008","online":true,"last_active_at":"2025-01-02T03:04:05.123456789Z"}`, ""},
	{"presence offline", `{"type":"presence","user_id":"8","online":false,"last_active_at":"2025-01-02T03:04:05Z"}`, ""},

	{"unknown type", `{"type":"typing","user_id":"8"}`, domain.CodeUnknownType},
	{"client type from server", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":"hi"}`, domain.CodeUnknownType},
	{"hello without epoch", `{"type":"hello","user_id":"8","device_id":"d"}`, domain.CodeBadRequest},
	{"hello user_id a number", `{"type":"hello","user_id":8,"device_id":"d","epoch":1}`, domain.CodeBadRequest},
	{"ack message_id a number", `{"type":"ack","client_msg_id":"c","channel_id":"g1","message_id":468192741203755009}`, domain.CodeBadRequest},
	{"ack message_id not decimal", `{"type":"ack","client_msg_id":"c","channel_id":"g1","message_id":"abc"}`, domain.CodeBadRequest},
	{"ack without channel_id", `{"type":"ack","client_msg_id":"c","message_id":"9"}`, domain.CodeBadRequest},
	{"message position -1", `{"type":"message","epoch":1,"position":-1,"channel_id":"g1","message_id":"9","sender_id":"8","text":"hi","sent_at":"2025-01-02T03:04:05Z"}`, domain.CodeBadRequest},
	{"message sent_at not RFC 3339", `{"type":"message","epoch":1,"position":3,"channel_id":"g1","message_id":"9","sender_id":"8","text":"hi","sent_at":"1735787045"}`, domain.CodeBadRequest},
	{"message without text", `{"type":"message","epoch":1,"position":3,"channel_id":"g1","message_id":"9","sender_id":"8","sent_at":"2025-01-02T03:04:05Z"}`, domain.CodeBadRequest},
	{"synced without position", `{"type":"synced","epoch":1}`, domain.CodeBadRequest},
	{"resync without epoch", `{"type":"resync"}`, domain.CodeBadRequest},
	{"error unknown code", `{"type":"error","code":"oops","message":"x"}`, domain.CodeBadRequest},
	{"error without message", `{"type":"error","code":"internal"}`, domain.CodeBadRequest},
	{"presence without online", `{"type":"presence","user_id":"8","last_active_at":"2025-01-02T03:04:05Z"}`, domain.CodeBadRequest},
	{"presence without last_active_at", `{"type":"presence","user_id":"8","online":true}`, domain.CodeBadRequest},
	{"presence last_active_at null", `{"type":"presence","user_id":"8","online":false,"last_active_at":null}`, domain.CodeBadRequest},
	{"presence online a string", `{"type":"presence","user_id":"8","online":"yes","last_active_at":"2025-01-02T03:04:05Z"}`, domain.CodeBadRequest},
	{"presence user_id a number", `{"type":"presence","user_id":8,"online":true,"last_active_at":"2025-01-02T03:04:05Z"}`, domain.CodeBadRequest},
}

// clientFrameTypes is every frame type a client may send.
var clientFrameTypes = []string{"send", "sync", "ping", "received", "read"}

func TestValidateFrames(t *testing.T) {
	whole := compileFromDisk(t)
	for _, set := range []struct {
		name     string
		validate func([]byte) error
		file     string
		cases    []frameCase
		types    []string
	}{
		{"client", schemas.ValidateClientFrame, "frames/client.v1.json", clientFrames, clientFrameTypes},
		{"server", schemas.ValidateServerFrame, "frames/server.v1.json", serverFrames, []string{"hello", "ack", "message", "synced", "resync", "pong", "error", "presence"}},
	} {
		validTypes := map[string]bool{}
		invalidTypes := map[string]bool{}
		for _, tt := range set.cases {
			t.Run(set.name+"/"+tt.name, func(t *testing.T) {
				err := set.validate([]byte(tt.raw))
				if got := codeOf(err); got != tt.code {
					t.Fatalf("code %q, want %q: %v", got, tt.code, err)
				}
				// The whole document, with its oneOf, read from disk as any
				// JSON Schema tool reads it, agrees.
				v, jerr := jsonschema.UnmarshalJSON(strings.NewReader(tt.raw))
				if jerr == nil {
					werr := whole[set.file].Validate(v)
					if (werr == nil) != (tt.code == "") {
						t.Fatalf("%s says %v; ValidateFrame says %v", set.file, werr, err)
					}
				}
				var f struct{ Type string }
				if json.Unmarshal([]byte(tt.raw), &f) == nil {
					if tt.code == "" {
						validTypes[f.Type] = true
					} else if tt.code == domain.CodeBadRequest {
						invalidTypes[f.Type] = true
					}
				}
			})
		}
		for _, typ := range set.types {
			if !validTypes[typ] {
				t.Errorf("%s: no valid sample of %s", set.name, typ)
			}
			if !invalidTypes[typ] && typ != "ping" && typ != "pong" {
				t.Errorf("%s: no invalid sample of %s", set.name, typ)
			}
		}
	}
}

func codeOf(err error) domain.Code {
	if err == nil {
		return ""
	}
	return domain.CodeOf(err)
}

// compileFromDisk compiles every schema file from disk through file URLs,
// as a tool outside this package would, so relative $refs are proved to
// resolve there too.
func compileFromDisk(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	out := map[string]*jsonschema.Schema{}
	files, _ := filepath.Glob("*/*.json")
	top, _ := filepath.Glob("*.json")
	for _, f := range append(files, top...) {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.Compile(abs)
		if err != nil {
			t.Fatalf("compile %s: %v", f, err)
		}
		out[filepath.ToSlash(f)] = s
	}
	if len(out) < 12 {
		t.Fatalf("compiled %d files: %v", len(out), files)
	}
	return out
}

func TestFrameErrorCodesAreDomainCodes(t *testing.T) {
	codes := []domain.Code{
		domain.CodeBadRequest, domain.CodeUnknownType, domain.CodeTooLong, domain.CodeUnauthorized,
		domain.CodeForbidden, domain.CodeNotMember, domain.CodeNotFound, domain.CodeConflict,
		domain.CodeGroupFull, domain.CodeUnavailable, domain.CodeInternal,
		domain.CodeBusy, domain.CodeRateLimited, domain.CodeTooManyConnections, domain.CodeUnsupportedMedia,
	}
	for _, c := range codes {
		raw := fmt.Sprintf(`{"type":"error","code":%q,"message":"m"}`, c)
		if err := schemas.ValidateServerFrame([]byte(raw)); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}
	var doc struct {
		Defs map[string]struct {
			Enum []domain.Code `json:"enum"`
		} `json:"$defs"`
	}
	readJSON(t, "common.v1.json", &doc)
	if got := doc.Defs["error_code"].Enum; !slices.Equal(got, codes) {
		t.Errorf("common.v1.json error_code enum = %v, want %v", got, codes)
	}
	var api struct {
		Components struct {
			Schemas map[string]struct {
				Enum []domain.Code `yaml:"enum"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(schemas.OpenAPI(), &api); err != nil {
		t.Fatal(err)
	}
	if got := api.Components.Schemas["ErrorCode"].Enum; !slices.Equal(got, codes) {
		t.Errorf("openapi.yaml ErrorCode enum = %v, want %v", got, codes)
	}
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func TestOpenAPIRoutes(t *testing.T) {
	got, err := schemas.OpenAPIRoutes()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"DELETE /v1/channels/:channel_id/members/:user_id",
		"GET /healthz",
		"GET /readyz",
		"GET /v1/channels",
		"GET /v1/channels/:channel_id",
		"GET /v1/channels/:channel_id/messages",
		"GET /v1/channels/:channel_id/reads",
		"GET /v1/presence",
		"GET /v1/users",
		"GET /v1/ws",
		"POST /v1/channels",
		"POST /v1/channels/:channel_id/members",
		"POST /v1/login",
		"POST /v1/logout",
		"POST /v1/users",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("OpenAPIRoutes() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	disk, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(schemas.OpenAPI(), disk) {
		t.Error("OpenAPI() differs from openapi.yaml")
	}
}

// TestOpenAPIBodies checks answers shaped as the handlers of gateway/api
// write them against their schemas in openapi.yaml.
func TestOpenAPIBodies(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(schemas.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		schema, body string
		ok           bool
	}{
		{"PresenceList", `{"presence":[{"user_id":"468192741203755008","online":true,"last_active_at":"2025-01-02T03:04:05Z"},{"user_id":"468192741203755010","online":false,"last_active_at":null}]}`, true},
		{"PresenceList", `{"presence":[]}`, true},
		{"PresenceList", `{"presence":[{"user_id":"468192741203755010","online":false}]}`, false},
		{"PresenceList", `{"presence":[{"user_id":"468192741203755010","online":"no","last_active_at":null}]}`, false},
		{"ReadList", `{"reads":[{"user_id":"468192741203755008","message_id":"468192741203755009","seq":12,"updated_at":"2025-01-02T03:04:05.5Z"}]}`, true},
		{"ReadList", `{"reads":[]}`, true},
		{"ReadList", `{"reads":[{"user_id":"468192741203755008","message_id":468192741203755009,"seq":12,"updated_at":"2025-01-02T03:04:05Z"}]}`, false},
		{"ReadList", `{"reads":[{"user_id":"468192741203755008","message_id":"9","seq":-1,"updated_at":"2025-01-02T03:04:05Z"}]}`, false},
		{"ReadList", `{}`, false},
	} {
		ref := doc.Components.Schemas[tt.schema]
		if ref == nil || ref.Value == nil {
			t.Fatalf("no schema %s", tt.schema)
		}
		var v any
		if err := json.Unmarshal([]byte(tt.body), &v); err != nil {
			t.Fatal(err)
		}
		if err := ref.Value.VisitJSON(v); (err == nil) != tt.ok {
			t.Errorf("%s %s: %v, want ok %v", tt.schema, tt.body, err, tt.ok)
		}
	}
}

// TestOpenAPIShape checks what kin-openapi's validation does not: every
// error answer has the Error body, and exactly the public routes skip auth.
func TestOpenAPIShape(t *testing.T) {
	type response struct {
		Ref string `yaml:"$ref"`
	}
	type operation struct {
		Security  *[]map[string][]string `yaml:"security"`
		Responses map[string]response    `yaml:"responses"`
	}
	var api struct {
		Security   []map[string][]string           `yaml:"security"`
		Paths      map[string]map[string]yaml.Node `yaml:"paths"`
		Components struct {
			Responses map[string]struct {
				Content map[string]struct {
					Schema response `yaml:"schema"`
				} `yaml:"content"`
			} `yaml:"responses"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(schemas.OpenAPI(), &api); err != nil {
		t.Fatal(err)
	}
	if len(api.Security) != 1 || api.Security[0]["bearerAuth"] == nil {
		t.Errorf("global security = %v, want bearerAuth", api.Security)
	}
	for name, r := range api.Components.Responses {
		if len(r.Content) != 1 || r.Content["application/json"].Schema.Ref != "#/components/schemas/Error" {
			t.Errorf("response %s: want application/json of Error", name)
		}
	}
	public := map[string]bool{"GET /healthz": true, "GET /readyz": true, "POST /v1/users": true, "POST /v1/login": true}
	for p, item := range api.Paths {
		for method, node := range item {
			if method == "parameters" {
				continue
			}
			route := strings.ToUpper(method) + " " + p
			var op operation
			if err := node.Decode(&op); err != nil {
				t.Fatalf("%s: %v", route, err)
			}
			if open := op.Security != nil && len(*op.Security) == 0; open != public[route] {
				t.Errorf("%s: public = %v", route, open)
			}
			if !public[route] && op.Responses["401"].Ref == "" {
				t.Errorf("%s: needs auth but has no 401", route)
			}
			for status, r := range op.Responses {
				if status >= "400" && !strings.HasPrefix(r.Ref, "#/components/responses/") {
					t.Errorf("%s %s: error answers must use a shared Error response", route, status)
				}
			}
			for _, status := range []string{"500", "503"} {
				if _, ok := op.Responses[status]; !ok {
					t.Errorf("%s: no %s", route, status)
				}
			}
		}
	}
}

func TestAsyncAPI(t *testing.T) {
	b, err := os.ReadFile("asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["asyncapi"] != "2.6.0" {
		t.Errorf("asyncapi = %v", doc["asyncapi"])
	}
	channels, _ := doc["channels"].(map[string]any)
	var names []string
	for name := range channels {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{"/v1/ws", "chat.channels", "chat.epochs", "chat.inbox.e1", "chat.presence.e1", "chat.send-replies", "chat.sends", "chat.sessions"}; !slices.Equal(names, want) {
		t.Errorf("channels %v, want %v", names, want)
	}
	msgs, _ := doc["components"].(map[string]any)["messages"].(map[string]any)
	var eventNames []string
	for _, m := range msgs {
		m := m.(map[string]any)
		if _, isEvent := m["traits"]; isEvent {
			eventNames = append(eventNames, m["name"].(string))
		}
	}
	slices.Sort(eventNames)
	if got := schemas.EventTypes(); !slices.Equal(eventNames, got) {
		t.Errorf("asyncapi event messages %v, want %v", eventNames, got)
	}

	// Every frame type of frames/*.v1.json has a message, and no message
	// names a frame that is not there.
	var frameRefs, frameDefs []string
	for _, m := range msgs {
		ref, _ := m.(map[string]any)["payload"].(map[string]any)["$ref"].(string)
		if strings.HasPrefix(ref, "frames/") {
			frameRefs = append(frameRefs, ref)
		}
	}
	for _, f := range []string{"frames/client.v1.json", "frames/server.v1.json"} {
		var d struct {
			Defs map[string]any `json:"$defs"`
		}
		readJSON(t, f, &d)
		for name := range d.Defs {
			frameDefs = append(frameDefs, f+"#/$defs/"+name)
		}
	}
	slices.Sort(frameRefs)
	slices.Sort(frameDefs)
	if !slices.Equal(frameRefs, frameDefs) {
		t.Errorf("asyncapi frame messages %v, want %v", frameRefs, frameDefs)
	}

	// Every $ref resolves: within the document, or to a file and a JSON
	// pointer in it.
	var refs []string
	collectRefs(doc, &refs)
	if len(refs) < 30 {
		t.Fatalf("found only %d $refs", len(refs))
	}
	for _, ref := range refs {
		file, ptr, _ := strings.Cut(ref, "#")
		target := any(doc)
		if file != "" {
			var v any
			readJSON(t, file, &v)
			target = v
		}
		if _, ok := resolvePointer(target, ptr); !ok {
			t.Errorf("$ref %q does not resolve", ref)
		}
	}
}

func collectRefs(v any, refs *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "$ref" {
				*refs = append(*refs, s)
			} else {
				collectRefs(x, refs)
			}
		}
	case []any:
		for _, x := range v {
			collectRefs(x, refs)
		}
	}
}

func resolvePointer(v any, ptr string) (any, bool) {
	if ptr == "" {
		return v, true
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[tok]; !ok {
			return nil, false
		}
	}
	return v, true
}

func TestErrorsAreDomainErrors(t *testing.T) {
	err := schemas.ValidateClientFrame([]byte(`{"type":"nope"}`))
	if !errors.Is(err, domain.ErrUnknownType) {
		t.Fatalf("errors.Is(%v, ErrUnknownType) = false", err)
	}
}

func FuzzValidateClientFrame(f *testing.F) {
	for _, c := range clientFrames {
		f.Add([]byte(c.raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		err := schemas.ValidateClientFrame(raw)
		if err == nil {
			var fr struct{ Type string }
			if json.Unmarshal(raw, &fr) != nil || !slices.Contains(clientFrameTypes, fr.Type) {
				t.Fatalf("accepted %q", raw)
			}
		} else if c := domain.CodeOf(err); c != domain.CodeBadRequest && c != domain.CodeUnknownType {
			t.Fatalf("code %s for %q", c, raw)
		}
	})
}

func FuzzValidateEvent(f *testing.F) {
	for _, ev := range sampleEvents()[:6] {
		b, _ := domain.Encode(ev, domain.Meta{EventID: "e", Time: time.Unix(0, 0)})
		f.Add(b)
	}
	f.Add([]byte(`{"type":"a.b","version":1.0,"event_id":"e","time":"2025-01-02T03:04:05Z","payload":{}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		err := schemas.ValidateEvent(raw)
		if err != nil {
			if c := domain.CodeOf(err); c != domain.CodeBadRequest && c != domain.CodeUnknownType {
				t.Fatalf("code %s for %q", c, raw)
			}
		}
	})
}

func BenchmarkValidateClientFrame(b *testing.B) {
	raw := []byte(`{"type":"send","channel_id":"g468192741203755011","client_msg_id":"c-1","text":"` + strings.Repeat("hello ", 40) + `"}`)
	for b.Loop() {
		if err := schemas.ValidateClientFrame(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidateEvent(b *testing.B) {
	raw, err := domain.Encode(domain.MessageSent{ChannelID: group, MessageID: msgID, SenderID: alice, DeviceID: "phone-1", ClientMsgID: "c-1", Text: strings.Repeat("hello ", 40)}, domain.Meta{EventID: "e", Time: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := schemas.ValidateEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}
