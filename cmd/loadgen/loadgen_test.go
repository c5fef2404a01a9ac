package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name  string
		rate  float64
		at    []time.Duration // successive take calls, from t0
		want  []int64
		next  time.Duration // p.next() after the calls, from t0
		total int64
	}{
		{"before the start", 100, []time.Duration{-time.Second}, []int64{0}, 0, 0},
		{"first at the start", 100, []time.Duration{0}, []int64{1}, 10 * time.Millisecond, 1},
		{"evenly spaced", 100, []time.Duration{0, 5 * time.Millisecond, 10 * time.Millisecond, 19 * time.Millisecond}, []int64{1, 0, 1, 0}, 20 * time.Millisecond, 2},
		{"catches up after a stall", 1000, []time.Duration{0, 100 * time.Millisecond}, []int64{1, 100}, 101 * time.Millisecond, 101},
		{"one second", 2000, []time.Duration{999999 * time.Microsecond}, []int64{2000}, time.Second, 2000},
		{"time going back takes nothing", 10, []time.Duration{time.Second, 500 * time.Millisecond}, []int64{11, 0}, 1100 * time.Millisecond, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPacer(tt.rate, t0)
			var total int64
			for i, at := range tt.at {
				got := p.take(t0.Add(at))
				if got != tt.want[i] {
					t.Errorf("take at %v = %d, want %d", at, got, tt.want[i])
				}
				total += got
			}
			if total != tt.total {
				t.Errorf("took %d in all, want %d", total, tt.total)
			}
			if got := p.next().Sub(t0); got != tt.next {
				t.Errorf("next = %v, want %v", got, tt.next)
			}
		})
	}
}

func TestTracker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	tr := newTracker()
	tr.setWindow(ms(0), ms(1000))

	// 1: on every recipient, acknowledged.
	tr.sent(1, 0, 3, ms(0), true)
	tr.acked(1, ms(2))
	for slot := range 3 {
		tr.delivered(1, 0, slot, ms(5+slot))
	}
	// 2: one recipient twice, one never.
	tr.sent(2, 0, 3, ms(10), true)
	tr.acked(2, ms(11))
	tr.delivered(2, 0, 0, ms(12))
	tr.delivered(2, 0, 0, ms(13))
	tr.delivered(2, 0, 1, ms(14))
	// 3: refused: nothing expected.
	tr.sent(3, 1, 2, ms(20), true)
	tr.failed(3)
	// 4: sent before the window: counted, not measured; never acknowledged.
	tr.sent(4, 1, 2, ms(-50), false)
	tr.delivered(4, 1, 0, ms(-40))
	tr.delivered(4, 1, 1, ms(30))
	// Frames that match nothing: an unknown id, a slot out of range, the
	// wrong channel.
	tr.delivered(99, 0, 0, ms(40))
	tr.delivered(1, 0, 7, ms(40))
	tr.delivered(1, 1, 0, ms(40))
	tr.acked(98, ms(40))

	c := tr.counts()
	want := counts{
		Sent: 4, Measured: 3, Acked: 2, Failed: 1, Unacked: 1, Pending: 1,
		Deliveries: 7, WindowDeliveries: 6, Duplicates: 1, Unexpected: 4,
	}
	if c != want {
		t.Errorf("counts = %+v\nwant     %+v", c, want)
	}
	l := tr.losses()
	if wantL := (losses{Expected: 8, LostDeliveries: 1, LostMessages: 1, Unacked: 1}); l != wantL {
		t.Errorf("losses = %+v, want %+v", l, wantL)
	}
	ack, del := tr.histograms()
	if ack.TotalCount() != 2 || ack.Max() != 2000 {
		t.Errorf("ack histogram: %d values, max %d µs; want 2, 2000", ack.TotalCount(), ack.Max())
	}
	// Measured deliveries: 5, 6, 7 ms for send 1; 2 and 4 ms for send 2.
	if del.TotalCount() != 5 || del.Min() != 2000 || !del.ValuesAreEquivalent(del.Max(), 7000) {
		t.Errorf("deliver histogram: %d values, min %d, max %d µs; want 5, 2000, 7000", del.TotalCount(), del.Min(), del.Max())
	}

	// The missing delivery arrives late, and a refused send's copy shows
	// up anyway: nothing is lost then.
	tr.delivered(2, 0, 2, ms(5000))
	tr.delivered(3, 1, 0, ms(5000))
	if c := tr.counts(); c.Pending != 0 || c.WindowDeliveries != 6 {
		t.Errorf("after the late delivery: pending %d, window deliveries %d; want 0, 6", c.Pending, c.WindowDeliveries)
	}
	if l := tr.losses(); l.LostMessages != 0 || l.LostDeliveries != 0 {
		t.Errorf("after the late delivery: %+v", l)
	}
}

func TestStamp(t *testing.T) {
	for _, size := range []int{1, 40, 200} {
		text := stamp("lgabc", 12345, size)
		if len(text) < size {
			t.Errorf("stamp of size %d is %d bytes", size, len(text))
		}
		if id, ok := parseStamp("lgabc", text); !ok || id != 12345 {
			t.Errorf("parseStamp(%q) = %d, %v", text, id, ok)
		}
	}
	for _, text := range []string{"", "hello", "lg lgabd 1 x", "lg lgabc x y", "lg lgabc 12", "lg lgabcd 1 x"} {
		if id, ok := parseStamp("lgabc", text); ok {
			t.Errorf("parseStamp(%q) = %d, want no match", text, id)
		}
	}
	if id, ok := parseClientMsgID(clientMsgID(77)); !ok || id != 77 {
		t.Errorf("client_msg_id round trip: %d, %v", id, ok)
	}
	if _, ok := parseClientMsgID("c-77"); ok {
		t.Error("foreign client_msg_id matched")
	}
}

func TestSummarize(t *testing.T) {
	h := newHistogram()
	for v := time.Duration(1); v <= 1000; v++ {
		record(h, v*time.Millisecond)
	}
	record(h, time.Hour) // clamped to the range, not dropped
	s := summarize(h)
	near := func(got, want int64) bool { return got >= want-want/100 && got <= want+want/100 }
	if s.Count != 1001 || !near(s.P50, 500_000) || !near(s.P90, 900_000) || !near(s.P99, 990_000) || !near(s.P999, 1_000_000) {
		t.Errorf("summary %+v", s)
	}
	if !near(s.Max, histMax) {
		t.Errorf("max %d, want the clamp %d", s.Max, histMax)
	}
	if (summarize(newHistogram()) != Latency{}) {
		t.Error("an empty histogram sums up to nonzero")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"defaults", func(*Config) {}, true},
		{"ipv6 loopback", func(c *Config) { c.Server = "[::1]:8080" }, true},
		{"localhost", func(c *Config) { c.Server = "localhost:8080" }, true},
		{"not loopback", func(c *Config) { c.Server = "10.0.0.1:8080" }, false},
		{"a name", func(c *Config) { c.Server = "example.com:8080" }, false},
		{"no port", func(c *Config) { c.Server = "127.0.0.1" }, false},
		{"sources on ipv6", func(c *Config) { c.Server = "[::1]:8080"; c.Sources = 2 }, false},
		{"too many sources", func(c *Config) { c.Sources = 251 }, false},
		{"pairs need even users", func(c *Config) { c.GroupSize = 0; c.Users = 7 }, false},
		{"pairs", func(c *Config) { c.GroupSize = 0; c.Users = 8 }, true},
		{"group of one", func(c *Config) { c.GroupSize = 1 }, false},
		{"users not a multiple", func(c *Config) { c.Users = 25 }, false},
		{"idle ignores groups", func(c *Config) { c.Idle = true; c.Users = 25; c.Rate = 0 }, true},
		{"no rate", func(c *Config) { c.Rate = 0 }, false},
		{"no devices", func(c *Config) { c.Devices = 0 }, false},
		{"no duration", func(c *Config) { c.Duration = 0 }, false},
		{"negative grace", func(c *Config) { c.Grace = -1 }, false},
		{"bad prefix", func(c *Config) { c.Prefix = "a b" }, false},
		{"huge text", func(c *Config) { c.TextSize = 200000 }, false},
		{"no senders", func(c *Config) { c.Senders = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.change(&c)
			err := c.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Errorf("%v does not wrap ErrConfig", err)
			}
		})
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
go_gc_duration_seconds{quantile="0.5"} 0.0001
go_gc_duration_seconds_count 7
go_memstats_heap_inuse_bytes 1.2582912e+07
go_memstats_stack_inuse_bytes 1.441792e+06
evchat_ws_connections 3
evchat_ws_errors_total{code="not_member"} 2
process_resident_memory_bytes 3.0437376e+07 1700000000000
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := memSample{RSS: 30437376, HeapInuse: 12582912, StackInuse: 1441792, Goroutines: 42, Connections: 3, GCs: 7}
	if m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	if _, err := parseMetrics(strings.NewReader("go_goroutines 1\n")); err == nil {
		t.Error("no error without the memory figures")
	}
}

func TestParallel(t *testing.T) {
	boom := errors.New("boom")
	var seen [100]bool
	if err := parallel(context.Background(), 100, 7, func(_ context.Context, i int) error { seen[i] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	for i, s := range seen {
		if !s {
			t.Fatalf("%d not run", i)
		}
	}
	err := parallel(context.Background(), 100, 3, func(_ context.Context, i int) error {
		if i == 10 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Errorf("got %v, want boom", err)
	}
}

// TestAgainstChatd builds chatd, runs it on the embedded default with a
// temporary data directory, and drives it with a small load and a small
// idle run.
func TestAgainstChatd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs chatd")
	}
	server := startChatd(t)

	t.Run("load", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Server = server
		cfg.Users, cfg.Devices, cfg.GroupSize = 6, 2, 3
		cfg.Rate, cfg.Duration, cfg.Warmup, cfg.Grace, cfg.Settle = 50, 3*time.Second, 500*time.Millisecond, 15*time.Second, 0
		res := runForTest(t, cfg)
		l := res.Load
		if l == nil {
			t.Fatal("no load result")
		}
		if l.Deliveries == 0 || l.Sent < 100 {
			t.Fatalf("sent %d, delivered %d: want at least 100 and some", l.Sent, l.Deliveries)
		}
		if l.LostMessages != 0 || l.LostDeliveries != 0 || l.Duplicates != 0 || l.Unexpected != 0 || l.Failed != 0 || l.Unacked != 0 {
			t.Errorf("lost %d (%d deliveries), duplicated %d, unexpected %d, failed %d, unacked %d",
				l.LostMessages, l.LostDeliveries, l.Duplicates, l.Unexpected, l.Failed, l.Unacked)
		}
		// Each send reaches both devices of each of the group's 3 members.
		if l.ExpectedDeliveries != 6*(l.Sent-l.Failed) || l.Deliveries != l.ExpectedDeliveries {
			t.Errorf("sent %d, expected %d deliveries, got %d", l.Sent, l.ExpectedDeliveries, l.Deliveries)
		}
		if l.Deliver.Count == 0 || l.Ack.Count == 0 || l.Deliver.P50 <= 0 {
			t.Errorf("latency: ack %+v deliver %+v", l.Ack, l.Deliver)
		}
	})

	t.Run("idle", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Server = server
		cfg.Idle = true
		cfg.Users, cfg.Devices, cfg.ConnsPerDevice, cfg.Sources = 4, 2, 2, 2
		cfg.Duration, cfg.Settle, cfg.GCWait = time.Second, 200*time.Millisecond, 0
		res := runForTest(t, cfg)
		if res.Connections != 16 || res.Memory.After.Connections != 16 || res.Memory.Before.Connections != 0 {
			t.Errorf("opened %d; the server counted %v before and %v after, want 0 and 16",
				res.Connections, res.Memory.Before.Connections, res.Memory.After.Connections)
		}
		if res.StoppedBy != "" {
			t.Errorf("stopped by %s", res.StoppedBy)
		}
	})
}

func runForTest(t *testing.T, cfg Config) *Result {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	res, err := run(ctx, cfg, &progress)
	var sum bytes.Buffer
	if res != nil {
		res.Summary(&sum)
	}
	t.Logf("progress:\n%s\nsummary:\n%s", &progress, &sum)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// startChatd builds and starts chatd and returns its address; the test's
// cleanup stops it.
func startChatd(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "chatd")
	build := exec.Command("go", "build", "-o", bin, "github.com/evchat/evchat/cmd/chatd")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building chatd: %v\n%s", err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "--http", addr, "--data", filepath.Join(dir, "data"),
		"--embedded-kafka-port", fmt.Sprint(freePort(t)), "--partitions", "4", "--log-level", "warn")
	var stderr bytes.Buffer
	cmd.Stderr = &lockedBuffer{b: &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("chatd stderr:\n%s", stderr.String())
		}
	})
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-done:
			t.Fatalf("chatd exited: %s", stderr.String())
		default:
		}
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
	}
	t.Fatalf("chatd not healthy after 90s: %s", stderr.String())
	return ""
}

// freePort returns a port that was free a moment ago, from 15000-20000:
// below the kernel's ephemeral range (a client connection could take a
// port from there before chatd binds it) and apart from the ports the
// chatd package's tests use (20000-32000), which run at the same time.
func freePort(t *testing.T) int {
	for range 1000 {
		port := 15000 + rand.IntN(5000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port in 15000-20000")
	return 0
}

// lockedBuffer is a bytes.Buffer the child's output goroutine and the
// test may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
