package domain

import (
	"testing"
	"time"
)

// TestPresence drives the presence rules with a controlled clock: each step
// is an event (or a clock tick) at a time, and the change it must cause.
func TestPresence(t *testing.T) {
	const w = 30 * time.Second
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	login := func(d DeviceID) Event { return DeviceLoggedIn{UserID: "1", DeviceID: d} }
	beat := func(d DeviceID) Event { return DeviceHeartbeat{UserID: "1", DeviceID: d} }
	logout := func(d DeviceID) Event { return DeviceLoggedOut{UserID: "1", DeviceID: d} }
	type step struct {
		ev   Event // nil: a clock tick
		at   float64
		want string // "", "online" or "offline"
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"login is online at once", []step{{login("a"), 0, "online"}}},
		{"heartbeats keep it online", []step{
			{login("a"), 0, "online"}, {beat("a"), 5, ""}, {nil, 29, ""}, {beat("a"), 30, ""}, {nil, 59.9, ""},
		}},
		{"silence for the window is offline", []step{
			{login("a"), 0, "online"}, {beat("a"), 5, ""}, {nil, 34.9, ""}, {nil, 35, "offline"}, {nil, 90, ""},
		}},
		{"a flap shorter than the window is invisible", []step{
			{login("a"), 0, "online"}, {beat("a"), 5, ""}, {nil, 20, ""}, {beat("a"), 25, ""}, {nil, 54, ""},
		}},
		{"logout of the last device is offline at once", []step{
			{login("a"), 0, "online"}, {logout("a"), 1, "offline"}, {nil, 100, ""},
		}},
		{"logout of one of two devices is not", []step{
			{login("a"), 0, "online"}, {login("b"), 1, ""}, {logout("a"), 2, ""}, {beat("b"), 20, ""},
			{nil, 49, ""}, {nil, 50, "offline"},
		}},
		{"a crashed device expires while another logs out", []step{
			{login("a"), 0, "online"}, {login("b"), 10, ""}, {nil, 30, ""}, {logout("b"), 31, "offline"},
		}},
		{"a heartbeat from a skewed clock never moves time back", []step{
			{login("a"), 10, "online"}, {beat("a"), 5, ""}, {nil, 39.9, ""}, {nil, 40, "offline"},
		}},
		{"back after offline", []step{
			{login("a"), 0, "online"}, {nil, 30, "offline"}, {beat("a"), 31, "online"},
		}},
		{"a heartbeat without login is online", []step{{beat("a"), 0, "online"}}},
		{"logout while offline changes nothing", []step{{logout("a"), 0, ""}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p Presence
			for i, s := range tc.steps {
				var ch *PresenceChange
				before := p
				if s.ev == nil {
					p, ch = ExpirePresence(p, at(s.at), w)
				} else {
					p, ch = ApplyPresence(p, s.ev, at(s.at), w)
				}
				got := ""
				if ch != nil {
					got = map[bool]string{true: "online", false: "offline"}[ch.Online]
					if !ch.At.Equal(at(s.at)) || ch.UserID != "1" {
						t.Fatalf("step %d: change %+v", i, ch)
					}
				}
				if got != s.want {
					t.Fatalf("step %d (%T at %vs): change %q, want %q; state %+v", i, s.ev, s.at, got, s.want, p)
				}
				if len(before.Devices) > 0 && &before.Devices == &p.Devices {
					t.Fatalf("step %d: input state modified", i)
				}
			}
		})
	}
}

// TestPresenceLastActive: offline carries the last heartbeat, not the time
// the absence was noticed.
func TestPresenceLastActive(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	p, _ := ApplyPresence(Presence{}, DeviceLoggedIn{UserID: "1", DeviceID: "a"}, t0, time.Minute)
	p, _ = ApplyPresence(p, DeviceHeartbeat{UserID: "1", DeviceID: "a"}, t0.Add(7*time.Second), time.Minute)
	before := len(p.Devices)
	_, ch := ExpirePresence(p, t0.Add(2*time.Minute), time.Minute)
	if ch == nil || ch.Online || !ch.LastActiveAt.Equal(t0.Add(7*time.Second)) {
		t.Fatalf("change %+v", ch)
	}
	if len(p.Devices) != before {
		t.Fatal("ExpirePresence modified its input")
	}
}
