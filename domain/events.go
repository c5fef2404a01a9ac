package domain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Event is the payload of one event on the log. Each type has a name and a
// version; its JSON Schema is schemas/events/<name>.v<version>.json.
type Event interface {
	// EventType is the event's name, such as "message.sent".
	EventType() string
}

// Event type names. Topics and payloads are documented in schemas/README.md
// and schemas/asyncapi.yaml.
const (
	TypeChannelCreated = "channel.created"
	TypeMemberAdded    = "member.added"
	TypeMemberRemoved  = "member.removed"
	TypeMessageSent    = "message.sent"
	TypeUserRegistered = "user.registered"
	TypeDeviceLoggedIn = "device.logged_in"
	TypeDeviceLogout   = "device.logged_out"
	TypeInboxMessage   = "inbox.message"
)

// ChannelKind tells a direct (1-on-1) channel from a group.
type ChannelKind string

// Channel kinds.
const (
	KindDirect ChannelKind = "direct"
	KindGroup  ChannelKind = "group"
)

// ChannelCreated opens a channel with its first members (the creator among
// them). Travels on the channel topic, keyed by channel id.
type ChannelCreated struct {
	ChannelID ChannelID   `json:"channel_id"`
	Kind      ChannelKind `json:"kind"`
	Name      string      `json:"name,omitempty"`
	CreatorID UserID      `json:"creator_id"`
	Members   []UserID    `json:"members"`
}

// MemberAdded adds a user to a group. Channel topic.
type MemberAdded struct {
	ChannelID ChannelID `json:"channel_id"`
	UserID    UserID    `json:"user_id"`
	ByID      UserID    `json:"by_id"`
}

// MemberRemoved removes a user from a group (by themself: leaving). Channel
// topic.
type MemberRemoved struct {
	ChannelID ChannelID `json:"channel_id"`
	UserID    UserID    `json:"user_id"`
	ByID      UserID    `json:"by_id"`
}

// MessageSent is a text message posted to a channel. Channel topic.
type MessageSent struct {
	ChannelID   ChannelID `json:"channel_id"`
	MessageID   MessageID `json:"message_id"`
	SenderID    UserID    `json:"sender_id"`
	DeviceID    DeviceID  `json:"device_id"`
	ClientMsgID string    `json:"client_msg_id"`
	Text        string    `json:"text"`
}

// UserRegistered records a sign-up. Session topic, keyed by user id. The
// password hash is not on the log: credentials live in the store only.
type UserRegistered struct {
	UserID UserID `json:"user_id"`
	Name   string `json:"name"`
}

// DeviceLoggedIn records a login of one device. Session topic.
type DeviceLoggedIn struct {
	UserID   UserID   `json:"user_id"`
	DeviceID DeviceID `json:"device_id"`
}

// DeviceLoggedOut records a logout of one device. Session topic.
type DeviceLoggedOut struct {
	UserID   UserID   `json:"user_id"`
	DeviceID DeviceID `json:"device_id"`
}

// InboxMessage is one recipient's copy of a message, written by the fan-out
// projection to the inbox topic keyed by the recipient's user id. Its offset
// in the inbox partition is the recipient's position: the only order a
// device compares.
type InboxMessage struct {
	UserID    UserID    `json:"user_id"`
	ChannelID ChannelID `json:"channel_id"`
	MessageID MessageID `json:"message_id"`
	SenderID  UserID    `json:"sender_id"`
	Text      string    `json:"text"`
	SentAt    time.Time `json:"sent_at"`
	// ChannelPartition and ChannelOffset locate the message.sent event that
	// this entry copies; they make fan-out replays detectable.
	ChannelPartition int32 `json:"channel_partition"`
	ChannelOffset    int64 `json:"channel_offset"`
}

// EventType implementations.
func (ChannelCreated) EventType() string  { return TypeChannelCreated }
func (MemberAdded) EventType() string     { return TypeMemberAdded }
func (MemberRemoved) EventType() string   { return TypeMemberRemoved }
func (MessageSent) EventType() string     { return TypeMessageSent }
func (UserRegistered) EventType() string  { return TypeUserRegistered }
func (DeviceLoggedIn) EventType() string  { return TypeDeviceLoggedIn }
func (DeviceLoggedOut) EventType() string { return TypeDeviceLogout }
func (InboxMessage) EventType() string    { return TypeInboxMessage }

// Envelope is the one shape of every record value on every topic.
type Envelope struct {
	Type    string          `json:"type"`
	Version int             `json:"version"`
	EventID string          `json:"event_id"`
	Time    time.Time       `json:"time"`
	Payload json.RawMessage `json:"payload"`
}

// CurrentVersion is the version Encode writes for every event type. A change
// that old readers cannot read gets a new version and a new schema file.
const CurrentVersion = 1

// Meta is what the envelope holds besides the payload.
type Meta struct {
	EventID string
	Time    time.Time
}

// Encode wraps ev in an envelope and returns its JSON.
func Encode(ev Event, m Meta) ([]byte, error) {
	p, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", ev.EventType(), err)
	}
	return json.Marshal(Envelope{
		Type:    ev.EventType(),
		Version: CurrentVersion,
		EventID: m.EventID,
		Time:    m.Time.UTC(),
		Payload: p,
	})
}

// Decode reads an envelope and its payload. Unknown types and versions are
// errors of code CodeUnknownType, so a reader can skip what a newer writer
// added.
func Decode(b []byte) (Meta, Event, error) {
	var env Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return Meta{}, nil, &Error{Code: CodeBadRequest, Msg: "malformed envelope", Err: err}
	}
	m := Meta{EventID: env.EventID, Time: env.Time}
	if env.Version != CurrentVersion {
		return m, nil, Errorf(CodeUnknownType, "event %s version %d", env.Type, env.Version)
	}
	var (
		ev  Event
		err error
	)
	switch env.Type {
	case TypeChannelCreated:
		ev, err = decodeAs[ChannelCreated](env.Payload)
	case TypeMemberAdded:
		ev, err = decodeAs[MemberAdded](env.Payload)
	case TypeMemberRemoved:
		ev, err = decodeAs[MemberRemoved](env.Payload)
	case TypeMessageSent:
		ev, err = decodeAs[MessageSent](env.Payload)
	case TypeUserRegistered:
		ev, err = decodeAs[UserRegistered](env.Payload)
	case TypeDeviceLoggedIn:
		ev, err = decodeAs[DeviceLoggedIn](env.Payload)
	case TypeDeviceLogout:
		ev, err = decodeAs[DeviceLoggedOut](env.Payload)
	case TypeInboxMessage:
		ev, err = decodeAs[InboxMessage](env.Payload)
	default:
		return m, nil, Errorf(CodeUnknownType, "unknown event type %q", env.Type)
	}
	if err != nil {
		return m, nil, &Error{Code: CodeBadRequest, Msg: "malformed " + env.Type + " payload", Err: err}
	}
	return m, ev, nil
}

// decodeAs decodes p into a T.
func decodeAs[T Event](p json.RawMessage) (Event, error) {
	var v T
	if err := json.NewDecoder(bytes.NewReader(p)).Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}
