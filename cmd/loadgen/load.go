package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

type sendJob struct {
	c  *wsConn
	id uint64
}

// load sends at cfg.Rate for the warm-up and the measured window, then
// waits up to cfg.Grace for what is still missing.
func (r *runner) load(ctx context.Context) error {
	cfg := r.cfg
	jobs := make(chan sendJob, 4*cfg.Senders)
	var senders sync.WaitGroup
	start := time.Now()
	winStart := start.Add(cfg.Warmup)
	end := winStart.Add(cfg.Duration)
	r.tr.setWindow(winStart, end)
	for range cfg.Senders {
		senders.Go(func() {
			for j := range jobs {
				r.send(j, winStart)
			}
		})
	}
	r.setPhase(r.loadPhase(start, winStart))
	// CPU use over the window: the server's from its metrics, ours from
	// the kernel. Read in the pacer's loop: a late send is made up at once.
	var srvCPU0, ownCPU0 float64
	window := func() {
		ownCPU0 = cpuTime()
		if m, err := r.api.metrics(ctx); err == nil {
			srvCPU0 = m.CPUSeconds
		}
	}
	cpuAtEnd := func() {
		ownCPU := cpuTime()
		if m, err := r.api.metrics(ctx); err == nil && srvCPU0 > 0 {
			r.serverCores.Store(math.Float64bits((m.CPUSeconds - srvCPU0) / cfg.Duration.Seconds()))
		}
		r.ownCores.Store(math.Float64bits((ownCPU - ownCPU0) / cfg.Duration.Seconds()))
	}
	p := newPacer(cfg.Rate, start)
	rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), 1))
	timer := time.NewTimer(0)
	defer timer.Stop()
	var id uint64
	err := func() error {
		for {
			now := time.Now()
			if !now.Before(end) {
				return nil
			}
			if window != nil && !now.Before(winStart) {
				window()
				window = nil
			}
			for n := p.take(now); n > 0; n-- {
				id++
				ch := r.channels[int(id%uint64(len(r.channels)))]
				u := ch.members[rng.IntN(len(ch.members))]
				d := u.devices[rng.IntN(len(u.devices))]
				select {
				case jobs <- sendJob{c: d.conns[rng.IntN(len(d.conns))], id: id}:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			next := p.next()
			if next.After(end) {
				next = end
			}
			timer.Reset(max(0, time.Until(next)))
			select {
			case <-timer.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}()
	close(jobs)
	senders.Wait()
	cpuAtEnd()
	if err != nil {
		return err
	}

	graceStart := time.Now()
	r.setPhase(func() string {
		c := r.tr.counts()
		return fmt.Sprintf("grace (%.0fs of %s): %d sends not yet on every recipient, %d unacknowledged",
			time.Since(graceStart).Seconds(), cfg.Grace, c.Pending, c.Unacked)
	})
	for time.Since(graceStart) < cfg.Grace {
		if c := r.tr.counts(); c.Pending == 0 && c.Unacked == 0 {
			break
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// send writes one send frame.
func (r *runner) send(j sendJob, winStart time.Time) {
	c := j.c
	b, _ := json.Marshal(sendFrame{
		Type: "send", ChannelID: c.ch.id, ClientMsgID: clientMsgID(j.id),
		Text: stamp(r.cfg.Prefix, j.id, r.cfg.TextSize),
	})
	at := time.Now()
	r.tr.sent(j.id, c.ch.index, len(c.ch.conns), at, !at.Before(winStart))
	c.wmu.Lock()
	_ = c.ws.SetWriteDeadline(at.Add(10 * time.Second))
	err := c.ws.WriteMessage(websocket.TextMessage, b)
	c.wmu.Unlock()
	if err != nil {
		r.tr.failed(j.id)
		r.errs.add("write")
	}
}

// loadResult sums the tracker up.
func (r *runner) loadResult() *LoadResult {
	cfg := r.cfg
	c := r.tr.counts()
	l := r.tr.losses()
	ack, del := r.tr.histograms()
	win := cfg.Duration.Seconds()
	return &LoadResult{
		TargetRate: cfg.Rate, WindowSeconds: win, WarmupSeconds: cfg.Warmup.Seconds(), GraceSeconds: cfg.Grace.Seconds(),
		Sent: c.Sent, SentInWindow: c.Measured, Acked: c.Acked, Failed: c.Failed, Unacked: l.Unacked,
		ExpectedDeliveries: l.Expected, Deliveries: c.Deliveries,
		LostMessages: l.LostMessages, LostDeliveries: l.LostDeliveries,
		Duplicates: c.Duplicates, Unexpected: c.Unexpected,
		SendRate: float64(c.Measured) / win, DeliveryRate: float64(c.WindowDeliveries) / win,
		Ack: summarize(ack), Deliver: summarize(del),
		ServerCPUCores:  math.Float64frombits(r.serverCores.Load()),
		LoadgenCPUCores: math.Float64frombits(r.ownCores.Load()),
	}
}
