package domain

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// UserID identifies a user. It is a decimal sonyflake id.
type UserID string

// DeviceID identifies one device of a user (a phone, a browser tab). The
// client chooses it at login, or the server does.
type DeviceID string

// ChannelID identifies a channel. Direct (1-on-1) channels have the
// deterministic id DirectChannelID(a, b); groups have "g" and a sonyflake id.
type ChannelID string

// MessageID is a sonyflake id: unique, and roughly sortable by time. It is
// not a position: two gateways with skewed clocks may issue ids whose order
// differs from the log's. It travels in JSON as a decimal string so that
// JavaScript clients do not lose precision.
type MessageID uint64

// String returns the id in decimal.
func (m MessageID) String() string { return strconv.FormatUint(uint64(m), 10) }

// MarshalJSON encodes the id as a decimal string.
func (m MessageID) MarshalJSON() ([]byte, error) {
	return []byte(`"` + m.String() + `"`), nil
}

// UnmarshalJSON accepts a decimal string (or, leniently, a JSON number).
func (m *MessageID) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	id, err := ParseMessageID(s)
	if err != nil {
		return err
	}
	*m = id
	return nil
}

// ParseMessageID parses a decimal message id.
func ParseMessageID(s string) (MessageID, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, Errorf(CodeBadRequest, "message id %q is not a positive decimal integer", s)
	}
	return MessageID(n), nil
}

var _ json.Marshaler = MessageID(0)

// DirectChannelID is the id of the 1-on-1 channel between a and b, the same
// whichever of them opens it, so opening it twice finds the same channel.
func DirectChannelID(a, b UserID) ChannelID {
	if b < a {
		a, b = b, a
	}
	return ChannelID("d" + string(a) + "-" + string(b))
}

// GroupChannelID is the id of a group channel made from a fresh sonyflake id.
func GroupChannelID(n uint64) ChannelID { return ChannelID(fmt.Sprintf("g%d", n)) }

// Max lengths of identifiers that clients choose.
const (
	MaxClientMsgIDLen = 64
	MaxDeviceIDLen    = 64
	MaxNameLen        = 64
	MaxChannelNameLen = 200
)

// ValidDeviceID reports whether a client-chosen device id is acceptable:
// 1 to 64 characters of letters, digits, '-', '_' and '.'.
func ValidDeviceID(d DeviceID) bool { return validToken(string(d), MaxDeviceIDLen) }

// ValidUserName reports whether a user name is acceptable: 1 to 64 characters
// of letters, digits, '-', '_' and '.'.
func ValidUserName(n string) bool { return validToken(n, MaxNameLen) }

func validToken(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) < 0
}

// ValidChannelID reports whether id has the shape of a channel id: "d" and
// two decimal user ids joined by '-', or "g" and a decimal id.
func ValidChannelID(id ChannelID) bool {
	s := string(id)
	digits := func(s string) bool {
		return len(s) >= 1 && len(s) <= 20 && strings.Trim(s, "0123456789") == ""
	}
	switch {
	case strings.HasPrefix(s, "g"):
		return digits(s[1:])
	case strings.HasPrefix(s, "d"):
		a, b, ok := strings.Cut(s[1:], "-")
		return ok && digits(a) && digits(b)
	}
	return false
}
