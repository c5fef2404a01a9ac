package ws

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
)

// heartbeat appends one device's heartbeat without waiting.
func (s *Server) heartbeat(ctx context.Context, c *conn) {
	if s.beats == nil || s.cfg.SessionsTopic == "" {
		return
	}
	rec, err := eventlog.Record(s.cfg.SessionsTopic, string(c.user),
		domain.DeviceHeartbeat{UserID: c.user, DeviceID: c.device}, heartbeatMeta(c.user, c.device, time.Now()))
	if err != nil {
		return
	}
	if err := s.beats.AppendRecords(ctx, rec); err != nil {
		s.cfg.Logger.Warn("heartbeat", "user", c.user, "err", err)
	}
}

// RunHeartbeats appends one heartbeat for every connected device each
// Heartbeat interval until ctx is cancelled; it returns nil then.
func (s *Server) RunHeartbeats(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if s.beats == nil || s.cfg.SessionsTopic == "" {
				continue
			}
			// One heartbeat per device, however many connections it has.
			var recs []*kgo.Record
			for _, d := range s.hub.devices() {
				r, err := eventlog.Record(s.cfg.SessionsTopic, string(d.user),
					domain.DeviceHeartbeat{UserID: d.user, DeviceID: d.device}, heartbeatMeta(d.user, d.device, now))
				if err == nil {
					recs = append(recs, r)
				}
			}
			if len(recs) == 0 {
				continue
			}
			if err := s.beats.AppendRecords(ctx, recs...); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("heartbeats", "devices", len(recs), "err", err)
			}
		}
	}
}

// heartbeatMeta names a heartbeat by its device and time: unique without a
// call to the id generator per heartbeat.
func heartbeatMeta(u domain.UserID, d domain.DeviceID, t time.Time) domain.Meta {
	return domain.Meta{EventID: fmt.Sprintf("hb.%s.%s.%d", u, d, t.UnixNano()), Time: t.UTC()}
}
