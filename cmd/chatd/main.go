// Command chatd runs the chat backend. With no flags it runs everything in
// one process on its embedded default: an in-process Kafka-protocol broker
// and a Pebble store under ./data, every projection, the WebSocket gateway
// and the REST API on 127.0.0.1:8080. With --kafka and --cassandra it runs
// against real servers. --roles runs only some roles (the gateway, or some
// projections), so one deployment can run gateways and projection workers
// apart. The node itself is cmd/internal/node; this command parses flags
// and runs the operators' subcommands (replay, verify).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	chatnode "github.com/evchat/evchat/cmd/internal/node" // harness_test.go has a type node
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "chatd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "replay" || args[0] == "verify") {
		return opsCommand(ctx, args[0], args[1:], stdout, stderr)
	}
	cfg, err := parseConfig(args, stderr, os.Getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg.Stdout = stdout
	n, err := chatnode.New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// parseConfig turns chatd's flags into a node's Config: its usage and
// errors go to stderr, and so does the node's log (a text handler at
// --log-level). getenv reads the environment (os.Getenv; the tests pass
// their own): EVCHAT_KAFKA and EVCHAT_CASSANDRA are the defaults of --kafka
// and --cassandra, EVCHAT_SECRET the token secret. -h returns
// flag.ErrHelp. The end-to-end tests start their in-process nodes with it,
// so that a node in the test process and a chatd process read the same
// argument list the same way.
func parseConfig(args []string, stderr io.Writer, getenv func(string) string) (chatnode.Config, error) {
	fs := flag.NewFlagSet("chatd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := chatnode.DefaultConfig()
	fs.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "address of the REST API and WebSocket gateway")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "directory of the embedded broker, the embedded store and the token secret")
	kafka := fs.String("kafka", getenv("EVCHAT_KAFKA"), "comma-separated Kafka brokers; empty runs the embedded broker (env EVCHAT_KAFKA)")
	cass := fs.String("cassandra", getenv("EVCHAT_CASSANDRA"), "comma-separated Cassandra hosts; empty uses the embedded store (env EVCHAT_CASSANDRA)")
	fs.StringVar(&cfg.Keyspace, "keyspace", cfg.Keyspace, "Cassandra keyspace")
	fs.StringVar(&cfg.TopicPrefix, "topic-prefix", cfg.TopicPrefix, "prefix of every topic name")
	fs.IntVar(&cfg.Partitions, "partitions", cfg.Partitions, "partitions of each topic created at start; 0: 8 on Kafka, 2 on the embedded broker")
	fs.IntVar(&cfg.MachineID, "machine-id", cfg.MachineID, "sonyflake machine id, 0 to 65535: unique per process of a deployment")
	roles := fs.String("roles", "all", "comma-separated roles this process runs, or all:\n"+rolesHelp())
	fs.BoolVar(&cfg.EmbeddedFsync, "embedded-fsync", cfg.EmbeddedFsync, "fsync every batch of the embedded broker before acknowledging it (survives power loss; ~5x fewer appends/s; off still survives kill -9)")
	fs.DurationVar(&cfg.EmbeddedSyncInterval, "embedded-sync-interval", cfg.EmbeddedSyncInterval, "without --embedded-fsync, fsync the embedded broker's changed files this often in the background (bounds what a power loss takes; 0: leave it to the OS)")
	fs.IntVar(&cfg.EmbeddedKafkaPort, "embedded-kafka-port", cfg.EmbeddedKafkaPort, "port of the embedded broker (0: any free port)")
	fs.DurationVar(&cfg.PresenceWindow, "presence-window", cfg.PresenceWindow, "a device is online this long after its last heartbeat")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "how often the gateway records each connected device's heartbeat")
	fs.DurationVar(&cfg.ChannelLease, "channel-lease", cfg.ChannelLease, "how long a gateway checks sends against a channel's state it read, without reading it again; a member's removal is answered that long after it is stored (the same on every process; 0: every send reads its channel)")
	fs.DurationVar(&cfg.PushDelay, "push-delay", cfg.PushDelay, "how long a push notification waits for a device to acknowledge the message")
	fs.IntVar(&cfg.SendsWorkers, "sends-workers", cfg.SendsWorkers, "sends processors the sends role runs in this process (at most --partitions are used), whose store reads and commits overlap: more than 1 helps on Cassandra")
	fs.DurationVar(&cfg.PushMaxAge, "push-max-age", cfg.PushMaxAge, "entries older than this when they come up for a push decision are dropped")
	fs.Int64Var(&cfg.StoreCache, "store-cache", cfg.StoreCache, "bytes of the embedded store's block cache (Pebble)")
	fs.DurationVar(&cfg.StoreSyncInterval, "store-sync-interval", cfg.StoreSyncInterval, "the embedded store fsyncs history's messages, the inbox's entries and send decisions within this, not each batch (a crash replays them from the log)")
	fs.Int64Var(&cfg.BodyCache, "body-cache", cfg.BodyCache, "bytes of recent messages' texts kept to resolve inbox entries (which point at their message)")
	fs.DurationVar(&cfg.BodyWait, "body-wait", cfg.BodyWait, "how long a sync or push waits, while history does not move, for it to store a message an inbox entry points at")
	fs.StringVar(&cfg.PushWebhook, "push-webhook", cfg.PushWebhook, "URL that receives push notifications as FCM-shaped JSON; empty logs them")
	fs.DurationVar(&cfg.ClockSkew, "clock-skew", cfg.ClockSkew, "testing: shift this process's message-id clock")
	fs.StringVar(&cfg.AdminAddr, "admin", cfg.AdminAddr, "address of the operators' endpoints (replay, verify, pprof); empty: off")
	fs.StringVar(&cfg.AdminTokenFile, "admin-token-file", cfg.AdminTokenFile, "file of the admin address's bearer token, made (0600) on first start (default <data>/admin.token)")
	adminHosts := fs.String("admin-hosts", "", "comma-separated Host names the admin address answers besides loopback and localhost")
	fs.Int64Var(&cfg.ReadyLag, "ready-lag", cfg.ReadyLag, "GET /readyz answers 503 while a projection is more records behind than this")
	fs.IntVar(&cfg.WSQueueFrames, "ws-queue-frames", cfg.WSQueueFrames, "most frames queued for one WebSocket connection")
	fs.IntVar(&cfg.WSQueueBytes, "ws-queue-bytes", cfg.WSQueueBytes, "most bytes queued for one WebSocket connection; a client whose queue overflows is closed with 4008")
	fs.IntVar(&cfg.WSMaxPerUser, "ws-max-per-user", cfg.WSMaxPerUser, "most WebSocket connections of one user on this gateway (429 past it)")
	fs.IntVar(&cfg.WSMaxPerDevice, "ws-max-per-device", cfg.WSMaxPerDevice, "most WebSocket connections of one device on this gateway (429 past it)")
	fs.DurationVar(&cfg.WSPingInterval, "ws-ping", cfg.WSPingInterval, "how often the gateway pings each WebSocket connection")
	fs.DurationVar(&cfg.WSPongTimeout, "ws-pong-timeout", cfg.WSPongTimeout, "a connection silent for the ping interval plus this is closed with 4009")
	fs.Float64Var(&cfg.SendRate, "send-rate", cfg.SendRate, "sends per second per user (token bucket)")
	fs.IntVar(&cfg.SendBurst, "send-burst", cfg.SendBurst, "sends one user may make at once")
	fs.Float64Var(&cfg.SendBytesRate, "send-bytes-rate", cfg.SendBytesRate, "bytes of message text per second per user (token bucket)")
	fs.IntVar(&cfg.SendBytesBurst, "send-bytes-burst", cfg.SendBytesBurst, "bytes of message text one user may send at once (at least the largest message)")
	fs.Float64Var(&cfg.ChannelRate, "channel-rate", cfg.ChannelRate, "channel creations per second per user (token bucket)")
	fs.IntVar(&cfg.ChannelBurst, "channel-burst", cfg.ChannelBurst, "channel creations one user may make at once")
	fs.Float64Var(&cfg.MemberAddRate, "member-add-rate", cfg.MemberAddRate, "members added per second per user, at creation or after (token bucket)")
	fs.IntVar(&cfg.MemberAddBurst, "member-add-burst", cfg.MemberAddBurst, "members one user may add at once (at least the largest group)")
	fs.IntVar(&cfg.Limits.MaxGroupSize, "max-group-size", cfg.Limits.MaxGroupSize, "most members of a group")
	fs.IntVar(&cfg.Limits.MaxTextLen, "max-text-len", cfg.Limits.MaxTextLen, "most characters in a message, at most 100000")
	fs.IntVar(&cfg.MaxHTTPConns, "max-http-conns", cfg.MaxHTTPConns, "plain HTTP connections held at once (WebSockets not counted); past it 503 busy")
	fs.IntVar(&cfg.FDReserve, "fd-reserve", cfg.FDReserve, "open files kept from connections for the log, the store and the admin address")
	fs.DurationVar(&cfg.HTTPHeaderTimeout, "http-header-timeout", cfg.HTTPHeaderTimeout, "time to read a request's headers")
	fs.DurationVar(&cfg.HTTPReadTimeout, "http-read-timeout", cfg.HTTPReadTimeout, "time to read a whole request, body included (not WebSockets)")
	fs.DurationVar(&cfg.HTTPWriteTimeout, "http-write-timeout", cfg.HTTPWriteTimeout, "time from a request's headers to the end of its answer (not WebSockets)")
	fs.DurationVar(&cfg.HTTPIdleTimeout, "http-idle-timeout", cfg.HTTPIdleTimeout, "a keep-alive connection with no request is closed after this")
	fs.Int64Var(&cfg.MaxBody, "max-body", cfg.MaxBody, "bytes of any request body; larger is 413 too_long")
	fs.IntVar(&cfg.PasswordWorkers, "password-workers", cfg.PasswordWorkers, "password hashes at once, ~19 MiB each (0: GOMAXPROCS)")
	fs.IntVar(&cfg.PasswordQueue, "password-queue", cfg.PasswordQueue, "sign-ups and logins waiting for a password worker; past it 503 busy")
	fs.DurationVar(&cfg.PasswordWait, "password-wait", cfg.PasswordWait, "how long a sign-up or login waits for a password worker before 503 busy, below --http-write-timeout (0: a third of it)")
	fs.IntVar(&cfg.LoginFailuresPerName, "login-failures-per-name", cfg.LoginFailuresPerName, "failed logins of one name per --login-window; then 429 (0: off)")
	fs.IntVar(&cfg.LoginFailuresPerAddr, "login-failures-per-addr", cfg.LoginFailuresPerAddr, "failed logins from one address per --login-window; then 429 (0: off)")
	fs.DurationVar(&cfg.LoginWindow, "login-window", cfg.LoginWindow, "window of the login throttles")
	fs.IntVar(&cfg.RevocationCache, "revocation-cache", cfg.RevocationCache, "logged-out sessions remembered, and as many found not logged out (~200 bytes each)")
	fs.DurationVar(&cfg.RevocationRecheck, "revocation-recheck", cfg.RevocationRecheck, "how long a session found not logged out is trusted: a logout on another node is refused here within this")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.Kafka = splitList(*kafka)
	cfg.Cassandra = splitList(*cass)
	cfg.AdminHosts = splitList(*adminHosts)
	if *roles != "all" {
		cfg.Roles = splitList(*roles)
		if len(cfg.Roles) == 0 {
			return cfg, fmt.Errorf("--roles: empty; the roles are %s, or all", strings.Join(chatnode.RoleNames(), ", "))
		}
	}
	cfg.Secret = getenv("EVCHAT_SECRET")
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return cfg, fmt.Errorf("--log-level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	return cfg, nil
}

// rolesHelp lists Table's roles, one a line.
func rolesHelp() string {
	var b strings.Builder
	for _, r := range chatnode.Table {
		fmt.Fprintf(&b, "  %s: %s\n", r.Name, r.Doc)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// opsCommand runs "chatd replay" or "chatd verify" against a running node's
// admin address.
func opsCommand(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chatd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", "127.0.0.1:8081", "the node's --admin address")
	tokenFile := fs.String("admin-token-file", "data/admin.token", "the node's admin token file (<its --data>/admin.token unless it was given --admin-token-file)")
	projection := fs.String("projection", "", "replay: "+strings.Join(chatnode.RoleNames(chatnode.Replayable), ", ")+
		"; verify: "+strings.Join(chatnode.RoleNames(chatnode.Verifiable), ", "))
	from := "start"
	if name == "replay" {
		fs.StringVar(&from, "from", from, "start (delete the state and rebuild), offset:N, or time:RFC3339")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *projection == "" {
		return fmt.Errorf("%s: --projection is required", name)
	}
	b, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("the admin token: %w (give the node's file with --admin-token-file)", err)
	}
	adm := adminClient{addr: *addr, token: strings.TrimSpace(string(b))}
	out := newPrinter(stdout)
	if name == "replay" {
		return replayCmd(ctx, adm, *projection, from, out)
	}
	return verifyCmd(adm, *projection, out)
}
