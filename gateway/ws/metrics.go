package ws

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/evchat/evchat/domain"
)

// Metrics are the gateway's Prometheus metrics.
type Metrics struct {
	connections prometheus.GaugeFunc
	deliveries  prometheus.Counter
	drains      prometheus.Counter
	frames      prometheus.Counter
	errors      *prometheus.CounterVec
	sendAck     prometheus.Histogram
	deliver     prometheus.Histogram
}

// NewMetrics registers the gateway's metrics with reg. open reports the
// number of open connections.
func NewMetrics(reg prometheus.Registerer, open func() int) *Metrics {
	m := &Metrics{
		connections: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "evchat_ws_connections", Help: "Open WebSocket connections.",
		}, func() float64 { return float64(open()) }),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "evchat_ws_deliveries_total", Help: "Inbox entries delivered to devices.",
		}),
		drains: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "evchat_ws_drains_total",
			Help: "Drains of a connection's send queue that wrote frames: each goes to the socket in one write (one per 64 KiB beyond).",
		}),
		frames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "evchat_ws_frames_written_total", Help: "Frames written to WebSocket connections, by drains.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evchat_ws_errors_total", Help: "Error frames sent, by code.",
		}, []string{"code"}),
		sendAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "evchat_send_ack_seconds",
			Help:    "Time from a send frame read to its acknowledgement (the log accepted it).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	m.deliver = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "evchat_send_deliver_seconds",
		Help:    "Time from a message's acceptance (its event time) to its live delivery to a device.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	reg.MustRegister(m.connections, m.deliveries, m.drains, m.frames, m.errors, m.sendAck, m.deliver)
	return m
}

func (m *Metrics) delivered(sentAt time.Time, live bool) {
	if m != nil {
		m.deliveries.Inc()
		if live {
			m.deliver.Observe(time.Since(sentAt).Seconds())
		}
	}
}

// drained counts a drain that wrote frames frames.
func (m *Metrics) drained(frames int) {
	if m != nil && frames > 0 {
		m.drains.Inc()
		m.frames.Add(float64(frames))
	}
}

func (m *Metrics) failed(err error) {
	if m != nil {
		m.errors.WithLabelValues(string(domain.CodeOf(err))).Inc()
	}
}

func (m *Metrics) acked(seconds float64) {
	if m != nil {
		m.sendAck.Observe(seconds)
	}
}
