package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
	TypeHeartbeat      = "device.heartbeat"
	TypeDeviceAcked    = "device.acked"
	TypeChannelRead    = "channel.read"
	TypeClockTicked    = "clock.ticked"
	TypePresence       = "presence.changed"
	TypeEpochStarted   = "epoch.started"
	TypeSendRequested  = "send.requested"
	TypeSendDecided    = "send.decided"
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
	// DecidedAt is the Version of the channel state the gateway decided
	// the send on, where the sender was a member (0 in events written
	// before it existed). Admit takes a message whose sender has left
	// since: the send was acknowledged, so it must stand.
	DecidedAt int64 `json:"decided_at,omitempty"`
}

// SendRequested asks the sends processor (projections/sends) to post a
// message: the gateway appends it to the sends topic, keyed by sender, once
// it has checked the send against the channel. The processor decides each
// (sender, client message id) once, in the log's order: the first request
// of a key becomes its message.sent, with this request's MessageID (a
// candidate the gateway drew) and its envelope's time; a later request of
// the key is answered with that first decision. The envelope's event id
// is the request's id, which the reply names.
type SendRequested struct {
	// MessageSent is the message this request becomes if it is the first
	// of its key; its fields are the request's, in its JSON too.
	MessageSent
	// ReplyTo names the gateway process that waits for the answer: the
	// key of its send.decided on the replies topic.
	ReplyTo string `json:"reply_to"`
}

// SendDecided answers a SendRequested on the replies topic, keyed by the
// request's ReplyTo: the id of the key's message (in the log, committed in
// the same transaction as this answer or before it), or the error that
// refused the request (conflict: the client message id was used for
// another channel or text).
type SendDecided struct {
	RequestID string    `json:"request_id"`
	MessageID MessageID `json:"message_id,omitempty"`
	Code      Code      `json:"code,omitempty"`
	Message   string    `json:"message,omitempty"`
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

// DeviceHeartbeat says a device is connected. The gateway appends one when
// a device connects and then every heartbeat interval while it stays.
// Session topic.
type DeviceHeartbeat struct {
	UserID   UserID   `json:"user_id"`
	DeviceID DeviceID `json:"device_id"`
}

// DeviceAcked records that a device has received its user's inbox up to and
// including Position (an inbox offset of the epoch). Session topic.
type DeviceAcked struct {
	UserID   UserID   `json:"user_id"`
	DeviceID DeviceID `json:"device_id"`
	Epoch    int32    `json:"epoch"`
	Position int64    `json:"position"`
}

// ChannelRead records that a user has read a channel up to and including a
// message (Seq is its offset in the channel's partition). Session topic.
type ChannelRead struct {
	UserID    UserID    `json:"user_id"`
	DeviceID  DeviceID  `json:"device_id"`
	ChannelID ChannelID `json:"channel_id"`
	MessageID MessageID `json:"message_id"`
	Seq       int64     `json:"seq"`
}

// ClockTicked advances the presence clock of one partition of the session
// topic, so that the absence of heartbeats is detected from the log alone.
// The presence projection writes one per partition it owns every second.
type ClockTicked struct {
	Partition int32 `json:"partition"`
}

// PresenceChanged is a user going online or offline, written by the presence
// projection to the presence topic (compacted, keyed by user id).
type PresenceChanged PresenceChange

// Outputs whose topics are rebuilt in epochs (EpochStarted.Output).
const (
	OutputInbox    = "inbox"
	OutputPresence = "presence"
)

// EpochStarted switches the readers of a derived topic to a new epoch: a
// rebuild wrote the output (the inboxes, or presence) from the beginning
// of the log into new topics whose names end in the epoch, caught up, and
// every node now reads those. Travels on the epochs topic (compacted),
// keyed by the output's name.
type EpochStarted struct {
	Output string `json:"output"`
	Epoch  int32  `json:"epoch"`
}

// InboxMessage is one recipient's entry for a message, written by the
// fan-out projection to the inbox topic keyed by the recipient's user id. Its
// offset in the inbox partition is the recipient's position: the only order
// a device compares.
//
// Since version 2 an entry points at the message instead of copying it: the
// text is written once, in the channel topic and in history, and readers
// resolve it from there (package bodies). Entries of version 1, written
// before, carry the text; Decode reads both, and Text is empty exactly in
// an entry of version 2 whose text no reader has resolved yet (a message's
// text is never empty).
type InboxMessage struct {
	UserID    UserID    `json:"user_id"`
	ChannelID ChannelID `json:"channel_id"`
	MessageID MessageID `json:"message_id"`
	SenderID  UserID    `json:"sender_id"`
	// Text is the message's text in a version-1 entry, or once resolved;
	// never written in version 2.
	Text   string    `json:"text,omitempty"`
	SentAt time.Time `json:"sent_at"`
	// ChannelPartition and ChannelOffset locate the message.sent event that
	// this entry points at: where its text is (history keeps it by channel
	// and message id, and knows how far it has read each partition), and
	// what makes fan-out replays detectable.
	ChannelPartition int32 `json:"channel_partition"`
	ChannelOffset    int64 `json:"channel_offset"`
}

// Resolved reports whether the entry carries its message's text.
func (m InboxMessage) Resolved() bool { return m.Text != "" }

// EventType implementations.
func (ChannelCreated) EventType() string  { return TypeChannelCreated }
func (MemberAdded) EventType() string     { return TypeMemberAdded }
func (MemberRemoved) EventType() string   { return TypeMemberRemoved }
func (MessageSent) EventType() string     { return TypeMessageSent }
func (UserRegistered) EventType() string  { return TypeUserRegistered }
func (DeviceLoggedIn) EventType() string  { return TypeDeviceLoggedIn }
func (DeviceLoggedOut) EventType() string { return TypeDeviceLogout }
func (InboxMessage) EventType() string    { return TypeInboxMessage }
func (DeviceHeartbeat) EventType() string { return TypeHeartbeat }
func (DeviceAcked) EventType() string     { return TypeDeviceAcked }
func (ChannelRead) EventType() string     { return TypeChannelRead }
func (ClockTicked) EventType() string     { return TypeClockTicked }
func (PresenceChanged) EventType() string { return TypePresence }
func (EpochStarted) EventType() string    { return TypeEpochStarted }
func (SendRequested) EventType() string   { return TypeSendRequested }
func (SendDecided) EventType() string     { return TypeSendDecided }

// Envelope is the one shape of every record value on every topic.
type Envelope struct {
	Type    string          `json:"type"`
	Version int             `json:"version"`
	EventID string          `json:"event_id"`
	Time    time.Time       `json:"time"`
	Payload json.RawMessage `json:"payload"`
}

// CurrentVersion is the version Encode writes for every event type but
// those in newerVersions. A change that old readers cannot read gets a new
// version and a new schema file.
const CurrentVersion = 1

// newerVersions are the event types whose current version is above
// CurrentVersion. Decode reads every version from 1 up to the current one.
//
// inbox.message 2: the entry points at its message and carries no text
// (version 1 copied the text into every recipient's entry).
var newerVersions = map[string]int{TypeInboxMessage: 2}

// VersionOf returns the version Encode writes for events of type typ.
func VersionOf(typ string) int {
	if v, ok := newerVersions[typ]; ok {
		return v
	}
	return CurrentVersion
}

// Meta is what the envelope holds besides the payload.
type Meta struct {
	EventID string
	Time    time.Time
}

// Encode wraps ev in an envelope and returns its JSON: the bytes
// json.Marshal(Envelope{...}) gives, written around the payload rather
// than by marshalling it a second time (json.Marshal validates and
// compacts a RawMessage again, 5% of the CPU at 2,000 msg/s).
func Encode(ev Event, m Meta) ([]byte, error) {
	if im, ok := ev.(InboxMessage); ok {
		if b, ok := encodeInboxCanonical(im, m); ok {
			return b, nil
		}
	} else if b, ok := encodeCanonical(ev, m); ok {
		return b, nil
	}
	return encode(ev, m)
}

// encode is Encode's general path.
func encode(ev Event, m Meta) ([]byte, error) {
	p, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", ev.EventType(), err)
	}
	typ, err := json.Marshal(ev.EventType())
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", ev.EventType(), err)
	}
	id, err := json.Marshal(m.EventID)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", ev.EventType(), err)
	}
	at, err := m.Time.UTC().MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", ev.EventType(), err)
	}
	b := make([]byte, 0, len(p)+len(typ)+len(id)+len(at)+64)
	b = append(b, `{"type":`...)
	b = append(b, typ...)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, int64(VersionOf(ev.EventType())), 10)
	b = append(b, `,"event_id":`...)
	b = append(b, id...)
	b = append(b, `,"time":`...)
	b = append(b, at...)
	b = append(b, `,"payload":`...)
	b = append(b, p...)
	return append(b, '}'), nil
}

// Decode reads an envelope and its payload. Unknown types and versions are
// errors of code CodeUnknownType, so a reader can skip what a newer writer
// added. The events of the send path, as Encode writes them, are read
// without reflection (decodeCanonical).
func Decode(b []byte) (Meta, Event, error) {
	if m, ev, ok := decodeCanonical(b); ok {
		return m, ev, nil
	}
	return decodeGeneral(b)
}

// decodeGeneral is Decode's general path: encoding/json.
func decodeGeneral(b []byte) (Meta, Event, error) {
	var env Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return Meta{}, nil, &Error{Code: CodeBadRequest, Msg: "malformed envelope", Err: err}
	}
	if y := env.Time.UTC().Year(); y < 1 || y > 9999 {
		return Meta{}, nil, Errorf(CodeBadRequest, "event time %v out of range", env.Time)
	}
	m := Meta{EventID: env.EventID, Time: env.Time}
	if env.Version < 1 || env.Version > VersionOf(env.Type) {
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
	case TypeHeartbeat:
		ev, err = decodeAs[DeviceHeartbeat](env.Payload)
	case TypeDeviceAcked:
		ev, err = decodeAs[DeviceAcked](env.Payload)
	case TypeChannelRead:
		ev, err = decodeAs[ChannelRead](env.Payload)
	case TypeClockTicked:
		ev, err = decodeAs[ClockTicked](env.Payload)
	case TypePresence:
		ev, err = decodeAs[PresenceChanged](env.Payload)
	case TypeEpochStarted:
		ev, err = decodeAs[EpochStarted](env.Payload)
	case TypeSendRequested:
		ev, err = decodeAs[SendRequested](env.Payload)
	case TypeSendDecided:
		ev, err = decodeAs[SendDecided](env.Payload)
	default:
		return m, nil, Errorf(CodeUnknownType, "unknown event type %q", env.Type)
	}
	if err == nil {
		switch e := ev.(type) {
		case MessageSent:
			err = requireID(e.MessageID)
		case SendRequested:
			err = requireID(e.MessageID)
		case InboxMessage:
			err = requireID(e.MessageID)
			if env.Version >= 2 && e.Text != "" {
				// Not a field of version 2: ignored like any unknown
				// field, so the text comes from history alone.
				e.Text = ""
				ev = e
			}
		case ChannelRead:
			err = requireID(e.MessageID)
		}
	}
	if err != nil {
		return m, nil, &Error{Code: CodeBadRequest, Msg: "malformed " + env.Type + " payload", Err: err}
	}
	return m, ev, nil
}

// decodeAs decodes p into a T.
func decodeAs[T Event](p json.RawMessage) (Event, error) {
	var v T
	if err := json.Unmarshal(p, &v); err != nil {
		return nil, err
	}
	return v, nil
}

func requireID(id MessageID) error {
	if id == 0 {
		return errors.New("message_id is missing")
	}
	return nil
}
