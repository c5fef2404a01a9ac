package domain

import (
	"maps"
	"time"
)

// Presence is one user's presence as the log has built it: online while any
// device's last heartbeat (or login) lies within the window of the
// presence clock, offline at once when the last device logs out.
type Presence struct {
	UserID UserID `json:"user_id"`
	// Devices maps each live device to its last heartbeat.
	Devices      map[DeviceID]time.Time `json:"devices,omitempty"`
	Online       bool                   `json:"online"`
	LastActiveAt time.Time              `json:"last_active_at"`
}

// PresenceChange is a user going online or offline at a point of the
// presence clock.
type PresenceChange struct {
	UserID       UserID    `json:"user_id"`
	Online       bool      `json:"online"`
	LastActiveAt time.Time `json:"last_active_at"`
	At           time.Time `json:"at"`
}

// DefaultPresenceWindow is how long a device counts as online after its last
// heartbeat: long enough that a train tunnel does not flap the green dot.
const DefaultPresenceWindow = 30 * time.Second

// ApplyPresence returns the user's presence after a session event at time
// t, and the change, if the event changed online/offline. It does not
// modify p.
func ApplyPresence(p Presence, ev Event, t time.Time, window time.Duration) (Presence, *PresenceChange) {
	p.Devices = maps.Clone(p.Devices)
	var d DeviceID
	switch ev := ev.(type) {
	case DeviceLoggedIn:
		p.UserID, d = ev.UserID, ev.DeviceID
	case DeviceHeartbeat:
		p.UserID, d = ev.UserID, ev.DeviceID
	case DeviceLoggedOut:
		p.UserID = ev.UserID
		delete(p.Devices, ev.DeviceID)
		if t.After(p.LastActiveAt) {
			p.LastActiveAt = t
		}
		return expire(p, t, window)
	default:
		return p, nil
	}
	if p.Devices == nil {
		p.Devices = map[DeviceID]time.Time{}
	}
	if last, ok := p.Devices[d]; !ok || t.After(last) {
		p.Devices[d] = t
	}
	if t.After(p.LastActiveAt) {
		p.LastActiveAt = t
	}
	if p.Online {
		return p, nil
	}
	p.Online = true
	return p, &PresenceChange{UserID: p.UserID, Online: true, LastActiveAt: p.LastActiveAt, At: t}
}

// ExpirePresence returns the user's presence at clock now: devices whose
// last heartbeat is a window or more old are gone, and a user with no device
// left is offline, last active at the last heartbeat.
func ExpirePresence(p Presence, now time.Time, window time.Duration) (Presence, *PresenceChange) {
	p.Devices = maps.Clone(p.Devices)
	return expire(p, now, window)
}

func expire(p Presence, now time.Time, window time.Duration) (Presence, *PresenceChange) {
	for d, t := range p.Devices {
		if !now.Before(t.Add(window)) {
			delete(p.Devices, d)
		}
	}
	if !p.Online || len(p.Devices) > 0 {
		return p, nil
	}
	p.Online = false
	return p, &PresenceChange{UserID: p.UserID, Online: false, LastActiveAt: p.LastActiveAt, At: now}
}
