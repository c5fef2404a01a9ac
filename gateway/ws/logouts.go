package ws

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
)

// DeviceCloser closes a device's connections on this node (Server does).
type DeviceCloser interface {
	CloseDevice(u domain.UserID, d domain.DeviceID, why string)
}

// Logouts tails the session topic and closes, on this node, the
// connections of every device that logs out on any node: the node that
// answers a logout appends device.logged_out there after it revoked the
// session in the store. A reconnect with the revoked token is refused at
// the upgrade (the store), so closing the open connections ends the
// session everywhere.
//
// The tail reads every partition of the session topic but decodes only
// the records whose type header says device.logged_out; heartbeats,
// acknowledgements and logins are skipped on the header.
type Logouts struct {
	cfg    eventlog.Config
	topic  string
	from   map[int32]kgo.Offset
	closer DeviceCloser
	log    *slog.Logger
}

// LoggedOutReason is the close reason a logged-out device's connections
// get, with close code 1013.
const LoggedOutReason = "logged out"

// NewLogouts returns a tail of the session topic from its end now: every
// logout appended after NewLogouts returns reaches Run. Call it before the
// node accepts WebSockets, so that none is opened before the tail's start.
func NewLogouts(ctx context.Context, cfg eventlog.Config, closer DeviceCloser, log *slog.Logger) (*Logouts, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	topic := cfg.Topics().Sessions
	cl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("ws: session topic's end: %w", err)
	}
	from := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { from[o.Partition] = kgo.NewOffset().At(o.Offset) })
	if len(from) == 0 {
		return nil, fmt.Errorf("ws: session topic %s has no partitions", topic)
	}
	return &Logouts{cfg: cfg, topic: topic, from: from, closer: closer, log: log}, nil
}

// Run tails until ctx is cancelled and returns nil then.
func (l *Logouts) Run(ctx context.Context) error {
	// Logouts are rare among the session topic's records (acks,
	// heartbeats): its fetches gather (a socket closes a tenth of a
	// second later at most) rather than wake this tail for every ack.
	opts := append([]kgo.Opt{kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{l.topic: l.from})}, eventlog.Gather(eventlog.GatherWait)...)
	cl, err := kgo.NewClient(l.cfg.ClientOpts(opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachError(func(topic string, p int32, err error) {
			l.log.Warn("reading logouts", "topic", topic, "partition", p, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			if !mayBeLogout(r) {
				return
			}
			_, ev, err := domain.Decode(r.Value)
			if err != nil {
				l.log.Warn("skipping undecodable session record", "partition", r.Partition, "offset", r.Offset, "err", err)
				return
			}
			if out, ok := ev.(domain.DeviceLoggedOut); ok {
				l.closer.CloseDevice(out.UserID, out.DeviceID, LoggedOutReason)
			}
		})
	}
}

// mayBeLogout reports whether r may hold device.logged_out: its type
// header says so, or it has none (eventlog.Record always sets one).
func mayBeLogout(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == "type" {
			return bytes.Equal(h.Value, []byte(domain.TypeDeviceLogout))
		}
	}
	return true
}
