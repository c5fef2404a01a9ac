package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/auth"
	"github.com/evchat/evchat/gateway/chat"
	"github.com/evchat/evchat/projections/bodies"
)

// Config is everything a node needs. Every default is in DefaultConfig;
// only cmd/ reads flags and the environment. Each field names the chatd
// flag it maps to.
type Config struct {
	// HTTPAddr (--http): the REST API and WebSocket gateway, or, on a node
	// without the gateway role, /healthz, /readyz and /metrics alone.
	// Default 127.0.0.1:8080.
	HTTPAddr string
	// DataDir (--data): the embedded broker, the embedded store and the
	// token secret. Default ./data.
	DataDir string
	// Kafka (--kafka): brokers; empty runs the embedded broker.
	Kafka []string
	// EmbeddedKafkaPort (--embedded-kafka-port): 0 takes any free port.
	// Default 0.
	EmbeddedKafkaPort int
	// EmbeddedFsync (--embedded-fsync): fsync every batch of the embedded
	// broker before acknowledging it, so an acknowledged append survives a
	// power loss too. Default false: kfake fsyncs inside its one request
	// loop, which then holds up every client (see eventlog.SyncEvery), and
	// kill -9 loses nothing without it.
	EmbeddedFsync bool
	// EmbeddedSyncInterval (--embedded-sync-interval): without
	// EmbeddedFsync, how often the embedded broker's changed files are
	// fsynced in the background, bounding what a power loss can take.
	// Default 1s; 0 leaves it to the operating system.
	EmbeddedSyncInterval time.Duration
	// Cassandra (--cassandra): hosts; empty uses the embedded store.
	Cassandra []string
	// Keyspace (--keyspace): the Cassandra keyspace. Default evchat.
	Keyspace string
	// TopicPrefix (--topic-prefix): prefix of every topic. Default chat.
	TopicPrefix string
	// Partitions (--partitions): partitions of each topic created at
	// start (topics that exist keep theirs). Zero, the default, means 8
	// on Kafka and 2 on the embedded broker: in one process partitions
	// buy no parallelism (each stage runs one batch at a time), and each
	// costs every transaction a marker and every fetch a batch of its own
	// (deploy/README.md, session 18: at 1,000 msg/s into groups of 10,
	// deliver p99 158 ms with 8, 90 ms with 2).
	Partitions int
	// MachineID (--machine-id): the sonyflake machine id, unique among
	// the running nodes of a deployment, 0 to 65,535 (sonyflake keeps 16
	// bits: a larger one would wrap and give two nodes the same ids).
	// Default 1.
	MachineID int
	// Roles (--roles): the roles this process runs, by their names in
	// Table; empty runs them all. Default all.
	Roles []string
	// Secret (env EVCHAT_SECRET): the token secret; empty uses
	// <DataDir>/secret.key, made on first start.
	Secret string
	// Limits: message size, group size and the other bounds. Default
	// domain.DefaultLimits().
	Limits domain.Limits
	// PresenceWindow (--presence-window): a device is online this long
	// after its last heartbeat. Default domain.DefaultPresenceWindow (30 s).
	PresenceWindow time.Duration
	// Heartbeat (--heartbeat): how often the gateway records each
	// connected device's heartbeat. Default 5 s; below PresenceWindow.
	Heartbeat time.Duration
	// PushDelay (--push-delay): how long a push notification waits for a
	// device to acknowledge the message. Default 3 s.
	PushDelay time.Duration
	// ChannelLease (--channel-lease): how long a gateway checks sends
	// against a channel's state it read, without reading it again; a
	// member's removal is answered that long after it is stored
	// (gateway/chat, lease.go). Every process of a deployment must use the
	// same value. Default chat.DefaultChannelLease (1 s); 0: every send
	// reads its channel.
	ChannelLease time.Duration
	// PushMaxAge (--push-max-age): entries older than this when they come
	// up for a push decision are dropped. Default 2 min.
	PushMaxAge time.Duration
	// SendsWorkers (--sends-workers): how many sends processors the
	// sends role runs in this process, each a member of the sends group
	// with its own transaction, so that one's store reads and commit
	// overlap another's (on Cassandra, where a batch's reads and writes
	// take tens of milliseconds). More than the partitions of the sends
	// topic run as many as it has. Default 1: a node stopped while its
	// workers' group is still balancing (just after it started) waited
	// for the group's rebalance timeout (60 s) on the embedded broker,
	// since static members do not leave the group when they close.
	SendsWorkers int
	// PushWebhook (--push-webhook): URL that receives notifications as
	// FCM-shaped JSON; empty logs them. Default empty.
	PushWebhook string
	// StoreCache (--store-cache): bytes of the embedded store's block
	// cache (Pebble). Default 256 MiB.
	StoreCache int64
	// StoreSyncInterval (--store-sync-interval): the embedded store
	// writes history's messages, the inbox's entries and send decisions
	// without an fsync of their own (a crash replays them from the log)
	// and fsyncs them within this. Default 1 s.
	StoreSyncInterval time.Duration
	// BodyCache (--body-cache): bytes of recent messages' texts kept to
	// resolve inbox entries, which point at their message instead of
	// copying it (package bodies). Default 64 MiB.
	BodyCache int64
	// BodyWait (--body-wait): how long a sync and push wait for history
	// to store a message an inbox entry points at while history makes no
	// progress (its position does not move), before the sync fails (the
	// device syncs again) or the push batch is retried. Live delivery
	// waits at most ws.LiveTextWait (5 s), then catches the connection up
	// from the store. Default 2 min.
	BodyWait time.Duration
	// ClockSkew (--clock-skew): testing only, shifts the message-id
	// clock. Default 0.
	ClockSkew time.Duration
	// AdminAddr (--admin): the operators' endpoints (replay, verify,
	// pprof); empty: off. Default empty.
	AdminAddr string
	// AdminTokenFile (--admin-token-file): the file holding the bearer
	// token every request to the admin address must carry; made with a
	// random token (0600) on first start when missing. Default
	// <DataDir>/admin.token.
	AdminTokenFile string
	// AdminHosts (--admin-hosts): Host names the admin address answers
	// besides loopback addresses, localhost and its own listening host;
	// any other Host is refused (403), against DNS rebinding. Default
	// none.
	AdminHosts []string
	// ReadyLag (--ready-lag): GET /readyz answers 503 while a projection
	// is more records behind than this. Default 1000.
	ReadyLag int64
	// WebSocket limits, per connection, per user and per device (README,
	// "Limits").
	//
	// WSQueueFrames (--ws-queue-frames) and WSQueueBytes
	// (--ws-queue-bytes): a connection's send queue, in frames and in
	// bytes. Live delivery stops at half of either and the device catches
	// up from the store at its pace; a queue that overflows anyway closes
	// the connection with 4008. Defaults 1024 and 2 MiB.
	WSQueueFrames, WSQueueBytes int
	// WSMaxPerUser (--ws-max-per-user) and WSMaxPerDevice
	// (--ws-max-per-device): open WebSocket connections of one user, of
	// one device, on this gateway; past either an upgrade gets 429
	// too_many_connections. Defaults 32 and 8.
	WSMaxPerUser, WSMaxPerDevice int
	// WSPingInterval (--ws-ping): how often the server pings. Default 25 s.
	WSPingInterval time.Duration
	// WSPongTimeout (--ws-pong-timeout): a connection from which nothing,
	// not even a pong, has come for WSPingInterval + WSPongTimeout is
	// closed with 4009. Default 30 s.
	WSPongTimeout time.Duration
	// SendRate (--send-rate, per second) and SendBurst (--send-burst):
	// the per-user bucket of sends; SendBytesRate (--send-bytes-rate,
	// bytes of text per second) and SendBytesBurst (--send-bytes-burst),
	// at least the largest message (4 bytes a character). A send over
	// either gets an error frame rate_limited with retry_after_ms.
	// Defaults 20/s, 100, 1 MiB/s, 4 MiB.
	SendRate       float64
	SendBurst      int
	SendBytesRate  float64
	SendBytesBurst int
	// ChannelRate (--channel-rate, per second) and ChannelBurst
	// (--channel-burst): the per-user bucket of channel creations;
	// MemberAddRate (--member-add-rate) and MemberAddBurst
	// (--member-add-burst, at least the largest group): of members added,
	// each member named at a creation counting as one. Over either, 429
	// rate_limited with Retry-After. Defaults 0.2/s, 20, 2/s, 200.
	ChannelRate    float64
	ChannelBurst   int
	MemberAddRate  float64
	MemberAddBurst int

	// MaxHTTPConns (--max-http-conns): plain HTTP connections held at
	// once (an upgraded WebSocket no longer counts); past it, and past
	// the descriptors left for connections (see FDReserve), a connection
	// is answered 503 busy and closed. At most half of those descriptors.
	// Default 1024.
	MaxHTTPConns int
	// FDReserve (--fd-reserve): open files kept out of the connections'
	// reach, for the log (the embedded broker's both ends), the store's
	// files, the admin address and outgoing clients. The connections
	// (plain HTTP and WebSocket) share the open-files limit less this.
	// Default 1024.
	FDReserve int
	// HTTPHeaderTimeout (--http-header-timeout): to read a request's
	// headers. Default 10 s.
	HTTPHeaderTimeout time.Duration
	// HTTPReadTimeout (--http-read-timeout): to read a whole request,
	// body included. Default 30 s.
	HTTPReadTimeout time.Duration
	// HTTPWriteTimeout (--http-write-timeout): from the end of a
	// request's headers to the end of its answer. Default 30 s.
	// WebSockets are exempt from all three: their connection has its own
	// bounds (gateway/ws).
	HTTPWriteTimeout time.Duration
	// HTTPIdleTimeout (--http-idle-timeout): a keep-alive connection
	// with no request is closed after this. Default 60 s.
	HTTPIdleTimeout time.Duration
	// MaxBody (--max-body): bytes of any request body; larger is 413
	// too_long. Default 64 KiB.
	MaxBody int64
	// PasswordWorkers (--password-workers): password hashes run at once
	// (each holds ~19 MiB). 0: GOMAXPROCS. Default 0.
	PasswordWorkers int
	// PasswordQueue (--password-queue): sign-ups and logins waiting for a
	// worker; past it 503 busy with Retry-After. Default 64.
	PasswordQueue int
	// PasswordWait (--password-wait): how long a sign-up or login waits
	// for a password worker before it is refused with 503 busy; below
	// HTTPWriteTimeout, so the client hears why. Default 0: a third of
	// HTTPWriteTimeout (10 s with its default).
	PasswordWait time.Duration
	// LoginFailuresPerName (--login-failures-per-name): failed logins of
	// one user name in a LoginWindow; then 429 rate_limited until the
	// window ends. 0: off. Default 10.
	LoginFailuresPerName int
	// LoginFailuresPerAddr (--login-failures-per-addr): failed logins
	// from one source address in a LoginWindow. 0: off. Default 100.
	LoginFailuresPerAddr int
	// LoginWindow (--login-window): the throttles' window. Default 5 min.
	LoginWindow time.Duration
	// RevocationCache (--revocation-cache): logged-out sessions the
	// gateway remembers, and as many found not logged out, least recently
	// used out first (auth.Revocations). Default 50,000.
	RevocationCache int
	// RevocationRecheck (--revocation-recheck): how long a session found
	// not logged out is trusted before the store is read again, so a
	// logout on another node is refused here within it (this node's own
	// logouts at once). Default 1s; at most 1 min.
	RevocationRecheck time.Duration
	// Logger: default discards.
	Logger *slog.Logger
	// Stdout receives the "listening" line. Default io.Discard.
	Stdout io.Writer
}

// DefaultConfig returns the configuration of `chatd` with no flags: every
// role, the embedded broker and store under ./data, http on 127.0.0.1:8080.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:             "127.0.0.1:8080",
		DataDir:              "data",
		EmbeddedSyncInterval: time.Second,
		Keyspace:             "evchat",
		TopicPrefix:          "chat",
		MachineID:            1,
		Limits:               domain.DefaultLimits(),
		PresenceWindow:       domain.DefaultPresenceWindow,
		Heartbeat:            5 * time.Second,
		PushDelay:            3 * time.Second,
		ChannelLease:         chat.DefaultChannelLease,
		PushMaxAge:           2 * time.Minute,
		SendsWorkers:         1,
		StoreCache:           256 << 20,
		StoreSyncInterval:    time.Second,
		BodyCache:            bodies.DefaultCacheBytes,
		BodyWait:             bodies.DefaultWait,
		ReadyLag:             1000,
		WSQueueFrames:        1024,
		WSQueueBytes:         2 << 20,
		WSMaxPerUser:         32,
		WSMaxPerDevice:       8,
		WSPingInterval:       25 * time.Second,
		WSPongTimeout:        30 * time.Second,
		SendRate:             20,
		SendBurst:            100,
		SendBytesRate:        1 << 20,
		SendBytesBurst:       4 << 20,
		ChannelRate:          0.2,
		ChannelBurst:         20,
		MemberAddRate:        2,
		MemberAddBurst:       200,

		MaxHTTPConns:         1024,
		FDReserve:            1024,
		HTTPHeaderTimeout:    10 * time.Second,
		HTTPReadTimeout:      30 * time.Second,
		HTTPWriteTimeout:     30 * time.Second,
		HTTPIdleTimeout:      60 * time.Second,
		MaxBody:              64 << 10,
		PasswordQueue:        64,
		LoginFailuresPerName: 10,
		LoginFailuresPerAddr: 100,
		LoginWindow:          5 * time.Minute,
		RevocationCache:      auth.DefaultRevocationEntries,
		RevocationRecheck:    auth.DefaultRevocationRecheck,
	}
}

// ErrConfig is wrapped by every error of Validate.
var ErrConfig = errors.New("node: invalid config")

// Validate refuses a configuration that cannot work or would do harm.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if c.MachineID < 0 || c.MachineID > math.MaxUint16 {
		return bad("machine id %d: want 0 to 65535 (sonyflake keeps 16 bits; a larger id wraps onto another node's)", c.MachineID)
	}
	if err := c.Limits.Validate(); err != nil {
		return bad("%v", err)
	}
	if c.EmbeddedSyncInterval < 0 {
		return bad("embedded sync interval %s: want 0 or more", c.EmbeddedSyncInterval)
	}
	if c.Partitions < 0 || c.Partitions > math.MaxInt32 {
		return bad("partitions %d: want 1 or more, or 0 for the backend's default", c.Partitions)
	}
	if c.HTTPAddr == "" {
		return bad("no HTTP address")
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return bad("HTTP address %q: %v", c.HTTPAddr, err)
	}
	if c.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			return bad("admin address %q: %v", c.AdminAddr, err)
		}
		if c.AdminTokenFile == "" && c.DataDir == "" {
			return bad("an admin address without a token file or a data directory to keep one in")
		}
	}
	if c.DataDir == "" && (len(c.Kafka) == 0 || len(c.Cassandra) == 0 || c.Secret == "") {
		return bad("no data directory (the embedded broker, the embedded store or the token secret need one)")
	}
	if c.EmbeddedKafkaPort < 0 || c.EmbeddedKafkaPort > math.MaxUint16 {
		return bad("embedded Kafka port %d: want 0 to 65535", c.EmbeddedKafkaPort)
	}
	if len(c.Cassandra) > 0 && c.Keyspace == "" {
		return bad("no Cassandra keyspace")
	}
	if c.TopicPrefix == "" || strings.ContainsAny(c.TopicPrefix, " /\\") {
		return bad("topic prefix %q: want a non-empty name without spaces or slashes", c.TopicPrefix)
	}
	if c.PresenceWindow <= 0 {
		return bad("presence window %s: want more than 0", c.PresenceWindow)
	}
	if c.Heartbeat <= 0 || c.Heartbeat >= c.PresenceWindow {
		return bad("heartbeat %s: want more than 0 and less than the presence window %s (else online devices flap)", c.Heartbeat, c.PresenceWindow)
	}
	if c.ChannelLease < 0 {
		return bad("channel lease %s < 0", c.ChannelLease)
	}
	if c.PushDelay < 0 {
		return bad("push delay %s < 0", c.PushDelay)
	}
	if c.PushMaxAge <= c.PushDelay {
		return bad("push max age %s: want more than the push delay %s (else every notification is dropped)", c.PushMaxAge, c.PushDelay)
	}
	if c.SendsWorkers < 1 {
		return bad("sends workers %d: want at least 1", c.SendsWorkers)
	}
	if c.StoreSyncInterval <= 0 {
		return bad("store sync interval %s: want more than 0", c.StoreSyncInterval)
	}
	if c.StoreCache < 8<<20 {
		return bad("store cache of %d bytes: want at least 8 MiB", c.StoreCache)
	}
	if c.BodyCache < 1<<20 {
		return bad("body cache of %d bytes: want at least 1 MiB (a message is up to 400 KB)", c.BodyCache)
	}
	if c.BodyWait <= 0 {
		return bad("body wait %s: want more than 0", c.BodyWait)
	}
	if c.Secret != "" && len(c.Secret) < auth.MinSecretLen {
		return bad("a token secret of %d bytes: want at least %d", len(c.Secret), auth.MinSecretLen)
	}
	if c.ReadyLag < 0 {
		return bad("ready lag %d < 0", c.ReadyLag)
	}
	if c.WSQueueFrames < 2 || c.WSQueueBytes < 64<<10 {
		return bad("WebSocket send queue of %d frames and %d bytes: want at least 2 frames and 64 KiB", c.WSQueueFrames, c.WSQueueBytes)
	}
	if c.WSMaxPerUser < 1 || c.WSMaxPerDevice < 1 || c.WSMaxPerDevice > c.WSMaxPerUser {
		return bad("WebSocket connections per user %d, per device %d: want 1 or more, per device at most per user", c.WSMaxPerUser, c.WSMaxPerDevice)
	}
	if c.WSPingInterval <= 0 || c.WSPongTimeout <= 0 {
		return bad("WebSocket ping interval %s, pong timeout %s: want more than 0", c.WSPingInterval, c.WSPongTimeout)
	}
	if c.SendRate <= 0 || c.SendBurst < 1 || c.SendBytesRate <= 0 || c.ChannelRate <= 0 || c.ChannelBurst < 1 || c.MemberAddRate <= 0 {
		return bad("send rate %g burst %d, bytes rate %g, channel rate %g burst %d, member-add rate %g: want more than 0",
			c.SendRate, c.SendBurst, c.SendBytesRate, c.ChannelRate, c.ChannelBurst, c.MemberAddRate)
	}
	if most := 4 * c.Limits.MaxTextLen; c.SendBytesBurst < most {
		return bad("send bytes burst %d: want at least %d, the largest message (4 bytes a character), else it can never be sent", c.SendBytesBurst, most)
	}
	if c.MemberAddBurst < c.Limits.MaxGroupSize {
		return bad("member-add burst %d: want at least the largest group, %d", c.MemberAddBurst, c.Limits.MaxGroupSize)
	}
	if c.MaxHTTPConns < 1 {
		return bad("max HTTP connections %d: want at least 1", c.MaxHTTPConns)
	}
	if c.FDReserve < 64 {
		return bad("descriptor reserve %d: want at least 64 (the log, the store and the admin address need them)", c.FDReserve)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"header", c.HTTPHeaderTimeout}, {"read", c.HTTPReadTimeout}, {"write", c.HTTPWriteTimeout}, {"idle", c.HTTPIdleTimeout}} {
		if d.d <= 0 {
			return bad("HTTP %s timeout %s: want more than 0 (else a slow client holds its connection for ever)", d.name, d.d)
		}
	}
	if c.MaxBody < 1024 {
		return bad("max body %d bytes: want at least 1024", c.MaxBody)
	}
	if c.PasswordWait < 0 || c.PasswordWait >= c.HTTPWriteTimeout {
		return bad("password wait %s: want 0 (a third of the HTTP write timeout) or less than the HTTP write timeout (%s), or a waiting login's connection closes without an answer", c.PasswordWait, c.HTTPWriteTimeout)
	}
	if c.PasswordWorkers < 0 || c.PasswordQueue < 1 {
		return bad("password workers %d and queue %d: want workers ≥ 0 (0: GOMAXPROCS) and queue ≥ 1", c.PasswordWorkers, c.PasswordQueue)
	}
	if c.LoginFailuresPerName < 0 || c.LoginFailuresPerAddr < 0 {
		return bad("login failures per name %d, per address %d: want ≥ 0 (0: off)", c.LoginFailuresPerName, c.LoginFailuresPerAddr)
	}
	if (c.LoginFailuresPerName > 0 || c.LoginFailuresPerAddr > 0) && c.LoginWindow <= 0 {
		return bad("login window %s: want more than 0", c.LoginWindow)
	}
	if c.RevocationCache < 1 || c.RevocationRecheck <= 0 || c.RevocationRecheck > time.Minute {
		return bad("revocation cache of %d entries, recheck %s: want at least 1 entry and a recheck above 0, at most 1m (the time a logout on another node may be missed here)", c.RevocationCache, c.RevocationRecheck)
	}
	if _, err := selectRoles(c.Roles); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// ErrUnknownRole is wrapped by the error of a role name not in Table.
var ErrUnknownRole = errors.New("unknown role")

// selectRoles returns the roles of names (all of Table when names is
// empty), in Table's order.
func selectRoles(names []string) ([]*Role, error) {
	if len(names) == 0 {
		return slices.Clone(Table), nil
	}
	var out []*Role
	for _, name := range names {
		r := RoleNamed(name)
		if r == nil {
			return nil, fmt.Errorf("%w %q: the roles are %s", ErrUnknownRole, name, strings.Join(RoleNames(), ", "))
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *Role) int { return slices.Index(Table, a) - slices.Index(Table, b) })
	return out, nil
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitionsEmbedded
		if len(c.Kafka) > 0 {
			c.Partitions = DefaultPartitionsKafka
		}
	}
	return c
}

// Default partitions of each topic created at start, by backend (see
// Config.Partitions; withDefaults picks one).
const (
	DefaultPartitionsKafka    = 8
	DefaultPartitionsEmbedded = 2
)
