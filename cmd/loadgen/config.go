package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"regexp"
	"time"
)

// Config is one load run. DefaultConfig gives every field the default
// written beside it; Validate checks a config before anything is sent.
type Config struct {
	// Server is chatd's REST and WebSocket address, host:port. It must be
	// a loopback address: the load generator drives only a server on this
	// machine. Default 127.0.0.1:8080.
	Server string
	// Users is how many users are signed up. Default 100.
	Users int
	// Devices is how many devices each user logs in. Default 1.
	Devices int
	// ConnsPerDevice is how many WebSocket connections each device opens
	// with its one token. Every connection counts as a recipient of its
	// own; more than 1 opens many connections without paying a password
	// check (argon2id) per connection at login. Default 1.
	ConnsPerDevice int
	// GroupSize is the members per group; the users are cut into groups
	// of this size, so Users must be a multiple of it. 0 pairs the users
	// in 1-on-1 (direct) channels instead, so Users must be even.
	// Default 10.
	GroupSize int
	// Rate is the messages sent per second, over all connections.
	// Default 100.
	Rate float64
	// Duration is the measured window: sending after the warm-up, or, with
	// Idle, how long the connections are held once all are open (at least
	// until the memory reading). Default 60s.
	Duration time.Duration
	// Warmup is sent before the measured window and left out of latency
	// and rate figures (but not out of lost and duplicate counts).
	// Default 5s.
	Warmup time.Duration
	// Grace is how long after the last send the run waits for missing
	// acknowledgements and deliveries before counting them lost.
	// Default 10s.
	Grace time.Duration
	// Idle only holds connections and measures the server's memory per
	// connection; nothing is sent and no channel is made.
	Idle bool
	// Sources is how many loopback source addresses connections are
	// spread over: 127.0.0.2, 127.0.0.3, ... Each has its own range of
	// local ports. 0 lets the kernel choose (one address). Default 0.
	Sources int
	// Settle is how long connections sit idle before the memory reading.
	// Default 3s.
	Settle time.Duration
	// GCWait bounds, in Idle runs, the wait for the server's next garbage
	// collection before each memory reading (Go forces one every two
	// minutes), so that garbage (such as argon2id's 19 MiB buffers from
	// sign-up) is not counted. 0 reads at once. Default 130s.
	GCWait time.Duration
	// Concurrency is the REST requests in flight during setup (sign-up,
	// login, channels). Each password check costs the server ~20 ms of CPU
	// and 19 MiB. Default 4.
	Concurrency int
	// ConnectConcurrency is the WebSocket dials in flight. Default 64.
	ConnectConcurrency int
	// Senders is the goroutines writing send frames. Default 16.
	Senders int
	// TextSize is the length of each message's text in bytes; a text is
	// never shorter than the stamp that names its send (about 35 bytes).
	// Default 64.
	TextSize int
	// Prefix starts every user name. Default "lg" and 8 random hex digits,
	// so that runs against the same server never collide.
	Prefix string
	// JSON names a file for the results as JSON; "-" is stdout; "" none.
	JSON string
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return Config{
		Server:             "127.0.0.1:8080",
		Users:              100,
		Devices:            1,
		ConnsPerDevice:     1,
		GroupSize:          10,
		Rate:               100,
		Duration:           60 * time.Second,
		Warmup:             5 * time.Second,
		Grace:              10 * time.Second,
		Settle:             3 * time.Second,
		GCWait:             130 * time.Second,
		Concurrency:        4,
		ConnectConcurrency: 64,
		Senders:            16,
		TextSize:           64,
		Prefix:             "lg" + hex.EncodeToString(b[:]),
	}
}

// Limits on the config, beyond which a run is refused.
const (
	maxSources  = 250
	maxTextSize = 100000 - 100 // room for the stamp
	maxConns    = 1 << 20
)

var namePart = regexp.MustCompile(`^[A-Za-z0-9._-]{1,40}$`)

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("invalid config")

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	host, _, err := net.SplitHostPort(c.Server)
	if err != nil {
		return bad("--server %q: %v", c.Server, err)
	}
	ip := serverIP(host)
	if ip == nil || !ip.IsLoopback() {
		return bad("--server %q: only a loopback address is allowed", c.Server)
	}
	if c.Sources < 0 || c.Sources > maxSources {
		return bad("--sources %d: want 0..%d", c.Sources, maxSources)
	}
	if c.Sources > 0 && ip.To4() == nil {
		return bad("--sources needs an IPv4 loopback server address")
	}
	if c.Users < 1 || c.Devices < 1 || c.ConnsPerDevice < 1 {
		return bad("--users, --devices and --conns-per-device must be at least 1")
	}
	if n := c.Connections(); n > maxConns {
		return bad("%d connections: at most %d", n, maxConns)
	}
	if !namePart.MatchString(c.Prefix) {
		return bad("--prefix %q: want 1 to 40 of [A-Za-z0-9._-]", c.Prefix)
	}
	if c.Concurrency < 1 || c.ConnectConcurrency < 1 || c.Senders < 1 {
		return bad("--concurrency, --connect-concurrency and --senders must be at least 1")
	}
	if c.Duration <= 0 {
		return bad("--duration must be positive")
	}
	if c.Warmup < 0 || c.Grace < 0 || c.Settle < 0 || c.GCWait < 0 {
		return bad("--warmup, --grace, --settle and --gc-wait must not be negative")
	}
	if c.Idle {
		return nil
	}
	switch {
	case c.GroupSize == 0:
		if c.Users%2 != 0 {
			return bad("--users %d: 1-on-1 pairs need an even number", c.Users)
		}
	case c.GroupSize < 2:
		return bad("--group-size %d: want 0 (pairs) or at least 2", c.GroupSize)
	case c.Users%c.GroupSize != 0:
		return bad("--users %d is not a multiple of --group-size %d", c.Users, c.GroupSize)
	}
	if c.Rate <= 0 {
		return bad("--rate must be positive")
	}
	if c.TextSize < 1 || c.TextSize > maxTextSize {
		return bad("--text-size %d: want 1..%d", c.TextSize, maxTextSize)
	}
	return nil
}

// Connections is the number of WebSocket connections the run opens.
func (c Config) Connections() int { return c.Users * c.Devices * c.ConnsPerDevice }

// serverIP is the address host names, or nil; "localhost" is 127.0.0.1.
func serverIP(host string) net.IP {
	if host == "localhost" {
		return net.IPv4(127, 0, 0, 1)
	}
	return net.ParseIP(host)
}

// sourceIPs are the local addresses connections are dialled from: nil (the
// kernel's choice) when c.Sources is 0.
func (c Config) sourceIPs() []net.IP {
	if c.Sources == 0 {
		return []net.IP{nil}
	}
	ips := make([]net.IP, c.Sources)
	for i := range ips {
		ips[i] = net.IPv4(127, 0, 0, byte(2+i))
	}
	return ips
}
