package ws

import (
	"cmp"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/evchat/evchat/domain"
)

// Frame types, client to server.
const (
	TypeSend = "send"
	TypeSync = "sync"
	TypePing = "ping"
	// TypeReceived acknowledges inbox entries up to a position.
	TypeReceived = "received"
	// TypeRead marks a channel read up to a message.
	TypeRead = "read"
)

// Frame types, server to client.
const (
	TypeHello   = "hello"
	TypeAck     = "ack"
	TypeMessage = "message"
	TypeSynced  = "synced"
	TypeResync  = "resync"
	TypePong    = "pong"
	TypeError   = "error"
	// TypePresence tells a user that someone they share a small channel
	// with went online or offline.
	TypePresence = "presence"
)

// ClientFrame is any frame a client sends; Type says which fields count.
// The schema is schemas/frames/client.v1.json.
type ClientFrame struct {
	Type        string           `json:"type"`
	ChannelID   domain.ChannelID `json:"channel_id,omitempty"`
	ClientMsgID string           `json:"client_msg_id,omitempty"`
	Text        string           `json:"text,omitempty"`
	Epoch       *int32           `json:"epoch,omitempty"`
	Position    *int64           `json:"position,omitempty"`
	MessageID   domain.MessageID `json:"message_id,omitempty"`
}

// Close codes the server ends a connection with, besides RFC 6455's 1003
// (a binary frame), 1007 (invalid UTF-8 in a text frame), 1009 (a frame
// over the read limit) and 1013 (try again later: an epoch switch, a sync
// that failed). The client reconnects with its position after any of
// them and loses nothing; schemas/asyncapi.yaml lists them.
const (
	// CloseSlowClient: the client read too slowly and its send queue
	// overflowed.
	CloseSlowClient = 4008
	// CloseNoPong: nothing, not even a pong, came from the client for the
	// ping interval and the pong timeout.
	CloseNoPong = 4009
)

// ReadClientFrame decodes one WebSocket message of a client, of the
// message type gorilla/websocket reports. A closeCode other than 0 means
// the connection must close with it (RFC 6455: 1003 for a binary frame,
// 1007 for a text frame that is not UTF-8), err saying why; otherwise an
// error is DecodeClientFrame's and the connection stays usable.
func ReadClientFrame(messageType int, b []byte) (f ClientFrame, closeCode int, err error) {
	switch {
	case messageType != websocket.TextMessage:
		return ClientFrame{}, websocket.CloseUnsupportedData, domain.Errorf(domain.CodeBadRequest, "binary frames are not accepted; send JSON text frames")
	case !utf8.Valid(b):
		return ClientFrame{}, websocket.CloseInvalidFramePayloadData, domain.Errorf(domain.CodeBadRequest, "a text frame that is not valid UTF-8")
	}
	f, err = DecodeClientFrame(b)
	return f, 0, err
}

// DecodeClientFrame parses and checks one client frame. Every error is a
// *domain.Error with a stable code (bad_request, unknown_type, or too_long
// for a text over domain.TextLenCeiling); the connection stays usable
// after it.
//
// It accepts only frames that schemas/frames/client.v1.json accepts
// (FuzzDecodeClientFrame holds it to that), so it does not decode into the
// struct directly: encoding/json would match field names case-insensitively
// ({"TYPE":"ping"}) and read fields of other frame types. It reads the
// object's members by their exact names and only those of the frame's
// type; of two members with one name, the last counts, as for the schema.
// It is stricter than the schema in three ways: a client_msg_id over 64
// bytes (the schema counts characters), a number with a fraction or an
// exponent (1.0, 1e2), and a message_id past 64 bits.
func DecodeClientFrame(b []byte) (ClientFrame, error) {
	var obj map[string]json.RawMessage
	// Unmarshal, unlike a json.Decoder, refuses any data after the object.
	if err := json.Unmarshal(b, &obj); err != nil {
		return ClientFrame{}, domain.Errorf(domain.CodeBadRequest, "malformed frame: %v", err)
	}
	var f ClientFrame
	if err := member(obj, "type", &f.Type); err != nil {
		return ClientFrame{}, err
	}
	switch f.Type {
	case TypeSend:
		if err := cmp.Or(member(obj, "channel_id", &f.ChannelID), member(obj, "client_msg_id", &f.ClientMsgID), member(obj, "text", &f.Text)); err != nil {
			return f, err
		}
		if !domain.ValidChannelID(f.ChannelID) {
			return f, domain.Errorf(domain.CodeBadRequest, "send: channel_id is missing or malformed")
		}
		if f.ClientMsgID == "" || len(f.ClientMsgID) > domain.MaxClientMsgIDLen {
			return f, domain.Errorf(domain.CodeBadRequest, "send: client_msg_id must be 1 to %d bytes", domain.MaxClientMsgIDLen)
		}
		if f.Text == "" {
			return f, domain.Errorf(domain.CodeBadRequest, "send: text is required")
		}
		if n := utf8.RuneCountInString(f.Text); n > domain.TextLenCeiling {
			return f, domain.Errorf(domain.CodeTooLong, "send: text has %d characters; no message may have more than %d", n, domain.TextLenCeiling)
		}
	case TypeSync:
		if err := cmp.Or(member(obj, "epoch", &f.Epoch), member(obj, "position", &f.Position)); err != nil {
			return f, err
		}
		if f.Epoch == nil || *f.Epoch < 0 {
			return f, domain.Errorf(domain.CodeBadRequest, "sync: an epoch of 0 or more is required")
		}
		if f.Position != nil && *f.Position < -1 {
			return f, domain.Errorf(domain.CodeBadRequest, "sync: position must be -1 or more")
		}
	case TypeReceived:
		if err := cmp.Or(member(obj, "epoch", &f.Epoch), member(obj, "position", &f.Position)); err != nil {
			return f, err
		}
		if f.Epoch == nil || *f.Epoch < 0 || f.Position == nil || *f.Position < 0 {
			return f, domain.Errorf(domain.CodeBadRequest, "received: epoch and a position of 0 or more are required")
		}
	case TypeRead:
		var id string
		if err := cmp.Or(member(obj, "channel_id", &f.ChannelID), member(obj, "message_id", &id)); err != nil {
			return f, err
		}
		// common.v1.json#/$defs/message_id: a decimal string without a
		// sign or a leading zero (ParseMessageID takes "+1" and "01").
		if !domain.ValidChannelID(f.ChannelID) || id == "" || id[0] < '1' || id[0] > '9' {
			return f, domain.Errorf(domain.CodeBadRequest, "read: channel_id and message_id are required")
		}
		var err error
		if f.MessageID, err = domain.ParseMessageID(id); err != nil {
			return f, domain.Errorf(domain.CodeBadRequest, "read: %v", err)
		}
	case TypePing:
	case "":
		return f, domain.Errorf(domain.CodeBadRequest, "frame has no type")
	default:
		return f, domain.Errorf(domain.CodeUnknownType, "unknown frame type %q", f.Type)
	}
	return f, nil
}

// member decodes the member of obj named exactly name into dst, leaving
// dst as it is when there is none. A member that is null is refused: no
// field of a client frame may be null.
func member(obj map[string]json.RawMessage, name string, dst any) error {
	raw, ok := obj[name]
	if !ok {
		return nil
	}
	if string(raw) == "null" {
		return domain.Errorf(domain.CodeBadRequest, "malformed frame: %s is null", name)
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return domain.Errorf(domain.CodeBadRequest, "malformed frame: %s: %v", name, err)
	}
	return nil
}

// ServerFrame is any frame the server sends. The schema is
// schemas/frames/server.v1.json.
type ServerFrame struct {
	Type        string           `json:"type"`
	UserID      domain.UserID    `json:"user_id,omitempty"`
	DeviceID    domain.DeviceID  `json:"device_id,omitempty"`
	Epoch       *int32           `json:"epoch,omitempty"`
	Position    *int64           `json:"position,omitempty"`
	ChannelID   domain.ChannelID `json:"channel_id,omitempty"`
	MessageID   domain.MessageID `json:"message_id,omitempty"`
	SenderID    domain.UserID    `json:"sender_id,omitempty"`
	Text        string           `json:"text,omitempty"`
	SentAt      *time.Time       `json:"sent_at,omitempty"`
	ClientMsgID string           `json:"client_msg_id,omitempty"`
	Code        domain.Code      `json:"code,omitempty"`
	Message     string           `json:"message,omitempty"`
	Online      *bool            `json:"online,omitempty"`
	LastActive  *time.Time       `json:"last_active_at,omitempty"`
	// RetryAfterMS, on an error rate_limited: wait this long before
	// trying again.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

// errorFrame reports err, echoing the client's message id when it is one
// the client may correlate (a too long one is not echoed).
func errorFrame(err error, clientMsgID string) ServerFrame {
	if len(clientMsgID) > domain.MaxClientMsgIDLen {
		clientMsgID = ""
	}
	f := ServerFrame{Type: TypeError, Code: domain.CodeOf(err), Message: domain.MessageOf(err), ClientMsgID: clientMsgID}
	if d := domain.RetryAfterOf(err); d > 0 {
		f.RetryAfterMS = max(1, d.Milliseconds())
	}
	return f
}
