package domain

import (
	"slices"
	"time"
	"unicode/utf8"
)

// Limits are the configurable rules of the chat.
type Limits struct {
	// MaxGroupSize is the most members a group may have. Default 100; the
	// design holds to 500.
	MaxGroupSize int
	// MaxTextLen is the most characters (Unicode code points) in a message.
	// Default 100,000; at most TextLenCeiling.
	MaxTextLen int
}

// TextLenCeiling is the most characters a message may ever have: the
// maxLength of common.v1.json#/$defs/text, which every v1 frame and event
// carrying a text refers to. A deployment may configure a lower limit,
// never a higher one: the WebSocket decoder refuses longer texts before any
// limit is applied, and readers of the log rely on the schema.
const TextLenCeiling = 100_000

// DefaultLimits returns the default limits.
func DefaultLimits() Limits { return Limits{MaxGroupSize: 100, MaxTextLen: TextLenCeiling} }

// Validate reports limits that make no sense.
func (l Limits) Validate() error {
	if l.MaxGroupSize < 2 || l.MaxGroupSize > 10_000 {
		return Errorf(CodeBadRequest, "max group size %d: want 2..10000", l.MaxGroupSize)
	}
	if l.MaxTextLen < 1 || l.MaxTextLen > TextLenCeiling {
		return Errorf(CodeBadRequest, "max text length %d: want 1..%d (the v1 schemas' ceiling)", l.MaxTextLen, TextLenCeiling)
	}
	return nil
}

// Channel is a channel's state as the log has built it.
type Channel struct {
	ID        ChannelID   `json:"channel_id"`
	Kind      ChannelKind `json:"kind"`
	Name      string      `json:"name,omitempty"`
	CreatorID UserID      `json:"creator_id"`
	Members   []UserID    `json:"members"` // sorted, no duplicates
	CreatedAt time.Time   `json:"created_at"`
	// Version is the channel-topic offset just past the last event that
	// changed this state; 0 before any. Projections set it (EvolveAt): a
	// history rebuild knows a stored state with a version past the
	// record it reads comes from later in the log, and starts that channel
	// afresh.
	Version int64 `json:"version,omitempty"`
}

// Exists reports whether the channel has been created.
func (c Channel) Exists() bool { return c.Kind != "" }

// IsMember reports whether u is a member of c.
func (c Channel) IsMember(u UserID) bool {
	_, ok := slices.BinarySearch(c.Members, u)
	return ok
}

// Commands a client may give about a channel.
type (
	// CreateChannel opens a direct channel or a group.
	CreateChannel struct {
		ChannelID ChannelID
		Kind      ChannelKind
		Name      string
		CreatorID UserID
		Members   []UserID // besides the creator
	}
	// AddMember adds UserID to a group; ActorID must be a member.
	AddMember struct {
		ChannelID ChannelID
		ActorID   UserID
		UserID    UserID
	}
	// RemoveMember removes UserID from a group; ActorID must be UserID
	// (leaving) or the group's creator.
	RemoveMember struct {
		ChannelID ChannelID
		ActorID   UserID
		UserID    UserID
	}
	// SendMessage posts a text; MessageID is issued by the caller.
	SendMessage struct {
		ChannelID   ChannelID
		SenderID    UserID
		DeviceID    DeviceID
		ClientMsgID string
		MessageID   MessageID
		Text        string
	}
)

// Command is one of the command types above.
type Command interface{ command() }

func (CreateChannel) command() {}
func (AddMember) command()     {}
func (RemoveMember) command()  {}
func (SendMessage) command()   {}

// Decide checks cmd against the channel's current state and returns the
// events to append. A command that changes nothing (opening a direct channel
// that exists, adding a member twice) returns no events and no error.
func Decide(c Channel, cmd Command, l Limits) ([]Event, error) {
	switch cmd := cmd.(type) {
	case CreateChannel:
		return decideCreate(c, cmd, l)
	case AddMember:
		if err := mustBeMember(c, cmd.ActorID); err != nil {
			return nil, err
		}
		if c.Kind != KindGroup {
			return nil, Errorf(CodeForbidden, "members of a direct channel cannot change")
		}
		if c.IsMember(cmd.UserID) {
			return nil, nil
		}
		if len(c.Members) >= l.MaxGroupSize {
			return nil, Errorf(CodeGroupFull, "group %s has %d members, the limit", c.ID, len(c.Members))
		}
		return []Event{MemberAdded{ChannelID: c.ID, UserID: cmd.UserID, ByID: cmd.ActorID}}, nil
	case RemoveMember:
		if err := mustBeMember(c, cmd.ActorID); err != nil {
			return nil, err
		}
		if c.Kind != KindGroup {
			return nil, Errorf(CodeForbidden, "members of a direct channel cannot change")
		}
		if cmd.ActorID != cmd.UserID && cmd.ActorID != c.CreatorID {
			return nil, Errorf(CodeForbidden, "only the group's creator removes others")
		}
		if !c.IsMember(cmd.UserID) {
			return nil, Errorf(CodeNotFound, "user %s is not a member of %s", cmd.UserID, c.ID)
		}
		return []Event{MemberRemoved{ChannelID: c.ID, UserID: cmd.UserID, ByID: cmd.ActorID}}, nil
	case SendMessage:
		if err := mustBeMember(c, cmd.SenderID); err != nil {
			return nil, err
		}
		if cmd.ClientMsgID == "" || len(cmd.ClientMsgID) > MaxClientMsgIDLen {
			return nil, Errorf(CodeBadRequest, "client_msg_id must be 1 to %d bytes", MaxClientMsgIDLen)
		}
		if cmd.Text == "" {
			return nil, Errorf(CodeBadRequest, "text is empty")
		}
		if !utf8.ValidString(cmd.Text) {
			return nil, Errorf(CodeBadRequest, "text is not valid UTF-8")
		}
		if n := utf8.RuneCountInString(cmd.Text); n > l.MaxTextLen {
			return nil, Errorf(CodeTooLong, "text has %d characters; the limit is %d", n, l.MaxTextLen)
		}
		if cmd.MessageID == 0 {
			return nil, Errorf(CodeBadRequest, "message id is missing")
		}
		return []Event{MessageSent{
			ChannelID: c.ID, MessageID: cmd.MessageID, SenderID: cmd.SenderID,
			DeviceID: cmd.DeviceID, ClientMsgID: cmd.ClientMsgID, Text: cmd.Text,
			DecidedAt: c.Version,
		}}, nil
	default:
		return nil, Errorf(CodeUnknownType, "unknown command %T", cmd)
	}
}

func decideCreate(c Channel, cmd CreateChannel, l Limits) ([]Event, error) {
	members := normalize(append([]UserID{cmd.CreatorID}, cmd.Members...))
	if slices.Contains(members, "") {
		return nil, Errorf(CodeBadRequest, "empty user id among members")
	}
	if utf8.RuneCountInString(cmd.Name) > MaxChannelNameLen || !utf8.ValidString(cmd.Name) {
		return nil, Errorf(CodeBadRequest, "channel name must be valid UTF-8 of at most %d characters", MaxChannelNameLen)
	}
	switch cmd.Kind {
	case KindDirect:
		if len(members) != 2 {
			return nil, Errorf(CodeBadRequest, "a direct channel has exactly two distinct members")
		}
		if want := DirectChannelID(members[0], members[1]); cmd.ChannelID != want {
			return nil, Errorf(CodeBadRequest, "direct channel id %q, want %q", cmd.ChannelID, want)
		}
		if c.Exists() {
			return nil, nil // opening it again finds the same channel
		}
	case KindGroup:
		if c.Exists() {
			return nil, Errorf(CodeConflict, "channel %s exists", cmd.ChannelID)
		}
		if len(members) > l.MaxGroupSize {
			return nil, Errorf(CodeGroupFull, "%d members; the limit is %d", len(members), l.MaxGroupSize)
		}
	default:
		return nil, Errorf(CodeBadRequest, "channel kind %q: want direct or group", cmd.Kind)
	}
	if cmd.ChannelID == "" {
		return nil, Errorf(CodeBadRequest, "channel id is missing")
	}
	return []Event{ChannelCreated{
		ChannelID: cmd.ChannelID, Kind: cmd.Kind, Name: cmd.Name,
		CreatorID: cmd.CreatorID, Members: members,
	}}, nil
}

func mustBeMember(c Channel, u UserID) error {
	if !c.Exists() {
		return Errorf(CodeNotFound, "channel %s not found", c.ID)
	}
	if !c.IsMember(u) {
		return Errorf(CodeNotMember, "user %s is not a member of channel %s", u, c.ID)
	}
	return nil
}

// Admit reports whether an event read from the log is valid against the
// channel's state at its position in the log. The gateway decided on a state
// that may have been stale (a member removed meanwhile, a group filled by a
// concurrent add); projections drop events that Admit refuses, all in the
// same way, so every projection agrees. A message is the exception: it is
// acknowledged once appended, so one decided while its sender was a member
// is admitted after that sender's removal (MessageSent.DecidedAt). Every
// projection sets Version through EvolveAt, so they agree on that too.
func Admit(c Channel, ev Event, l Limits) bool {
	switch ev := ev.(type) {
	case ChannelCreated:
		return !c.Exists()
	case MemberAdded:
		return c.Kind == KindGroup && !c.IsMember(ev.UserID) && len(c.Members) < l.MaxGroupSize
	case MemberRemoved:
		return c.Kind == KindGroup && c.IsMember(ev.UserID)
	case MessageSent:
		// A sender who is no longer a member was one in the state the
		// gateway decided on (DecidedAt) if the state has changed since:
		// a removal raced the send, which was acknowledged on appending,
		// and an acknowledged send stands (it is in the log, and in
		// history, once). Messages do not change Version, so any change
		// since DecidedAt is a membership change.
		return c.Exists() && (c.IsMember(ev.SenderID) || ev.DecidedAt > 0 && ev.DecidedAt < c.Version)
	}
	return false
}

// Holds reports whether the state c shows the effect of cmd: the channel
// exists (CreateChannel), the user is a member (AddMember), the user is not
// (RemoveMember). The gateway decides on a state that may be stale and the
// projections may drop the event it appended (Admit); after the event is
// applied, Holds on the state read back tells whether the caller got what
// it asked for, so that an answer of success is never given for an event
// the projections dropped. For any other command it reports false.
func Holds(c Channel, cmd Command) bool {
	switch cmd := cmd.(type) {
	case CreateChannel:
		return c.Exists() && c.Kind == cmd.Kind
	case AddMember:
		return c.Kind == KindGroup && c.IsMember(cmd.UserID)
	case RemoveMember:
		return c.Kind == KindGroup && !c.IsMember(cmd.UserID)
	}
	return false
}

// EvolveAt returns the state after ev, an admitted event at offset of the
// channel topic: Evolve's, with Version just past offset. Every projection
// of the channel topic evolves through it, so they agree on Version, which
// Admit reads (MessageSent.DecidedAt).
func EvolveAt(c Channel, ev Event, at time.Time, offset int64) Channel {
	c = Evolve(c, ev, at)
	c.Version = offset + 1
	return c
}

// Evolve returns the state after ev, an admitted event of the channel topic.
// It does not change c, nor set Version (see EvolveAt).
func Evolve(c Channel, ev Event, at time.Time) Channel {
	switch ev := ev.(type) {
	case ChannelCreated:
		return Channel{
			ID: ev.ChannelID, Kind: ev.Kind, Name: ev.Name, CreatorID: ev.CreatorID,
			Members: normalize(slices.Clone(ev.Members)), CreatedAt: at.UTC(),
		}
	case MemberAdded:
		c.Members = normalize(append(slices.Clone(c.Members), ev.UserID))
	case MemberRemoved:
		c.Members = slices.DeleteFunc(slices.Clone(c.Members), func(u UserID) bool { return u == ev.UserID })
	}
	return c
}

// ChannelOf returns the channel id an event of the channel topic belongs to,
// or "" for other events.
func ChannelOf(ev Event) ChannelID {
	switch ev := ev.(type) {
	case ChannelCreated:
		return ev.ChannelID
	case MemberAdded:
		return ev.ChannelID
	case MemberRemoved:
		return ev.ChannelID
	case MessageSent:
		return ev.ChannelID
	}
	return ""
}

func normalize(us []UserID) []UserID {
	slices.Sort(us)
	return slices.Compact(us)
}
