package eventlog

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Lag tracks how far each projection is behind the end of its topic, from
// the high watermarks its fetches report, and exports the sum per
// projection as evchat_projection_lag. A nil *Lag tracks nothing.
type Lag struct {
	gauge *prometheus.GaugeVec
	mu    sync.Mutex
	parts map[string]map[int32]int64
}

// NewLag registers the lag gauge with reg.
func NewLag(reg prometheus.Registerer) *Lag {
	l := &Lag{
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "evchat_projection_lag",
			Help: "Records between a projection's position and the end of its topic, summed over partitions.",
		}, []string{"projection"}),
		parts: map[string]map[int32]int64{},
	}
	reg.MustRegister(l.gauge)
	return l
}

// Observe records the lag of the partitions in fetches after the
// projection has processed them.
func (l *Lag) Observe(projection string, fetches kgo.Fetches) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ps := l.parts[projection]
	if ps == nil {
		ps = map[int32]int64{}
		l.parts[projection] = ps
	}
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		// The last stable offset, not the high watermark: a read-committed
		// reader cannot pass an open transaction, and a committed one ends
		// in a marker that is never returned.
		end := p.LastStableOffset
		if end < 0 {
			end = p.HighWatermark
		}
		ps[p.Partition] = max(end-(p.Records[len(p.Records)-1].Offset+1)-1, 0)
	})
	var sum int64
	for _, v := range ps {
		sum += v
	}
	l.gauge.WithLabelValues(projection).Set(float64(sum))
}

// Max returns the largest lag of any projection.
func (l *Lag) Max() int64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var m int64
	for _, ps := range l.parts {
		var sum int64
		for _, v := range ps {
			sum += v
		}
		m = max(m, sum)
	}
	return m
}
