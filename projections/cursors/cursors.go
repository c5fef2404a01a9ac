// Package cursors is the projection that keeps, from the acknowledgements
// on the session topic, how far each device has received its user's inbox
// (device.acked) and how far each member has read each channel
// (channel.read). Both only move forward, so a replay or an acknowledgement
// that arrives late never moves one back.
package cursors

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// Name is the projection's name: its consumer group and position key.
const Name = "cursors"

// Store is what the projection reads while it decides.
type Store interface {
	DeviceCursors(ctx context.Context, u domain.UserID) ([]store.DeviceCursor, error)
	ChannelReads(ctx context.Context, ch domain.ChannelID) ([]store.ReadMark, error)
}

type deviceKey struct {
	u domain.UserID
	d domain.DeviceID
}

type readKey struct {
	ch domain.ChannelID
	u  domain.UserID
}

// Projection implements projector.Handler. Used by one goroutine.
type Projection struct {
	st      Store
	log     *slog.Logger
	devices map[deviceKey]store.DeviceCursor
	users   map[domain.UserID]bool // users whose cursors are cached
	reads   map[readKey]store.ReadMark
	chans   map[domain.ChannelID]bool
}

// New returns the projection.
func New(st Store, log *slog.Logger) *Projection {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Projection{st: st, log: log}
	p.Reset()
	return p
}

// Reset drops the caches.
func (p *Projection) Reset() {
	p.devices = map[deviceKey]store.DeviceCursor{}
	p.users = map[domain.UserID]bool{}
	p.reads = map[readKey]store.ReadMark{}
	p.chans = map[domain.ChannelID]bool{}
}

// Handle applies acknowledgements of one partition of the session topic.
func (p *Projection) Handle(ctx context.Context, _ int32, recs []*kgo.Record, b *store.Batch) error {
	devs := map[deviceKey]bool{}
	reads := map[readKey]bool{}
	for _, rec := range recs {
		meta, ev, err := domain.Decode(rec.Value)
		if err != nil {
			continue
		}
		switch ev := ev.(type) {
		case domain.DeviceAcked:
			if err := p.loadUser(ctx, ev.UserID); err != nil {
				return err
			}
			k := deviceKey{ev.UserID, ev.DeviceID}
			if cur, ok := p.devices[k]; ok && !AckAdvances(cur.Epoch, cur.Position, ev) {
				continue
			}
			p.devices[k] = store.DeviceCursor{UserID: ev.UserID, DeviceID: ev.DeviceID, Epoch: ev.Epoch,
				Position: ev.Position, UpdatedAt: meta.Time.UTC()}
			devs[k] = true
		case domain.ChannelRead:
			if err := p.loadChannel(ctx, ev.ChannelID); err != nil {
				return err
			}
			k := readKey{ev.ChannelID, ev.UserID}
			if cur, ok := p.reads[k]; ok && !ReadAdvances(cur.Seq, ev) {
				continue
			}
			p.reads[k] = store.ReadMark{ChannelID: ev.ChannelID, UserID: ev.UserID, Seq: ev.Seq,
				MessageID: ev.MessageID, UpdatedAt: meta.Time.UTC()}
			reads[k] = true
		}
	}
	for k := range devs {
		b.Cursors = append(b.Cursors, p.devices[k])
	}
	for k := range reads {
		b.Reads = append(b.Reads, p.reads[k])
	}
	return nil
}

// AckAdvances reports whether ev moves a device's cursor at (epoch,
// position) on: a later epoch, or a later position in the same one. The
// furthest acknowledgement wins, whatever order they arrive in.
func AckAdvances(epoch int32, position int64, ev domain.DeviceAcked) bool {
	return ev.Epoch > epoch || ev.Epoch == epoch && ev.Position > position
}

// ReadAdvances reports whether ev moves a member's read mark at seq on.
func ReadAdvances(seq int64, ev domain.ChannelRead) bool { return ev.Seq > seq }

func (p *Projection) loadUser(ctx context.Context, u domain.UserID) error {
	if p.users[u] {
		return nil
	}
	cs, err := p.st.DeviceCursors(ctx, u)
	if err != nil {
		return err
	}
	for _, c := range cs {
		p.devices[deviceKey{u, c.DeviceID}] = c
	}
	p.users[u] = true
	return nil
}

func (p *Projection) loadChannel(ctx context.Context, ch domain.ChannelID) error {
	if p.chans[ch] {
		return nil
	}
	rs, err := p.st.ChannelReads(ctx, ch)
	if err != nil {
		return err
	}
	for _, r := range rs {
		p.reads[readKey{ch, r.UserID}] = r
	}
	p.chans[ch] = true
	return nil
}
