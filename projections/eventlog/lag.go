package eventlog

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Lag tracks how far each projection is behind the end of its topic, from
// the high watermarks its fetches report, and exports the sum per
// projection as evchat_projection_lag. With each batch it also observes
// the batch's records (evchat_projection_batch_records) and its delay
// (evchat_projection_delay_seconds): from the append of its oldest record
// (the record's timestamp, set by its producer) to the batch's commit,
// what the stage adds to a message's way when it is the oldest; and the
// time each phase of the batch took (evchat_projection_batch_phase_seconds),
// which tells where that delay goes. A nil *Lag tracks nothing.
type Lag struct {
	gauge   *prometheus.GaugeVec
	records *prometheus.HistogramVec
	delay   *prometheus.HistogramVec
	phase   *prometheus.HistogramVec
	mu      sync.Mutex
	parts   map[string]map[int32]int64 // as of each projection's last committed batch
	// inflight holds the records of the batch each projection is
	// processing (Begin), until it commits (Observe).
	inflight map[string]int64
}

// NewLag registers the lag gauge and the batch histograms with reg.
func NewLag(reg prometheus.Registerer) *Lag {
	l := &Lag{
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "evchat_projection_lag",
			Help: "Records between a projection's position and the end of its topic, summed over partitions.",
		}, []string{"projection"}),
		records: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "evchat_projection_batch_records",
			Help:    "Records per committed batch of a projection.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000},
		}, []string{"projection"}),
		delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "evchat_projection_delay_seconds",
			Help:    "Per committed batch of a projection: from the append of its oldest record (its timestamp) to the commit.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30},
		}, []string{"projection"}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "evchat_projection_batch_phase_seconds",
			Help:    "Per committed batch of a projection, the time of each phase: restore (of partitions new to it), prepare (the Handler's reads ahead), process, flush (the Handler's end of batch), produce (waiting for the batch's records to be acknowledged), commit.",
			Buckets: []float64{.0001, .0002, .0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30},
		}, []string{"projection", "phase"}),
		parts:    map[string]map[int32]int64{},
		inflight: map[string]int64{},
	}
	reg.MustRegister(l.gauge, l.records, l.delay, l.phase)
	return l
}

// Begin records, before the projection processes fetches, that their
// records are still ahead of its position: the gauge counts them until
// Observe. Without it a projection that fetched everything up to the end
// of its topic read as 0 behind for as long as it took to apply the fetch,
// while the topic grew: on Kafka + Cassandra at 2,000 msg/s the inbox
// projection spent 25 s on one batch of 133,000 entries with its lag at 0.
// Max, which /readyz reads, leaves them out: it is the lag as of each
// projection's last committed batch (push applies thousands of entries a
// batch by design, and would flap the bound of 1,000 under load).
func (l *Lag) Begin(projection string, fetches kgo.Fetches) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight[projection] = int64(fetches.NumRecords())
	l.setGauge(projection)
}

// Observe records the lag of the partitions in fetches after the
// projection has processed them, the batch's size and its delay.
func (l *Lag) Observe(projection string, fetches kgo.Fetches) {
	if l == nil {
		return
	}
	var oldest time.Time
	n := 0
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
		n += len(p.Records)
		if first := p.Records[0].Timestamp; oldest.IsZero() || first.Before(oldest) {
			oldest = first
		}
		ps[p.Partition] = behind(p)
	})
	if n > 0 {
		l.records.WithLabelValues(projection).Observe(float64(n))
		l.delay.WithLabelValues(projection).Observe(max(time.Since(oldest), 0).Seconds())
	}
	delete(l.inflight, projection)
	l.setGauge(projection)
}

// behind returns how many records of the partition's log lie past the
// fetch's last record, as of the fetch: up to the last stable offset, not
// the high watermark, as a read-committed reader cannot pass an open
// transaction, and a committed one ends in a marker that is never
// returned.
func behind(p kgo.FetchTopicPartition) int64 {
	end := p.LastStableOffset
	if end < 0 {
		end = p.HighWatermark
	}
	return max(end-(p.Records[len(p.Records)-1].Offset+1)-1, 0)
}

// Of returns the projection's lag as the gauge exports it: what its last
// committed batch left, and the batch it is processing.
func (l *Lag) Of(projection string) int64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.of(projection)
}

// of is Of with l.mu held.
func (l *Lag) of(projection string) int64 {
	sum := l.inflight[projection]
	for _, v := range l.parts[projection] {
		sum += v
	}
	return sum
}

// setGauge exports the projection's lag; l.mu is held.
func (l *Lag) setGauge(projection string) {
	l.gauge.WithLabelValues(projection).Set(float64(l.of(projection)))
}

// Phase records how long one phase of a committed batch took.
func (l *Lag) Phase(projection, phase string, d time.Duration) {
	if l == nil {
		return
	}
	l.phase.WithLabelValues(projection, phase).Observe(d.Seconds())
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
