package main

import (
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what a run measured; its JSON form is for machines, Summary
// for people.
type Result struct {
	Mode              string    `json:"mode"` // "idle" or "load"
	Server            string    `json:"server"`
	StartedAt         time.Time `json:"started_at"`
	Users             int       `json:"users"`
	DevicesPerUser    int       `json:"devices_per_user"`
	ConnsPerDevice    int       `json:"conns_per_device"`
	GroupSize         int       `json:"group_size"` // 0: 1-on-1 pairs
	Channels          int       `json:"channels"`
	ConnectionsWanted int       `json:"connections_wanted"`
	Connections       int       `json:"connections"` // opened
	Sources           []string  `json:"sources"`     // local addresses dialled from; "" is the kernel's choice
	StoppedBy         string    `json:"stopped_by,omitempty"`
	HeldSeconds       float64   `json:"held_seconds,omitempty"`
	Limits            struct {
		NoFileSoft uint64 `json:"nofile_soft"`
		NoFileHard uint64 `json:"nofile_hard"`
	} `json:"limits"`
	Setup struct {
		SignUp   float64 `json:"signup_seconds"`
		Login    float64 `json:"login_seconds"`
		Channels float64 `json:"channels_seconds"`
		Connect  float64 `json:"connect_seconds"`
	} `json:"setup"`
	Memory Memory           `json:"memory"`
	Load   *LoadResult      `json:"load,omitempty"`
	Errors map[string]int64 `json:"errors"`
}

// Memory is the server's memory before connecting and with every
// connection open and idle, and the difference per connection.
type Memory struct {
	WaitedForGC   bool      `json:"waited_for_gc"` // readings waited for a server GC (idle runs)
	Before        memSample `json:"before"`
	BeforeAfterGC bool      `json:"before_after_gc"` // read just after a server GC
	After         memSample `json:"after"`
	AfterAfterGC  bool      `json:"after_after_gc"`
	PerConnection struct {
		RSS        float64 `json:"rss_bytes"`
		HeapInuse  float64 `json:"heap_inuse_bytes"`
		StackInuse float64 `json:"stack_inuse_bytes"`
	} `json:"per_connection"`
}

func (m *Memory) perConnection(n int) {
	if n == 0 {
		return
	}
	m.PerConnection.RSS = (m.After.RSS - m.Before.RSS) / float64(n)
	m.PerConnection.HeapInuse = (m.After.HeapInuse - m.Before.HeapInuse) / float64(n)
	m.PerConnection.StackInuse = (m.After.StackInuse - m.Before.StackInuse) / float64(n)
}

// LoadResult is what sending measured. Rates and latencies cover the
// measured window; counts of lost and duplicated cover every send.
type LoadResult struct {
	TargetRate         float64 `json:"target_rate"`
	WindowSeconds      float64 `json:"window_seconds"`
	WarmupSeconds      float64 `json:"warmup_seconds"`
	GraceSeconds       float64 `json:"grace_seconds"`
	Sent               int64   `json:"sent"`
	SentInWindow       int64   `json:"sent_in_window"`
	Acked              int64   `json:"acked"`
	Failed             int64   `json:"failed"`
	Unacked            int64   `json:"unacked"`
	ExpectedDeliveries int64   `json:"expected_deliveries"`
	Deliveries         int64   `json:"deliveries"`
	LostMessages       int64   `json:"lost_messages"`
	LostDeliveries     int64   `json:"lost_deliveries"`
	Duplicates         int64   `json:"duplicates"`
	Unexpected         int64   `json:"unexpected"`
	SendRate           float64 `json:"send_rate"`
	DeliveryRate       float64 `json:"delivery_rate"`
	ServerCPUCores     float64 `json:"server_cpu_cores"`  // the server's CPU seconds per second over the window
	LoadgenCPUCores    float64 `json:"loadgen_cpu_cores"` // the load generator's, likewise
	Ack                Latency `json:"send_to_ack"`
	Deliver            Latency `json:"send_to_deliver"`
}

// Latency sums a histogram up, in microseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   int64   `json:"p50_us"`
	P90   int64   `json:"p90_us"`
	P99   int64   `json:"p99_us"`
	P999  int64   `json:"p999_us"`
	Max   int64   `json:"max_us"`
	Mean  float64 `json:"mean_us"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.TotalCount(),
		P50:   h.ValueAtQuantile(50),
		P90:   h.ValueAtQuantile(90),
		P99:   h.ValueAtQuantile(99),
		P999:  h.ValueAtQuantile(99.9),
		Max:   h.Max(),
		Mean:  h.Mean(),
	}
}

func newResult(cfg Config, start time.Time) *Result {
	res := &Result{
		Mode: "load", Server: cfg.Server, StartedAt: start.UTC(),
		Users: cfg.Users, DevicesPerUser: cfg.Devices, ConnsPerDevice: cfg.ConnsPerDevice,
		GroupSize: cfg.GroupSize, ConnectionsWanted: cfg.Connections(), Errors: map[string]int64{},
	}
	if cfg.Idle {
		res.Mode, res.GroupSize = "idle", 0
	}
	for _, ip := range cfg.sourceIPs() {
		res.Sources = append(res.Sources, ipString(ip))
	}
	return res
}

func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

// Summary writes the result for people.
func (res *Result) Summary(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	layout := fmt.Sprintf("%d users × %d devices × %d connections = %d connections wanted, %d open",
		res.Users, res.DevicesPerUser, res.ConnsPerDevice, res.ConnectionsWanted, res.Connections)
	p("evchat loadgen: %s run against %s", res.Mode, res.Server)
	p("  layout:  %s", layout)
	if res.Mode == "load" {
		kind := fmt.Sprintf("groups of %d", res.GroupSize)
		if res.GroupSize == 0 {
			kind = "1-on-1 channels"
		}
		p("           %d %s", res.Channels, kind)
	}
	srcs := "kernel's choice"
	if len(res.Sources) > 1 || (len(res.Sources) == 1 && res.Sources[0] != "") {
		srcs = strings.Join(res.Sources, ", ")
	}
	p("  sources: %s; open-files limit %d (hard %d)", srcs, res.Limits.NoFileSoft, res.Limits.NoFileHard)
	if res.StoppedBy != "" {
		p("  STOPPED at %d connections by %s", res.Connections, res.StoppedBy)
	}
	p("  setup:   sign-up %.1fs, login %.1fs, channels %.1fs, connect %.1fs",
		res.Setup.SignUp, res.Setup.Login, res.Setup.Channels, res.Setup.Connect)
	m := res.Memory
	if m.Before.RSS == 0 {
		p("  memory:  not read")
	}
	gc := func(b bool) string {
		switch {
		case b:
			return "just after a GC, RSS steady"
		case m.WaitedForGC:
			return "no GC came in time"
		}
		return "read at once, garbage included"
	}
	if m.Before.RSS != 0 {
		p("  memory:  before, %.0f connections: RSS %s, heap in use %s, stacks %s (%s)",
			m.Before.Connections, mib(m.Before.RSS), mib(m.Before.HeapInuse), mib(m.Before.StackInuse), gc(m.BeforeAfterGC))
		p("           after, %.0f connections: RSS %s, heap in use %s, stacks %s, %.0f goroutines (%s)",
			m.After.Connections, mib(m.After.RSS), mib(m.After.HeapInuse), mib(m.After.StackInuse), m.After.Goroutines, gc(m.AfterAfterGC))
	}
	if res.Connections > 0 && m.After.RSS != 0 {
		p("           per connection: RSS %.1f KB, heap in use %.1f KB, stacks %.1f KB (KB = 1000 bytes)",
			m.PerConnection.RSS/1000, m.PerConnection.HeapInuse/1000, m.PerConnection.StackInuse/1000)
	}
	if res.HeldSeconds > 0 {
		p("  held:    %.0fs", res.HeldSeconds)
	}
	if l := res.Load; l != nil {
		p("  load:    target %.0f msg/s for %.1fs after %.1fs warm-up: %.1f msg/s sent, %.1f deliveries/s",
			l.TargetRate, l.WindowSeconds, l.WarmupSeconds, l.SendRate, l.DeliveryRate)
		p("           sent %d (%d in window), acked %d, failed %d, unacked %d", l.Sent, l.SentInWindow, l.Acked, l.Failed, l.Unacked)
		p("           delivered %d of %d expected; lost (missing %.0fs after the last send) %d messages (%d deliveries), duplicated %d, unexpected %d",
			l.Deliveries, l.ExpectedDeliveries, l.GraceSeconds, l.LostMessages, l.LostDeliveries, l.Duplicates, l.Unexpected)
		p("           CPU over the window: server %.2f cores, load generator %.2f cores", l.ServerCPUCores, l.LoadgenCPUCores)
		p("  latency (ms)        p50      p90      p99    p99.9      max     mean    count")
		row := func(name string, x Latency) {
			p("    %-14s %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8d", name,
				float64(x.P50)/1000, float64(x.P90)/1000, float64(x.P99)/1000, float64(x.P999)/1000,
				float64(x.Max)/1000, x.Mean/1000, x.Count)
		}
		row("send → ack", l.Ack)
		row("send → deliver", l.Deliver)
	}
	if len(res.Errors) == 0 {
		p("  errors:  none")
		return
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(res.Errors)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, res.Errors[k]))
	}
	p("  errors:  %s", strings.Join(parts, ", "))
}
