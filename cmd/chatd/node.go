package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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
	"github.com/evchat/evchat/gateway/ws"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/push"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/cassandra"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// config is everything a node needs; only main reads flags and the
// environment.
type config struct {
	HTTPAddr          string   // default 127.0.0.1:8080
	DataDir           string   // default ./data
	Kafka             []string // empty: embedded broker
	EmbeddedKafkaPort int      // default 0: any free port
	EmbeddedFsync     bool     // default true: fsync every batch of the embedded broker
	Cassandra         []string // empty: embedded store
	Keyspace          string   // default evchat
	TopicPrefix       string   // default chat
	Partitions        int32    // default 8
	MachineID         uint16   // default 1
	Secret            string   // token secret; default: <data>/secret.key
	Limits            domain.Limits
	PresenceWindow    time.Duration // default 30s
	Heartbeat         time.Duration // default 5s
	PushDelay         time.Duration // default 3s
	PushWebhook       string        // default "": log notifications
	PushMaxAge        time.Duration // default 2m
	ClockSkew         time.Duration // default 0; testing only
	AdminAddr         string        // default "": no admin listener
	ReadyLag          int64         // default 1000: /readyz bound on projection lag
	Logger            *slog.Logger
	Stdout            io.Writer
}

func defaultConfig() config {
	return config{
		EmbeddedFsync: true, HTTPAddr: "127.0.0.1:8080", DataDir: "data", Keyspace: "evchat", TopicPrefix: "chat",
		Partitions: 8, MachineID: 1, Limits: domain.DefaultLimits(),
		ReadyLag: 1000, PresenceWindow: domain.DefaultPresenceWindow, Heartbeat: 5 * time.Second, PushDelay: 3 * time.Second,
	}
}

// runNode runs every role in this process until ctx ends. Goroutines: one
// per projection (history, inbox, fan-out), the inbox tailer, and the HTTP
// server; runNode starts them all and waits for every one before it returns.
func runNode(ctx context.Context, cfg config) error {
	log := cfg.Logger
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return err
	}
	brokers := cfg.Kafka
	if len(brokers) == 0 {
		emb, err := eventlog.StartEmbedded(filepath.Join(cfg.DataDir, "log"), cfg.EmbeddedKafkaPort, cfg.EmbeddedFsync)
		if err != nil {
			return err
		}
		defer emb.Close()
		brokers = emb.Addrs()
		log.Info("embedded broker", "addr", strings.Join(brokers, ","), "aborted_open_txns", emb.AbortedAtStart(), "repaired_segment_indexes", emb.RepairedAtStart())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	lag := eventlog.NewLag(reg)
	logCfg := eventlog.Config{Brokers: brokers, Prefix: cfg.TopicPrefix, Partitions: cfg.Partitions, Logger: log, Lag: lag}
	startCtx, cancelStart := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelStart()
	if err := eventlog.EnsureTopics(startCtx, logCfg); err != nil {
		return err
	}
	// The current epochs of the inbox and of presence (a rebuild made
	// their topics before it started them).
	logCfg, err := eventlog.ReadEpochs(startCtx, logCfg)
	if err != nil {
		return err
	}
	inboxEpochs, _, err := eventlog.ExistingEpochs(startCtx, logCfg)
	if err != nil {
		return err
	}

	var st store.Store
	if len(cfg.Cassandra) == 0 {
		ps, err := pebblestore.Open(filepath.Join(cfg.DataDir, "store"), pebblestore.Options{Logger: log})
		if err != nil {
			return err
		}
		st = ps
	} else {
		cs, err := cassandra.Open(startCtx, cassandra.Config{Hosts: cfg.Cassandra, Keyspace: cfg.Keyspace})
		if err != nil {
			return err
		}
		if err := cs.Migrate(startCtx); err != nil {
			cs.Close()
			return err
		}
		st = cs
	}
	defer st.Close()
	st = store.NewMetered(st, reg)

	secret, err := loadSecret(cfg)
	if err != nil {
		return err
	}
	tokens, err := auth.NewTokens(secret, 0)
	if err != nil {
		return err
	}
	ids, err := chat.NewSonyflake(cfg.MachineID, cfg.ClockSkew)
	if err != nil {
		return err
	}
	// kprom registers its collectors per client: it instruments the
	// appender, the client every send goes through.
	app, err := eventlog.NewAppender(logCfg, kgo.WithHooks(kprom.NewMetrics("evchat_kafka", kprom.Registerer(reg), kprom.Subsystem("appender"),
		kprom.FetchAndProduceDetail(kprom.ByTopic, kprom.Records, kprom.Batches))))
	if err != nil {
		return err
	}
	defer app.Close()
	// The service's attempts carry the machine id and a boot id of this
	// process: after a restart, resends of what the dead process was
	// sending take over at once.
	svc, err := chat.New(chat.Config{
		Limits: cfg.Limits, Topics: logCfg.Topics(), Logger: log,
		Node: cfg.MachineID, DeliveryTimeout: logCfg.DeliveryTimeout,
	}, st, app, ids, tokens)
	if err != nil {
		return err
	}
	n := &proc{cfg: cfg, log: log, logCfg: logCfg, st: st, instance: fmt.Sprint(cfg.MachineID), hub: ws.NewHub()}
	tailer, err := ws.NewTailer(startCtx, logCfg, st, n.hub, log)
	if err != nil {
		return err
	}
	n.gw = ws.NewServer(ws.Config{
		Logger: log, Metrics: ws.NewMetrics(reg, n.hub.Count),
		Heartbeat: cfg.Heartbeat, SessionsTopic: logCfg.Topics().Sessions, MaxConnections: connectionLimit(),
	}, n.hub, tailer, svc, st, app)
	n.presenceTail = ws.NewPresence(logCfg, n.hub, st, cfg.Limits.MaxGroupSize, log)
	n.sender = push.LogSender{Logger: log}
	if cfg.PushWebhook != "" {
		n.sender = push.WebhookSender{URL: cfg.PushWebhook}
	}

	var ready atomic.Bool
	restErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "evchat_http_errors_total", Help: "REST error responses, by code.",
	}, []string{"code"})
	reg.MustRegister(restErrors)
	e := api.New(api.Config{
		Service: svc, Reader: st, Tokens: tokens, WS: n.gw, Presence: n.presenceTail, Errors: restErrors,
		Live: ready.Load,
		Ready: func() (bool, string) {
			if l := lag.Max(); l > cfg.ReadyLag {
				return false, fmt.Sprintf("a projection is %d records behind (bound %d)", l, cfg.ReadyLag)
			}
			return true, ""
		},
	})
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", e)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	n.roles = newRoles(ctx, cancel, log)
	n.startRoles(tailer, inboxEpochs)
	n.roles.start("http", func(ctx context.Context) error {
		defer func() {
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			_ = n.gw.Shutdown(sctx)
		}()
		return serve(ctx, srv, ln)
	})
	ready.Store(true)
	fmt.Fprintf(cfg.Stdout, "chatd listening on http://%s (data in %s)\n", ln.Addr(), cfg.DataDir)
	log.Info("ready", "http", ln.Addr().String(), "kafka", strings.Join(brokers, ","), "store", storeName(cfg),
		"inbox_epoch", logCfg.Epoch(), "presence_epoch", eventlog.EpochOf(logCfg, domain.OutputPresence))
	if cfg.AdminAddr != "" {
		acl, err := kgo.NewClient(logCfg.ClientOpts()...)
		if err == nil {
			defer acl.Close() // after every role, the admin's too, has ended
		}
		aln, lerr := net.Listen("tcp", cfg.AdminAddr)
		if lerr == nil && err != nil {
			aln.Close()
		}
		if err = cmp.Or(err, lerr); err != nil {
			cancel(err)
		} else {
			adm := &admin{kadm: kadm.NewClient(acl), node: n, limits: cfg.Limits, logger: log}
			asrv := &http.Server{Handler: adm.handler(), ReadHeaderTimeout: 10 * time.Second}
			n.roles.start("admin", func(ctx context.Context) error { return serve(ctx, asrv, aln) })
			log.Info("admin", "addr", aln.Addr().String())
		}
	}
	<-ctx.Done()
	n.roles.wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

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

func storeName(cfg config) string {
	if len(cfg.Cassandra) > 0 {
		return "cassandra " + strings.Join(cfg.Cassandra, ",")
	}
	return "pebble " + filepath.Join(cfg.DataDir, "store")
}

// loadSecret returns the token secret: EVCHAT_SECRET, or the one in
// <data>/secret.key, made on first start.
func loadSecret(cfg config) ([]byte, error) {
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
