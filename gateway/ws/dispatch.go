package ws

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/auth"
	"github.com/evchat/evchat/gateway/throttle"
)

// admitSend takes a send's tokens from its user's buckets, or refuses it
// with rate_limited and how long to wait: before anything is written.
func (s *Server) admitSend(c *conn, f ClientFrame) error {
	retry, ok := throttle.Allow(time.Now(), string(c.user),
		throttle.Take{B: s.cfg.Sends, N: 1}, throttle.Take{B: s.cfg.SendBytes, N: len(f.Text)})
	switch {
	case ok:
		return nil
	case retry == 0: // more than the byte bucket holds (Validate prevents it)
		return domain.Errorf(domain.CodeTooLong, "text of %d bytes: more than this gateway's send rate allows at once", len(f.Text))
	}
	return &domain.Error{Code: domain.CodeRateLimited, RetryAfter: retry,
		Msg: fmt.Sprintf("too many sends from this user; retry after %s", retry.Round(time.Millisecond))}
}

// send carries out a send frame, read at the time given, and answers it
// with an ack or an error frame. It runs off the read loop (see sends);
// next lets the connection's next send to the channel start.
func (s *Server) send(ctx context.Context, c *conn, f ClientFrame, read time.Time, next func(), log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
	defer cancel()
	id, err := s.svc.Send(ctx, c.user, c.device, f.ChannelID, f.ClientMsgID, f.Text, next)
	if err != nil {
		s.cfg.Metrics.failed(err)
		if domain.CodeOf(err) == domain.CodeInternal {
			log.Error("send", "err", err)
		}
		c.send(errorFrame(err, f.ClientMsgID))
		return
	}
	s.cfg.Metrics.acked(time.Since(read).Seconds()) // as the client sees it: waiting for its turn included
	c.send(ServerFrame{Type: TypeAck, ClientMsgID: f.ClientMsgID, ChannelID: f.ChannelID, MessageID: id})
}

// handle carries out a frame other than a send, on the read loop. A
// command has CommandTimeout; a sync has no deadline but must keep making
// progress (see Config.SyncStall), each of its store reads bounded.
func (s *Server) handle(ctx context.Context, c *conn, part int32, f ClientFrame, log *slog.Logger) {
	if f.Type != TypeSync {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.CommandTimeout)
		defer cancel()
	}
	switch f.Type {
	case TypePing:
		c.send(ServerFrame{Type: TypePong})
	case TypeReceived:
		if *f.Epoch > c.gen.epoch {
			e := c.gen.epoch
			c.send(ServerFrame{Type: TypeResync, Epoch: &e})
			return
		}
		if err := s.svc.Acked(ctx, auth.Claims{UserID: c.user, DeviceID: c.device}, *f.Epoch, *f.Position); err != nil {
			s.cfg.Metrics.failed(err)
			c.send(errorFrame(err, ""))
		}
	case TypeRead:
		if err := s.svc.Read(ctx, auth.Claims{UserID: c.user, DeviceID: c.device}, f.ChannelID, f.MessageID); err != nil {
			s.cfg.Metrics.failed(err)
			c.send(errorFrame(err, ""))
		}
	case TypeSync:
		pos, err := s.syncFrom(ctx, c, f)
		if err == nil {
			err = s.sync(ctx, c, part, *f.Epoch, pos)
		}
		if err != nil {
			log.Warn("sync", "err", err)
			s.cfg.Metrics.failed(err)
			if !c.isCut() {
				c.send(errorFrame(err, ""))
			}
		}
	}
}

// syncFrom returns the position a sync starts after: the frame's, or the
// last one the device acknowledged (received), or -1.
func (s *Server) syncFrom(ctx context.Context, c *conn, f ClientFrame) (int64, error) {
	if f.Position != nil {
		return *f.Position, nil
	}
	sctx, cancel := s.storeCall(ctx)
	defer cancel()
	cs, err := s.st.DeviceCursors(sctx, c.user)
	if err != nil {
		return 0, err
	}
	for _, dc := range cs {
		if dc.DeviceID == c.device && dc.Epoch == *f.Epoch {
			return dc.Position, nil
		}
	}
	return -1, nil
}
