package store

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/evchat/evchat/domain"
)

// Metered wraps a Store and records the latency of its calls on the hot
// paths (evchat_store_seconds, by method); the rest pass through.
type Metered struct {
	Store
	hist *prometheus.HistogramVec
}

// NewMetered registers the store latency histogram with reg and wraps s.
func NewMetered(s Store, reg prometheus.Registerer) *Metered {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "evchat_store_seconds",
		Help:    "Latency of store calls, by method.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"method"})
	reg.MustRegister(h)
	return &Metered{Store: s, hist: h}
}

func (m *Metered) observe(method string, start time.Time) {
	m.hist.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

// Apply is Store.Apply, timed.
func (m *Metered) Apply(ctx context.Context, b Batch) error {
	defer m.observe("apply", time.Now())
	return m.Store.Apply(ctx, b)
}

// Channel is Store.Channel, timed.
func (m *Metered) Channel(ctx context.Context, id domain.ChannelID) (domain.Channel, error) {
	defer m.observe("channel", time.Now())
	return m.Store.Channel(ctx, id)
}

// SendDecisions is Store.SendDecisions, timed.
func (m *Metered) SendDecisions(ctx context.Context, keys []SendKey) (map[SendKey]SendDecision, error) {
	defer m.observe("send_decisions", time.Now())
	return m.Store.SendDecisions(ctx, keys)
}

// MessagesBefore is Store.MessagesBefore, timed.
func (m *Metered) MessagesBefore(ctx context.Context, ch domain.ChannelID, before int64, limit int) ([]Message, error) {
	defer m.observe("messages_before", time.Now())
	return m.Store.MessagesBefore(ctx, ch, before, limit)
}

// Inbox is Store.Inbox, timed.
func (m *Metered) Inbox(ctx context.Context, u domain.UserID, epoch int32, after int64, limit int) ([]InboxEntry, error) {
	defer m.observe("inbox", time.Now())
	return m.Store.Inbox(ctx, u, epoch, after, limit)
}
