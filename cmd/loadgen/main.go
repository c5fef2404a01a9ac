// Command loadgen drives a running chatd through its public interfaces
// only (REST, WebSocket, /metrics) and measures it.
//
// It signs up users, logs each in on several devices, builds 1-on-1
// channels or groups, holds one WebSocket per device (or several), and
// either sends at a fixed rate and follows every send until each recipient
// device has it (send → ack and send → deliver latency, rates, errors by
// code, lost and duplicated), or, with --idle, only holds the connections
// and reports the server's memory per connection. It prints a progress
// line every second to stderr, a summary to stdout, and the same as JSON
// with --json. It targets only a loopback --server and stops by itself.
//
//	go run ./cmd/loadgen --server 127.0.0.1:8080 --users 500 --group-size 10 --rate 2000 --duration 60s
//	go run ./cmd/loadgen --server 127.0.0.1:8080 --idle --users 250 --devices 4 --conns-per-device 20 --sources 4
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// runMain parses flags, runs, and reports. It fails when the run fails or
// loses or duplicates a message.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	res, runErr := run(ctx, cfg, stderr)
	if res != nil {
		res.Summary(stdout)
		if err := writeJSON(cfg.JSON, res, stdout); err != nil {
			return errors.Join(runErr, err)
		}
	}
	if runErr != nil {
		return runErr
	}
	if l := res.Load; l != nil && (l.LostMessages > 0 || l.Duplicates > 0) {
		return fmt.Errorf("%d messages lost, %d duplicated", l.LostMessages, l.Duplicates)
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Server, "server", cfg.Server, "chatd's address (loopback only)")
	fs.IntVar(&cfg.Users, "users", cfg.Users, "users to sign up")
	fs.IntVar(&cfg.Devices, "devices", cfg.Devices, "devices each user logs in")
	fs.IntVar(&cfg.ConnsPerDevice, "conns-per-device", cfg.ConnsPerDevice, "WebSocket connections per device token (each a recipient of its own)")
	fs.IntVar(&cfg.GroupSize, "group-size", cfg.GroupSize, "members per group; 0 pairs users in 1-on-1 channels")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "messages per second, in total")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured window (with --idle: how long connections are held)")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "sending before the measured window")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "wait after the last send before counting what is missing as lost")
	fs.BoolVar(&cfg.Idle, "idle", cfg.Idle, "only hold connections and measure the server's memory per connection")
	fs.IntVar(&cfg.Sources, "sources", cfg.Sources, "loopback source addresses to dial from (127.0.0.2, ...); 0: the kernel's choice")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "idle time before reading the server's memory")
	fs.DurationVar(&cfg.GCWait, "gc-wait", cfg.GCWait, "with --idle, wait at most this long for a server GC before each memory reading; 0: read at once")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "REST requests in flight during setup")
	fs.IntVar(&cfg.ConnectConcurrency, "connect-concurrency", cfg.ConnectConcurrency, "WebSocket dials in flight")
	fs.IntVar(&cfg.Senders, "senders", cfg.Senders, "goroutines writing send frames")
	fs.IntVar(&cfg.TextSize, "text-size", cfg.TextSize, "bytes of text per message")
	fs.StringVar(&cfg.Prefix, "prefix", cfg.Prefix, "start of every user name (random by default)")
	fs.StringVar(&cfg.JSON, "json", cfg.JSON, `write the results as JSON to this file ("-": stdout)`)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, cfg.Validate()
}

func writeJSON(path string, res *Result, stdout io.Writer) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
