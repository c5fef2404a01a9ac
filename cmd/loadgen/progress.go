package main

import (
	"context"
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// progressLoop writes the current phase's line every second until ctx
// ends.
func (r *runner) progressLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		f := r.phase.Load()
		if f == nil {
			continue
		}
		line := (*f)()
		if n := r.errs.total(); n > 0 {
			line += fmt.Sprintf(" | errors %d", n)
		}
		fmt.Fprintf(r.out, "[%4.0fs] %s\n", time.Since(r.start).Seconds(), line)
	}
}

// idlePhase is the line while connections are held: how many, and the
// server's memory now.
func (r *runner) idlePhase(ctx context.Context, opened int) func() string {
	return func() string {
		line := fmt.Sprintf("holding %d connections", opened-int(r.dropped.Load()))
		mctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
		defer cancel()
		if m, err := r.api.metrics(mctx); err == nil {
			line += fmt.Sprintf(" | server: %.0f open, RSS %s, heap %s", m.Connections, mib(m.RSS), mib(m.HeapInuse))
		}
		return line
	}
}

// loadPhase is the line while sending: rates over the last second, and
// the p99 so far and over the last second (a stall shows in the latter
// long before the former moves). The progress goroutine alone calls it,
// so its state needs no lock.
func (r *runner) loadPhase(start, winStart time.Time) func() string {
	var last counts
	lastAck, lastDel := newHistogram(), newHistogram()
	lastAt := start
	return func() string {
		now := time.Now()
		c := r.tr.counts()
		dt := now.Sub(lastAt).Seconds()
		ack, del := r.tr.histograms()
		stage := "measuring"
		if now.Before(winStart) {
			stage = "warm-up"
		}
		line := fmt.Sprintf("%s: sent %.0f/s, acked %d (%d waiting), delivered %.0f/s, p99 ack %s (last second %s) deliver %s (%s), pending %d, dup %d",
			stage, float64(c.Sent-last.Sent)/dt, c.Acked, c.Unacked, float64(c.Deliveries-last.Deliveries)/dt,
			ms(ack.ValueAtQuantile(99)), ms(since(ack, lastAck).ValueAtQuantile(99)),
			ms(del.ValueAtQuantile(99)), ms(since(del, lastDel).ValueAtQuantile(99)), c.Pending, c.Duplicates)
		lastAck, lastDel = ack, del
		if d := r.dropped.Load(); d > 0 {
			line += fmt.Sprintf(", %d connections dropped", d)
		}
		last, lastAt = c, now
		return line
	}
}

// since returns what was recorded into now after the copy then was taken:
// both are copies of one growing histogram.
func since(now, then *hdrhistogram.Histogram) *hdrhistogram.Histogram {
	n, t := now.Export(), then.Export()
	for i := range min(len(n.Counts), len(t.Counts)) {
		n.Counts[i] -= t.Counts[i]
	}
	return hdrhistogram.Import(n)
}

// mib formats bytes in MiB.
func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// ms formats microseconds in milliseconds.
func ms(us int64) string { return fmt.Sprintf("%.2fms", float64(us)/1000) }
