package node

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/gateway/api"
	"github.com/evchat/evchat/gateway/auth"
	"github.com/evchat/evchat/gateway/chat"
	"github.com/evchat/evchat/gateway/replies"
	"github.com/evchat/evchat/gateway/throttle"
	"github.com/evchat/evchat/gateway/ws"
	"github.com/evchat/evchat/projections/bodies"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/inbox"
	"github.com/evchat/evchat/projections/push"
	"github.com/evchat/evchat/projections/sends"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/cassandra"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// Names of the node's tasks that are not roles of Table (goroutine labels
// in logs and errors).
const (
	taskHTTP         = "http"
	taskAdmin        = "admin"
	taskReplay       = "replay"
	taskEpochs       = "epochs"
	taskTailer       = "tailer" // per inbox epoch: tailer.eN
	taskPresenceTail = "presence-tail"
	taskHeartbeats   = "heartbeats"
	taskLogouts      = "logouts"
	taskReplies      = "replies"
)

// Node is one chatd process: the roles of its Config, over the log and the
// store. Its roles of an output's epoch run as eventlog.Epoched(role,
// epoch):
//
//   - inbox epoch E: fanout.eE (writes chat.inbox.eE), inbox.eE (stores
//     it), push.eE and tailer.eE (read it). The inbox projections of older
//     epochs keep running (idle once their topic no longer grows), so that
//     the store holds every entry of theirs: a device that comes back with
//     a position of an older epoch is carried over.
//   - presence epoch P: presence.eP (writes chat.presence.eP); the
//     presence tail reads it.
//
// A rebuild (chatd replay fanout|presence) starts the next epoch's writers
// beside the current ones; when they have caught up, epoch.started goes on
// the epochs topic, and every node (this one too) switches in onEpoch.
type Node struct {
	cfg   Config
	roles []*Role // those this node runs, in Table's order
	log   *slog.Logger

	ready     chan struct{}
	httpAddr  string // set before ready is closed
	adminAddr string

	// Built by Run.
	st           store.Store
	instance     string
	hub          *ws.Hub
	gw           *ws.Server
	presenceTail *ws.Presence
	logouts      *ws.Logouts     // closes the devices that log out on any node
	replies      *replies.Reader // the sends processor's answers to this node's sends
	sender       push.Sender
	pushOutcomes *prometheus.CounterVec
	sendsMended  prometheus.Counter
	texts        *bodies.Resolver // resolves inbox entries' texts for the tailers and push
	decoded      *inbox.Decoded   // inbox records decoded once for the tailers, inbox and push
	tasks        *tasks
	wsCap        int    // WebSockets this process may hold (0: no cap)
	adminToken   string // set before ready is closed

	mu     sync.Mutex
	logCfg eventlog.Config // with the current epochs
}

// New returns a node of cfg, or the error of cfg.Validate.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	roles, _ := selectRoles(cfg.Roles)
	return &Node{cfg: cfg, roles: roles, log: cfg.Logger, ready: make(chan struct{})}, nil
}

// Ready is closed once the node serves: its HTTP address answers.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// HTTPAddr is the address the node's HTTP server listens on, once Ready.
func (n *Node) HTTPAddr() string { return n.httpAddr }

// AdminToken is the bearer token of the operators' address, once Ready.
func (n *Node) AdminToken() string { return n.adminToken }

// AdminAddr is the operators' address, once Ready; empty when off.
func (n *Node) AdminAddr() string { return n.adminAddr }

// runs reports whether the node runs the role of name.
func (n *Node) runs(name string) bool {
	return slices.ContainsFunc(n.roles, func(r *Role) bool { return r.Name == name })
}

// current returns the log's config with the current epochs.
func (n *Node) current() eventlog.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logCfg
}

// Run runs the node until ctx ends or a role fails, then stops every role
// (each within its own bound; the HTTP servers within 10 s) and returns:
// nil on a clean cancel, else the first failure.
func (n *Node) Run(ctx context.Context) error {
	cfg, log := n.cfg, n.log
	plainCap, wsCap, connCap, err := connectionCaps(openFilesLimit(), cfg.FDReserve, cfg.MaxHTTPConns)
	if err != nil {
		return err
	}
	n.wsCap = wsCap
	// The data directory holds the token secret and every message: its
	// user's alone, however it was made before.
	restrictFiles()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return err
	}
	if cfg.AdminAddr != "" {
		// Before anything reports ready: an operator (or a test) that sees
		// /readyz answer finds the token in its file.
		if n.adminToken, err = loadAdminToken(cfg); err != nil {
			return err
		}
	}
	brokers := cfg.Kafka
	brokerOK := func() error { return nil }
	var dial func(ctx context.Context, network, addr string) (net.Conn, error) // TCP
	var emb *eventlog.Embedded
	if len(brokers) == 0 {
		// Its goroutines carry the label task=embedded-broker in profiles.
		pprof.Do(ctx, pprof.Labels("task", "embedded-broker"), func(context.Context) {
			emb, err = eventlog.StartEmbedded(filepath.Join(cfg.DataDir, "log"), cfg.EmbeddedKafkaPort, cfg.EmbeddedFsync)
			if err == nil && !cfg.EmbeddedFsync {
				emb.SyncEvery(cfg.EmbeddedSyncInterval)
			}
		})
		if err != nil {
			return err
		}
		defer emb.Close()
		brokerOK = emb.Healthy
		brokers = emb.Addrs()
		if !cfg.EmbeddedFsync {
			// In memory. With an fsync per batch the broker's loop is
			// what limits, and over TCP its clients' batches are larger:
			// fewer fsyncs (BenchmarkEmbeddedAppend: 26,000 to 43,000
			// appends/s over TCP, 14,000 to 18,000 in memory).
			dial = emb.Dial
		}
		log.Info("embedded broker", "addr", strings.Join(brokers, ","), "aborted_open_txns", emb.AbortedAtStart(), "committed_open_txns", emb.CommittedAtStart(), "repaired_segment_indexes", emb.RepairedAtStart())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	lag := eventlog.NewLag(reg)
	if emb != nil {
		for transport, memory := range map[string]bool{"memory": true, "tcp": false} {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "evchat_embedded_broker_connections_total",
				Help:        "Connections the embedded broker accepted: in memory from this process's clients, over TCP from others.",
				ConstLabels: prometheus.Labels{"transport": transport},
			}, func() float64 {
				mem, tcp := emb.Connections()
				if memory {
					return float64(mem)
				}
				return float64(tcp)
			}))
		}
	}
	logCfg := eventlog.Config{Brokers: brokers, Prefix: cfg.TopicPrefix, Partitions: int32(cfg.Partitions), Logger: log, Lag: lag, Dial: dial}
	startCtx, cancelStart := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelStart()
	if err := eventlog.EnsureTopics(startCtx, logCfg); err != nil {
		return err
	}
	// The current epochs of the inbox and of presence (a rebuild made
	// their topics before it started them).
	logCfg, err = eventlog.ReadEpochs(startCtx, logCfg)
	if err != nil {
		return err
	}
	n.logCfg = logCfg
	inboxEpochs, _, err := eventlog.ExistingEpochs(startCtx, logCfg)
	if err != nil {
		return err
	}

	if len(cfg.Cassandra) == 0 {
		ps, err := pebblestore.Open(filepath.Join(cfg.DataDir, "store"), pebblestore.Options{Logger: log, CacheSize: cfg.StoreCache, SyncInterval: cfg.StoreSyncInterval})
		if err != nil {
			return err
		}
		n.st = ps
	} else {
		cs, err := cassandra.Open(startCtx, cassandra.Config{Hosts: cfg.Cassandra, Keyspace: cfg.Keyspace})
		if err != nil {
			return err
		}
		if err := cs.Migrate(startCtx); err != nil {
			cs.Close()
			return err
		}
		n.st = cs
	}
	defer n.st.Close()
	n.st = store.NewMetered(n.st, reg)
	n.instance = fmt.Sprint(cfg.MachineID)
	n.hub = ws.NewHub()
	if n.texts, err = bodies.New(bodies.Config{CacheBytes: cfg.BodyCache, Wait: cfg.BodyWait}, n.st); err != nil {
		return err
	}
	n.decoded = inbox.NewDecoded()
	reg.MustRegister(statCounter("evchat_inbox_decodes_total", "Inbox records decoded, by whether another reader in the process had decoded them (shared) or not (decoded).",
		"result", "shared", "decoded", n.decoded.Stats))
	reg.MustRegister(statCounter("evchat_message_text_lookups_total", "Texts of inbox entries found in the cache of recent messages (cache), and reads of history's messages in the store, a range or one (store).",
		"from", "cache", "store", n.texts.Stats))
	n.sender = push.LogSender{Logger: log}
	n.pushOutcomes = push.NewOutcomes(reg)
	n.sendsMended = sends.NewMended(reg)
	if cfg.PushWebhook != "" {
		n.sender = push.WebhookSender{URL: cfg.PushWebhook}
	}

	gateway := n.runs(GatewayRole)
	var (
		tailer  *ws.Tailer
		handler http.Handler
	)
	ready := new(atomic.Bool)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	limited := newConnLimiter(ln, plainCap, connCap)
	readyz := func() (bool, string) {
		if err := brokerOK(); err != nil {
			return false, err.Error()
		}
		if limited.failedWithin(acceptFailWindow, time.Now()) {
			return false, "the HTTP listener could not accept a connection lately (too many open files?)"
		}
		if l := lag.Max(); l > cfg.ReadyLag {
			return false, fmt.Sprintf("a projection is %d records behind (bound %d)", l, cfg.ReadyLag)
		}
		return true, ""
	}
	// Push asks the presence tail who is online; the gateway serves it.
	if gateway || n.runs(push.Name) {
		n.presenceTail = ws.NewPresence(logCfg, n.hub, n.st, cfg.Limits.MaxGroupSize, log)
	}
	if gateway {
		app, t, h, err := n.buildGateway(startCtx, logCfg, reg, ready, readyz)
		if err != nil {
			return err
		}
		defer app.Close()
		tailer, handler = t, h
	} else {
		handler = healthOnly(ready, readyz)
	}
	defer ln.Close() // if a step below fails before serve takes it
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", handler)
	srv := &http.Server{
		Handler: mux, ConnState: limited.connState, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ReadHeaderTimeout: cfg.HTTPHeaderTimeout, ReadTimeout: cfg.HTTPReadTimeout,
		WriteTimeout: cfg.HTTPWriteTimeout, IdleTimeout: cfg.HTTPIdleTimeout,
	}
	log.Info("connection limits", "open_files", openFilesLimit(), "reserve", cfg.FDReserve, "http", plainCap, "websocket", wsCap)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	n.tasks = newTasks(ctx, cancel, log)
	n.startRoles(tailer, inboxEpochs)
	n.tasks.start(taskHTTP, func(ctx context.Context) error {
		if gateway {
			defer func() {
				sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer scancel()
				_ = n.gw.Shutdown(sctx)
			}()
		}
		return serve(ctx, srv, limited)
	})
	n.httpAddr = ln.Addr().String()
	ready.Store(true)
	fmt.Fprintf(cfg.Stdout, "chatd listening on http://%s (data in %s)\n", ln.Addr(), cfg.DataDir)
	log.Info("ready", "http", ln.Addr().String(), "roles", strings.Join(RoleNamesOf(n.roles), ","), "kafka", strings.Join(brokers, ","),
		"store", storeName(cfg), "inbox_epoch", logCfg.Epoch(), "presence_epoch", eventlog.EpochOf(logCfg, domain.OutputPresence))
	if cfg.AdminAddr != "" {
		acl, err := kgo.NewClient(logCfg.ClientOpts()...)
		if err == nil {
			defer acl.Close() // after every task, the admin's too, has ended
		}
		aln, lerr := net.Listen("tcp", cfg.AdminAddr)
		if lerr == nil && err != nil {
			aln.Close()
		}
		if err = cmp.Or(err, lerr); err != nil {
			cancel(err)
		} else {
			host, _, _ := net.SplitHostPort(aln.Addr().String())
			adm := &admin{kadm: kadm.NewClient(acl), node: n, limits: cfg.Limits, logger: log,
				token: n.adminToken, hosts: append(slices.Clip(cfg.AdminHosts), host)}
			asrv := &http.Server{Handler: adm.handler(), ReadHeaderTimeout: 10 * time.Second}
			n.tasks.start(taskAdmin, func(ctx context.Context) error { return serve(ctx, asrv, aln) })
			n.adminAddr = aln.Addr().String()
			log.Info("admin", "addr", n.adminAddr)
		}
	}
	close(n.ready)
	<-ctx.Done()
	n.tasks.wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// buildGateway makes the gateway's parts: the appender, the chat service,
// the inbox tailer, the WebSocket server and the REST API.
func (n *Node) buildGateway(ctx context.Context, logCfg eventlog.Config, reg *prometheus.Registry, ready *atomic.Bool,
	readyz func() (bool, string)) (*eventlog.Appender, *ws.Tailer, http.Handler, error) {
	cfg := n.cfg
	secret, err := loadSecret(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	tokens, err := auth.NewTokens(secret, 0)
	if err != nil {
		return nil, nil, nil, err
	}
	ids, err := chat.NewSonyflake(uint16(cfg.MachineID), cfg.ClockSkew) // Validate: it fits
	if err != nil {
		return nil, nil, nil, err
	}
	// kprom registers its collectors per client: it instruments the
	// appender, the client every send goes through.
	app, err := eventlog.NewAppender(logCfg, kgo.WithHooks(kprom.NewMetrics("evchat_kafka", kprom.Registerer(reg), kprom.Subsystem("appender"),
		kprom.FetchAndProduceDetail(kprom.ByTopic, kprom.Records, kprom.Batches))))
	if err != nil {
		return nil, nil, nil, err
	}
	passwords, err := auth.NewPasswords(auth.PasswordsConfig{Workers: cfg.PasswordWorkers, Queue: cfg.PasswordQueue, MaxWait: cmp.Or(cfg.PasswordWait, cfg.HTTPWriteTimeout/3)})
	if err != nil {
		app.Close()
		return nil, nil, nil, err
	}
	// Logouts go through the revocation cache, so this node refuses a
	// logged-out token at once; authenticated requests ask the cache.
	revocations, err := auth.NewRevocations(n.st, auth.RevocationsConfig{Entries: cfg.RevocationCache, Recheck: cfg.RevocationRecheck})
	if err != nil {
		app.Close()
		return nil, nil, nil, err
	}
	// The answers to this node's sends come to its machine id's address.
	if n.replies, err = replies.New(ctx, logCfg, uint16(cfg.MachineID), n.log); err != nil {
		app.Close()
		return nil, nil, nil, err
	}
	svc, err := chat.New(chat.Config{
		Limits: cfg.Limits, Topics: logCfg.Topics(), Logger: n.log, Passwords: passwords, Texts: n.texts, Replies: n.replies,
		ChannelLease: cmp.Or(cfg.ChannelLease, -1), // the node's 0 is none; chat's is its default
	}, revokingStore{n.st, revocations}, app, ids, tokens)
	if err != nil {
		app.Close()
		return nil, nil, nil, err
	}
	tailer, err := ws.NewTailer(ctx, logCfg, n.st, n.hub, n.texts, n.decoded, n.log)
	if err != nil {
		app.Close()
		return nil, nil, nil, err
	}
	n.gw = ws.NewServer(ws.Config{
		Logger: n.log, Metrics: ws.NewMetrics(reg, n.hub.Count),
		Heartbeat: cfg.Heartbeat, SessionsTopic: logCfg.Topics().Sessions, Sessions: revocations, MaxConnections: n.wsCap,
		QueueSize: cfg.WSQueueFrames, QueueBytes: cfg.WSQueueBytes,
		MaxPerUser: cfg.WSMaxPerUser, MaxPerDevice: cfg.WSMaxPerDevice,
		PingInterval: cfg.WSPingInterval, PongTimeout: cfg.WSPongTimeout,
		Sends:     throttle.New(throttle.Rule{PerSecond: cfg.SendRate, Burst: cfg.SendBurst}),
		SendBytes: throttle.New(throttle.Rule{PerSecond: cfg.SendBytesRate, Burst: cfg.SendBytesBurst}),
	}, n.hub, tailer, svc, n.st, app)
	if n.logouts, err = ws.NewLogouts(ctx, logCfg, logoutCloser{revocations, n.gw}, n.log); err != nil {
		app.Close()
		return nil, nil, nil, err
	}
	restErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "evchat_http_errors_total", Help: "REST error responses, by code.",
	}, []string{"code"})
	reg.MustRegister(restErrors)
	e := api.New(api.Config{
		Service: svc, Reader: n.st, Tokens: tokens, Sessions: revocations, WS: n.gw, Presence: n.presenceTail, Errors: restErrors,
		Live: ready.Load, Ready: readyz, MaxBody: cfg.MaxBody,
		LoginsByName: auth.NewThrottle(auth.ThrottleConfig{Limit: cfg.LoginFailuresPerName, Window: cfg.LoginWindow}),
		LoginsByAddr: auth.NewThrottle(auth.ThrottleConfig{Limit: cfg.LoginFailuresPerAddr, Window: cfg.LoginWindow}),
		Channels:     throttle.New(throttle.Rule{PerSecond: cfg.ChannelRate, Burst: cfg.ChannelBurst}),
		MemberAdds:   throttle.New(throttle.Rule{PerSecond: cfg.MemberAddRate, Burst: cfg.MemberAddBurst}),
	})
	return app, tailer, e, nil
}

// revokingStore is the store with its revocations through the cache.
type revokingStore struct {
	store.Store
	rev *auth.Revocations
}

func (s revokingStore) RevokeSession(ctx context.Context, u domain.UserID, sid string, expires time.Time) error {
	return s.rev.RevokeSession(ctx, u, sid, expires)
}

func (s revokingStore) SessionRevoked(ctx context.Context, u domain.UserID, sid string) (bool, error) {
	return s.rev.SessionRevoked(ctx, u, sid)
}

// logoutCloser acts on a device.logged_out read from the log: the cache
// forgets the user's sessions it found not revoked, so a reconnect is
// checked against the store, then the device's connections are closed.
type logoutCloser struct {
	rev *auth.Revocations
	gw  *ws.Server
}

func (l logoutCloser) CloseDevice(u domain.UserID, d domain.DeviceID, why string) {
	l.rev.Forget(u)
	l.gw.CloseDevice(u, d, why)
}

// statCounter exports a pair of running counts as one counter with a label
// of two values.
func statCounter(name, help, label, a, b string, stats func() (int64, int64)) prometheus.Collector {
	return &pairCounter{desc: prometheus.NewDesc(name, help, []string{label}, nil), a: a, b: b, stats: stats}
}

type pairCounter struct {
	desc  *prometheus.Desc
	a, b  string
	stats func() (int64, int64)
}

func (c *pairCounter) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *pairCounter) Collect(ch chan<- prometheus.Metric) {
	x, y := c.stats()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(x), c.a)
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(y), c.b)
}

// healthOnly serves /healthz and /readyz on a node without the gateway.
func healthOnly(live *atomic.Bool, readyz func() (bool, string)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !live.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := readyz(); !ok || !live.Load() {
			http.Error(w, cmp.Or(why, "starting"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// RoleNamesOf returns the names of roles.
func RoleNamesOf(roles []*Role) []string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = r.Name
	}
	return out
}

// startRoles starts every role of this node in the current epochs, the
// inbox projections of the older inbox epochs (olderInboxes), the
// gateway's parts, and the watcher of the epochs topic.
func (n *Node) startRoles(tailer *ws.Tailer, olderInboxes []int32) {
	lc := n.current()
	for _, r := range n.roles {
		if r.run == nil {
			continue
		}
		n.tasks.start(r.task(lc), r.run(n, lc, true))
		if r.OldEpochsRun && r.Output == domain.OutputInbox {
			for _, o := range olderInboxes {
				if old := lc.WithEpoch(r.Output, o); o < lc.Epoch() {
					n.tasks.start(r.task(old), r.run(n, old, false))
				}
			}
		}
	}
	if n.presenceTail != nil {
		n.tasks.start(taskPresenceTail, n.presenceTail.Run)
	}
	if tailer != nil {
		n.tasks.start(eventlog.Epoched(taskTailer, lc.Epoch()), tailer.Run)
		n.tasks.start(taskHeartbeats, n.gw.RunHeartbeats)
		n.tasks.start(taskLogouts, n.logouts.Run)
		n.tasks.start(taskReplies, n.replies.Run)
	}
	n.tasks.start(taskEpochs, func(ctx context.Context) error { return eventlog.WatchEpochs(ctx, lc, n.onEpoch) })
}

// acceptFailWindow is how long /readyz fails after a listener could not
// accept a connection: a listener short of descriptors fails every time
// a connection waits, so it stays unready while the shortage lasts.
const acceptFailWindow = 5 * time.Second

// serve serves srv on ln until ctx ends, then shuts it down within 10 s.
func serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func storeName(cfg Config) string {
	if len(cfg.Cassandra) > 0 {
		return "cassandra " + strings.Join(cfg.Cassandra, ",")
	}
	return "pebble " + filepath.Join(cfg.DataDir, "store")
}

// loadSecret returns the token secret: cfg.Secret, or the one in
// <data>/secret.key, made on first start.
func loadSecret(cfg Config) ([]byte, error) {
	if cfg.Secret != "" {
		return []byte(cfg.Secret), nil
	}
	path := filepath.Join(cfg.DataDir, "secret.key")
	b, err := os.ReadFile(path)
	if err == nil {
		return hex.DecodeString(strings.TrimSpace(string(b)))
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return secret, os.WriteFile(path, []byte(hex.EncodeToString(secret)+"\n"), 0o600)
}

// AdminTokenPath is where the admin token of cfg is kept.
func AdminTokenPath(cfg Config) string {
	return cmp.Or(cfg.AdminTokenFile, filepath.Join(cfg.DataDir, "admin.token"))
}

// loadAdminToken returns the admin token in AdminTokenPath, made (0600)
// on first start.
func loadAdminToken(cfg Config) (string, error) {
	path := AdminTokenPath(cfg)
	b, err := os.ReadFile(path)
	if err == nil {
		if tok := strings.TrimSpace(string(b)); len(tok) >= 16 {
			return tok, nil
		}
		return "", fmt.Errorf("%w: the admin token in %s is shorter than 16 characters", ErrConfig, path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(raw)
	return tok, os.WriteFile(path, []byte(tok+"\n"), 0o600)
}
