package ws

import "github.com/evchat/evchat/domain"

// PushTo queues f on every connection of u that the hub holds, as the
// presence tail does, and returns how many it reached: for tests of the
// order of frames.
func PushTo(h *Hub, u domain.UserID, f ServerFrame) int {
	cs := h.conns(u)
	for _, c := range cs {
		c.send(f)
	}
	return len(cs)
}
