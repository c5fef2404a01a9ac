// Package inbox is the projection that copies the inbox topic into the
// store, so a device that returns after the log's retention still gets what
// it missed, and a reconnecting device catches up without reading a whole
// Kafka partition.
package inbox

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// Name is the projection's name: its consumer group and position key.
const Name = "inbox"

// Projection implements projector.Handler. It keeps no state of its own:
// every entry is keyed by (user, epoch, offset), so applying it twice is
// harmless.
type Projection struct {
	epoch int32
	log   *slog.Logger
}

// New returns the projection for the inbox of the given epoch.
func New(epoch int32, log *slog.Logger) *Projection {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Projection{epoch: epoch, log: log}
}

// Reset does nothing: the projection caches nothing.
func (p *Projection) Reset() {}

// Handle stores the inbox entries of one partition.
func (p *Projection) Handle(_ context.Context, partition int32, recs []*kgo.Record, b *store.Batch) error {
	for _, rec := range recs {
		_, ev, err := domain.Decode(rec.Value)
		if err != nil {
			p.log.Warn("skipping undecodable record", "partition", partition, "offset", rec.Offset, "err", err)
			continue
		}
		m, ok := ev.(domain.InboxMessage)
		if !ok {
			continue
		}
		b.Inbox = append(b.Inbox, store.InboxEntry{
			UserID: m.UserID, Epoch: p.epoch, Partition: partition, Offset: rec.Offset, Message: m,
		})
	}
	return nil
}
