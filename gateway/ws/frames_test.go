package ws_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/ws"
	"github.com/evchat/evchat/schemas"
)

func ptr[T any](v T) *T { return &v }

func TestDecodeClientFrame(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want ws.ClientFrame
		code domain.Code // "" for no error
	}{
		// Valid frames.
		{
			name: "send", in: `{"type":"send","channel_id":"g1","client_msg_id":"c-1","text":"hello"}`,
			want: ws.ClientFrame{Type: ws.TypeSend, ChannelID: "g1", ClientMsgID: "c-1", Text: "hello"},
		},
		{
			name: "send to a direct channel with unknown fields", in: `{"type":"send","channel_id":"d1-2","client_msg_id":"c","text":"é😀","extra":{"a":[1]}}`,
			want: ws.ClientFrame{Type: ws.TypeSend, ChannelID: "d1-2", ClientMsgID: "c", Text: "é😀"},
		},
		{
			name: "send with a client_msg_id of 64 bytes", in: `{"type":"send","channel_id":"g1","client_msg_id":"` + strings.Repeat("x", 64) + `","text":"x"}`,
			want: ws.ClientFrame{Type: ws.TypeSend, ChannelID: "g1", ClientMsgID: strings.Repeat("x", 64), Text: "x"},
		},
		{
			name: "send with surrounding whitespace", in: " \n\t{\"type\":\"send\",\"channel_id\":\"g1\",\"client_msg_id\":\"c\",\"text\":\" \"}\r\n ",
			want: ws.ClientFrame{Type: ws.TypeSend, ChannelID: "g1", ClientMsgID: "c", Text: " "},
		},
		{
			name: "sync from the start", in: `{"type":"sync","epoch":1,"position":-1}`,
			want: ws.ClientFrame{Type: ws.TypeSync, Epoch: ptr[int32](1), Position: ptr[int64](-1)},
		},
		{
			name: "sync from zero", in: `{"type":"sync","epoch":0,"position":0}`,
			want: ws.ClientFrame{Type: ws.TypeSync, Epoch: ptr[int32](0), Position: ptr[int64](0)},
		},
		{
			name: "sync at the largest values", in: `{"type":"sync","epoch":2147483647,"position":9223372036854775807}`,
			want: ws.ClientFrame{Type: ws.TypeSync, Epoch: ptr[int32](2147483647), Position: ptr[int64](9223372036854775807)},
		},
		{
			name: "sync from the device's last received position", in: `{"type":"sync","epoch":3}`,
			want: ws.ClientFrame{Type: ws.TypeSync, Epoch: ptr[int32](3)},
		},
		{
			name: "received", in: `{"type":"received","epoch":1,"position":0}`,
			want: ws.ClientFrame{Type: ws.TypeReceived, Epoch: ptr[int32](1), Position: ptr[int64](0)},
		},
		{
			name: "read", in: `{"type":"read","channel_id":"g1","message_id":"18446744073709551615"}`,
			want: ws.ClientFrame{Type: ws.TypeRead, ChannelID: "g1", MessageID: 18446744073709551615},
		},
		{
			name: "only the fields of the frame's type are read", in: `{"type":"sync","epoch":1,"text":"x","channel_id":"g1","message_id":"7"}`,
			want: ws.ClientFrame{Type: ws.TypeSync, Epoch: ptr[int32](1)},
		},
		{name: "ping", in: `{"type":"ping"}`, want: ws.ClientFrame{Type: ws.TypePing}},
		{name: "ping with unknown fields", in: `{"type":"ping","at":12345,"x":null}`, want: ws.ClientFrame{Type: ws.TypePing}},

		// Malformed JSON.
		{name: "empty", in: ``, code: domain.CodeBadRequest},
		{name: "blank", in: "  \n", code: domain.CodeBadRequest},
		{name: "truncated", in: `{"type":"ping"`, code: domain.CodeBadRequest},
		{name: "not JSON", in: `ping`, code: domain.CodeBadRequest},
		{name: "array", in: `[{"type":"ping"}]`, code: domain.CodeBadRequest},
		{name: "string", in: `"ping"`, code: domain.CodeBadRequest},
		{name: "number", in: `1`, code: domain.CodeBadRequest},
		{name: "type not a string", in: `{"type":1}`, code: domain.CodeBadRequest},
		{name: "text not a string", in: `{"type":"send","channel_id":"g1","client_msg_id":"c","text":1}`, code: domain.CodeBadRequest},
		{name: "epoch not a number", in: `{"type":"sync","epoch":"1","position":0}`, code: domain.CodeBadRequest},
		{name: "epoch over int32", in: `{"type":"sync","epoch":2147483648,"position":0}`, code: domain.CodeBadRequest},
		{name: "position over int64", in: `{"type":"sync","epoch":1,"position":9223372036854775808}`, code: domain.CodeBadRequest},
		{name: "position a fraction", in: `{"type":"sync","epoch":1,"position":1.5}`, code: domain.CodeBadRequest},
		{name: "bad escape", in: `{"type":"send","channel_id":"g1","client_msg_id":"c","text":"\x"}`, code: domain.CodeBadRequest},

		// Trailing data.
		{name: "two frames", in: `{"type":"ping"}{"type":"ping"}`, code: domain.CodeBadRequest},
		{name: "trailing number", in: `{"type":"ping"} 1`, code: domain.CodeBadRequest},
		{name: "trailing junk", in: `{"type":"ping"}x`, code: domain.CodeBadRequest},
		{name: "trailing string", in: `{"type":"ping"}"x"`, code: domain.CodeBadRequest},

		// Type.
		{name: "null", in: `null`, code: domain.CodeBadRequest},
		{name: "no type", in: `{}`, code: domain.CodeBadRequest},
		{name: "empty type", in: `{"type":"","channel_id":"g1"}`, code: domain.CodeBadRequest},
		{name: "null type", in: `{"type":null}`, code: domain.CodeBadRequest},
		{name: "unknown type", in: `{"type":"typing","channel_id":"g1"}`, code: domain.CodeUnknownType},
		{name: "server frame type", in: `{"type":"pong"}`, code: domain.CodeUnknownType},
		{name: "type in upper case", in: `{"type":"PING"}`, code: domain.CodeUnknownType},

		// send.
		{name: "send without channel_id", in: `{"type":"send","client_msg_id":"c","text":"x"}`, code: domain.CodeBadRequest},
		{name: "send with empty channel_id", in: `{"type":"send","channel_id":"","client_msg_id":"c","text":"x"}`, code: domain.CodeBadRequest},
		{name: "send without client_msg_id", in: `{"type":"send","channel_id":"g1","text":"x"}`, code: domain.CodeBadRequest},
		{name: "send with a client_msg_id of 65 bytes", in: `{"type":"send","channel_id":"g1","client_msg_id":"` + strings.Repeat("x", 65) + `","text":"x"}`, code: domain.CodeBadRequest},
		{name: "send with a client_msg_id of 33 characters in 66 bytes", in: `{"type":"send","channel_id":"g1","client_msg_id":"` + strings.Repeat("é", 33) + `","text":"x"}`, code: domain.CodeBadRequest},
		{name: "send without text", in: `{"type":"send","channel_id":"g1","client_msg_id":"c"}`, code: domain.CodeBadRequest},
		{name: "send with empty text", in: `{"type":"send","channel_id":"g1","client_msg_id":"c","text":""}`, code: domain.CodeBadRequest},
		{name: "send with null text", in: `{"type":"send","channel_id":"g1","client_msg_id":"c","text":null}`, code: domain.CodeBadRequest},

		// sync.
		{name: "sync without epoch", in: `{"type":"sync","position":0}`, code: domain.CodeBadRequest},
		{name: "sync without either", in: `{"type":"sync"}`, code: domain.CodeBadRequest},
		{name: "sync at position -2", in: `{"type":"sync","epoch":1,"position":-2}`, code: domain.CodeBadRequest},
		{name: "sync at the smallest position", in: `{"type":"sync","epoch":1,"position":-9223372036854775808}`, code: domain.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ws.DecodeClientFrame([]byte(tt.in))
			if tt.code != "" {
				if err == nil {
					t.Fatalf("DecodeClientFrame(%s) = %+v, nil; want %s", tt.in, got, tt.code)
				}
				if c := domain.CodeOf(err); c != tt.code {
					t.Fatalf("DecodeClientFrame(%s): %v has code %s; want %s", tt.in, err, c, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeClientFrame(%s): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeClientFrame(%s) = %s; want %s", tt.in, show(got), show(tt.want))
			}
			// Every valid frame of this table is also valid by the schema.
			if err := schemas.ValidateClientFrame([]byte(tt.in)); err != nil {
				t.Errorf("the decoder accepts %s but the schema refuses it: %v", tt.in, err)
			}
		})
	}
}

// TestDecodeClientFrameAgreesWithSchema holds the decoder to
// frames/client.v1.json on the frames where the two once disagreed: each
// frame is accepted by both or refused by both, and the decoder refuses it
// with the code given. (The decoder is deliberately stricter in a few
// documented ways: a client_msg_id over 64 bytes, a number written with a
// fraction or an exponent, a message_id past 64 bits.)
func TestDecodeClientFrameAgreesWithSchema(t *testing.T) {
	long := func(n int, s string) string { return strings.Repeat(s, n) }
	tests := []struct {
		name, in string
		code     domain.Code // "" when both accept it
	}{
		// 1. Trailing data, whatever it is.
		{"trailing brace", `{"type":"ping"}}`, domain.CodeBadRequest},
		{"trailing bracket", `{"type":"ping"}]`, domain.CodeBadRequest},
		{"trailing brace after blanks", "{\"type\":\"ping\"}\n }", domain.CodeBadRequest},
		{"trailing comma", `{"type":"ping"},`, domain.CodeBadRequest},
		{"trailing colon", `{"type":"ping"}:`, domain.CodeBadRequest},
		{"trailing null", `{"type":"ping"}null`, domain.CodeBadRequest},
		{"trailing blanks", "{\"type\":\"ping\"} \t\r\n", ""},

		// 2. channel_id on common.v1.json#/$defs/channel_id, for every frame that has one.
		{"send to a channel_id off the pattern", `{"type":"send","channel_id":"general","client_msg_id":"c","text":"x"}`, domain.CodeBadRequest},
		{"send to g without digits", `{"type":"send","channel_id":"g","client_msg_id":"c","text":"x"}`, domain.CodeBadRequest},
		{"send to g with 21 digits", `{"type":"send","channel_id":"g` + long(21, "1") + `","client_msg_id":"c","text":"x"}`, domain.CodeBadRequest},
		{"send to g with 20 digits", `{"type":"send","channel_id":"g` + long(20, "9") + `","client_msg_id":"c","text":"x"}`, ""},
		{"send to d with one id", `{"type":"send","channel_id":"d1-","client_msg_id":"c","text":"x"}`, domain.CodeBadRequest},
		{"send to G1", `{"type":"send","channel_id":"G1","client_msg_id":"c","text":"x"}`, domain.CodeBadRequest},
		{"send to g-1", `{"type":"send","channel_id":"g-1","client_msg_id":"c","text":"x"}`, domain.CodeBadRequest},
		{"send to a channel_id with a newline", `{"type":"send","channel_id":"g1\n","client_msg_id":"c","text":"x"}`, domain.CodeBadRequest},
		{"send to a numeric channel_id", `{"type":"send","channel_id":1,"client_msg_id":"c","text":"x"}`, domain.CodeBadRequest},
		{"read of a channel_id off the pattern", `{"type":"read","channel_id":"general","message_id":"1"}`, domain.CodeBadRequest},
		{"read of d1-2", `{"type":"read","channel_id":"d1-2","message_id":"468192741203755009"}`, ""},

		// 3. Epochs of 0 or more.
		{"sync at a negative epoch", `{"type":"sync","epoch":-1,"position":0}`, domain.CodeBadRequest},
		{"received at a negative epoch", `{"type":"received","epoch":-1,"position":0}`, domain.CodeBadRequest},
		{"sync at the smallest epoch", `{"type":"sync","epoch":-2147483648}`, domain.CodeBadRequest},

		// 4. Text up to 100,000 characters (code points, not bytes).
		{"text of 100,001 characters", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":"` + long(100_001, "a") + `"}`, domain.CodeTooLong},
		{"text of 100,001 escaped characters", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":"` + long(100_001, `\u00e9`) + `"}`, domain.CodeTooLong},
		{"text of 100,000 four-byte characters", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":"` + long(100_000, "😀") + `"}`, ""},

		// 5. Field names match exactly.
		{"TYPE", `{"TYPE":"ping"}`, domain.CodeBadRequest},
		{"Type", `{"Type":"ping"}`, domain.CodeBadRequest},
		{"send with Channel_ID", `{"type":"send","Channel_ID":"g1","client_msg_id":"c","text":"x"}`, domain.CodeBadRequest},
		{"send with TEXT", `{"type":"send","channel_id":"g1","client_msg_id":"c","TEXT":"x"}`, domain.CodeBadRequest},
		{"sync with Epoch", `{"type":"sync","Epoch":1,"position":0}`, domain.CodeBadRequest},
		{"a ping with TYPE besides type", `{"TYPE":"send","type":"ping"}`, ""},
		{"send with another case beside the exact name", `{"type":"send","channel_id":"g1","CHANNEL_ID":"general","client_msg_id":"c","text":"x","Text":7}`, ""},

		// 6. sync without position resumes from the device's last received one.
		{"sync without position", `{"type":"sync","epoch":1}`, ""},
		{"sync with a null position", `{"type":"sync","epoch":1,"position":null}`, domain.CodeBadRequest},

		// Other shapes where the two could part.
		{"null", `null`, domain.CodeBadRequest},
		{"null type", `{"type":null}`, domain.CodeBadRequest},
		{"null epoch", `{"type":"sync","epoch":null}`, domain.CodeBadRequest},
		{"null text", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":null}`, domain.CodeBadRequest},
		{"the last of two types counts", `{"type":"send","type":"ping"}`, ""},
		{"the last of two positions counts", `{"type":"sync","epoch":1,"position":-5,"position":3}`, ""},
		{"fields of other frame types are not read", `{"type":"ping","epoch":"x","text":1,"position":-9}`, ""},
		{"send with an epoch of another type", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":"x","epoch":"one","message_id":0}`, ""},
		{"read with a numeric message_id", `{"type":"read","channel_id":"g1","message_id":468192741203755009}`, domain.CodeBadRequest},
		{"read with a message_id of 0", `{"type":"read","channel_id":"g1","message_id":"0"}`, domain.CodeBadRequest},
		{"read with a leading zero", `{"type":"read","channel_id":"g1","message_id":"01"}`, domain.CodeBadRequest},
		{"read with a signed message_id", `{"type":"read","channel_id":"g1","message_id":"+1"}`, domain.CodeBadRequest},
		{"received at -1", `{"type":"received","epoch":1,"position":-1}`, domain.CodeBadRequest},
		{"received without position", `{"type":"received","epoch":1}`, domain.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, decErr := ws.DecodeClientFrame([]byte(tt.in))
			schemaErr := schemas.ValidateClientFrame([]byte(tt.in))
			if (decErr == nil) != (schemaErr == nil) {
				t.Fatalf("the decoder and the schema disagree on %.200s: decoder %v; schema %v", tt.in, decErr, schemaErr)
			}
			if got := domain.CodeOf(decErr); decErr != nil && got != tt.code || decErr == nil && tt.code != "" {
				t.Fatalf("DecodeClientFrame(%.200s) = %v; want code %q", tt.in, decErr, tt.code)
			}
		})
	}
}

func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"send","channel_id":"g1","client_msg_id":"c-1","text":"hello"}`,
		`{"type":"send","channel_id":"d468192741203755008-468192741203755010","client_msg_id":"c","text":"é😀\n\u2028"}`,
		`{"type":"sync","epoch":1,"position":-1}`,
		`{"type":"sync","epoch":0,"position":9223372036854775807}`,
		`{"type":"ping"}`,
		`{"type":"ping","extra":[1,{"a":null}]}`,
		`{"type":"typing"}`,
		`{"type":"send","channel_id":"g1","client_msg_id":"` + strings.Repeat("x", 65) + `","text":"x"}`,
		`{"type":"sync","epoch":1,"position":-2}`,
		`{"type":"ping"} {"type":"ping"}`,
		`{"type":"ping"}}`,
		`{"type":"ping"}]`,
		`{"type":"sync","epoch":1}`,
		`{"type":"sync","epoch":-1,"position":null}`,
		`{"type":"send","channel_id":"general","client_msg_id":"c","text":"x"}`,
		`{"type":"read","channel_id":"d1-2","message_id":1}`,
		`{"type":"received","epoch":0,"position":0}`,
		`{"TYPE":"send","Channel_ID":"g1","client_msg_id":"c","text":"\ud800"}`,
		`{"type":"send","type":"ping"}`,
		`{"type":"sync","epoch":1e2,"position":-1.0}`,
		``, `null`, `[]`, `{}`, `"ping"`, `{"type":`, "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ws.DecodeClientFrame(b)
		if err != nil {
			if c := domain.CodeOf(err); c != domain.CodeBadRequest && c != domain.CodeUnknownType && c != domain.CodeTooLong {
				t.Fatalf("error %v has code %s", err, c)
			}
			return
		}
		// What the decoder accepts, the schema accepts, as it came and
		// as the server would write it.
		if err := schemas.ValidateClientFrame(b); err != nil {
			t.Fatalf("the decoder accepts %q as %s, which the schema refuses: %v", b, show(fr), err)
		}
		raw, err := json.Marshal(fr)
		if err != nil {
			t.Fatalf("marshal %+v: %v", fr, err)
		}
		if err := schemas.ValidateClientFrame(raw); err != nil {
			t.Fatalf("the decoder accepts %q as %s, which the schema refuses: %v", b, raw, err)
		}
		// What the decoder accepted, it accepts again unchanged.
		again, err := ws.DecodeClientFrame(raw)
		if err != nil || !reflect.DeepEqual(again, fr) {
			t.Fatalf("re-decoding %s = %s, %v; want %s", raw, show(again), err, show(fr))
		}
	})
}

func BenchmarkDecodeClientFrame(b *testing.B) {
	frames := []struct{ name, in string }{
		{"send", `{"type":"send","channel_id":"g468192741203755011","client_msg_id":"c-7f3a","text":"` + strings.Repeat("héllo ", 33)[:200] + `"}`},
		{"sync", `{"type":"sync","epoch":1,"position":123456}`},
		{"ping", `{"type":"ping"}`},
	}
	for _, fr := range frames {
		b.Run(fr.name, func(b *testing.B) {
			in := []byte(fr.in)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ws.DecodeClientFrame(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func show(f ws.ClientFrame) string {
	b, _ := json.Marshal(f)
	return string(b)
}

// FuzzReadClientFrame holds the whole reading of a client's WebSocket
// message: a binary message always closes with 1003, a text message that
// is not UTF-8 with 1007, and any other text is DecodeClientFrame's, with
// the connection kept.
func FuzzReadClientFrame(f *testing.F) {
	f.Add(true, []byte(`{"type":"ping"}`))
	f.Add(false, []byte(`{"type":"ping"}`))
	f.Add(true, []byte("{\"type\":\"send\",\"channel_id\":\"g1\",\"client_msg_id\":\"c\",\"text\":\"\xff\"}"))
	f.Add(true, []byte("\xed\xa0\x80"))
	f.Add(true, []byte(`{"type":"sync","epoch":1}`))
	f.Fuzz(func(t *testing.T, text bool, b []byte) {
		mt := websocket.BinaryMessage
		if text {
			mt = websocket.TextMessage
		}
		fr, code, err := ws.ReadClientFrame(mt, b)
		switch {
		case !text:
			if code != websocket.CloseUnsupportedData || err == nil {
				t.Fatalf("binary %q: close %d, %v; want 1003", b, code, err)
			}
		case !utf8.Valid(b):
			if code != websocket.CloseInvalidFramePayloadData || err == nil {
				t.Fatalf("invalid UTF-8 %q: close %d, %v; want 1007", b, code, err)
			}
		default:
			want, wantErr := ws.DecodeClientFrame(b)
			if code != 0 || !reflect.DeepEqual(fr, want) || (err == nil) != (wantErr == nil) {
				t.Fatalf("text %q: %+v close %d %v; want %+v %v", b, fr, code, err, want, wantErr)
			}
		}
	})
}
