package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/gorilla/websocket"

	"github.com/twmb/franz-go/pkg/kgo"

	chatnode "github.com/evchat/evchat/cmd/internal/node"
	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/schemas"
)

// The end-to-end tests drive chatd only over HTTP and WebSocket. A node
// runs in the test's process by default (startNode: the same argument
// list, parsed by chatd's own parseConfig, and node.Run in a goroutine),
// and as a child process of the chatd binary, built once by TestMain,
// where a test needs a process: kill -9 (kill), an open-files limit
// (startChildLimited), the process's own memory or descriptors (pid), or
// several processes of one deployment (startPeer). They run on the
// embedded default, and again on real Kafka and Cassandra when
// EVCHAT_KAFKA and EVCHAT_CASSANDRA name them (deploy/servers.sh start).

var chatdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatd-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	chatdBin = filepath.Join(dir, "chatd")
	args := []string{"build", "-o", chatdBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building chatd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// backend says which log and store a node runs on.
type backend struct {
	name      string
	kafka     string // "" = embedded
	cassandra string // "" = embedded
}

// backends returns the embedded default, and the real servers when named.
func backends(t testing.TB) []backend {
	bs := []backend{{name: "embedded"}}
	k, c := os.Getenv("EVCHAT_KAFKA"), os.Getenv("EVCHAT_CASSANDRA")
	switch {
	case k != "" && c != "":
		bs = append(bs, backend{name: "kafka+cassandra", kafka: k, cassandra: c})
	case os.Getenv("CI") != "":
		t.Fatal("CI must run the end-to-end suite on real Kafka and Cassandra: EVCHAT_KAFKA and EVCHAT_CASSANDRA are unset")
	}
	return bs
}

// eachBackend runs fn once per backend.
func eachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

// node is one chatd node of a test and what it takes to restart it: in
// the test's process, or a child process (child). Everything a test reads
// from a node (its HTTP and admin addresses, its data directory and admin
// token file, its log) is the same in both.
type node struct {
	t         testing.TB
	b         backend
	dir       string
	http      string
	kafkaPort int
	prefix    string
	keyspace  string
	extra     []string // more flags
	machine   int      // --machine-id; 0 means 1
	admin     string   // --admin address
	child     bool     // a child process of chatdBin, not a node in this process
	nofile    int      // a child's open-files limit (prlimit); 0: inherited
	logs      *logBuffer
	r         *running // the current run, replaced by each start
}

// running is one run of a node, from start to its end.
type running struct {
	done  chan struct{} // closed once the run has ended
	err   error         // set before done is closed: a child's exit, or what Run returned
	ended atomic.Bool   // the test ended it (stop, kill): it did not exit by itself
	// A child.
	cmd *exec.Cmd
	// In this process.
	cancel context.CancelFunc
	label  string // the value of nodeLabel on every goroutine of this run
}

// testSecret is every test node's token secret (EVCHAT_SECRET).
const testSecret = "e2e-secret-e2e-secret-e2e-secret-e2e!"

// nodeLabel is the profiler label on every goroutine an in-process node
// starts (goroutines inherit their creator's labels): those left after
// Run returned are leaks.
const nodeLabel = "evchat_test_node"

var runs atomic.Int64 // in-process runs, to make labels unique

// testEnv is the environment an in-process node's flags read, in place of
// os.Getenv: the secret alone, as a child gets it, and no EVCHAT_KAFKA or
// EVCHAT_CASSANDRA (the harness names the backend in flags).
func testEnv(key string) string {
	if key == "EVCHAT_SECRET" {
		return testSecret
	}
	return ""
}

// freePort returns a port that was free a moment ago, below the
// ephemeral range (32768 and up on Linux) from which the kernel picks the
// local ports of outgoing connections: a port from that range can be taken
// by any client connection before chatd binds it.
func freePort(t testing.TB) int {
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if _, taken := portsTaken.LoadOrStore(port, true); taken {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port in 20000-32000")
	return 0
}

// portsTaken are the ports freePort has handed out in this process.
var portsTaken sync.Map

// startNode starts a node in the test's process.
func startNode(t testing.TB, b backend, extra ...string) *node {
	t.Helper()
	return newNode(t, b, false, 0, extra...)
}

// startChild starts a node as a child process: for a test that kills it
// with SIGKILL, or reads the process's memory or descriptors.
func startChild(t testing.TB, b backend, extra ...string) *node {
	t.Helper()
	return newNode(t, b, true, 0, extra...)
}

// startChildLimited starts a node as a child process under an open-files
// limit (prlimit), which is the process's own.
func startChildLimited(t testing.TB, b backend, nofile int, extra ...string) *node {
	t.Helper()
	if nofile <= 0 {
		t.Fatalf("startChildLimited: open-files limit %d", nofile)
	}
	return newNode(t, b, true, nofile, extra...)
}

func newNode(t testing.TB, b backend, child bool, nofile int, extra ...string) *node {
	t.Helper()
	suffix := fmt.Sprintf("%d", rand.Uint64()%1e12)
	n := &node{
		t: t, b: b, dir: t.TempDir(),
		http:      fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		kafkaPort: freePort(t),
		prefix:    "t" + suffix,
		keyspace:  "e2e_" + suffix,
		extra:     extra,
		admin:     fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		child:     child,
		nofile:    nofile,
	}
	t.Cleanup(n.dropKeyspace)
	t.Cleanup(n.stop)
	n.start()
	return n
}

// dropKeyspace removes the test's Cassandra keyspace after the node has
// stopped: each holds some twenty tables, and a single test node's heap is
// small.
func (n *node) dropKeyspace() {
	if n.b.cassandra == "" {
		return
	}
	cluster := gocql.NewCluster(strings.Split(n.b.cassandra, ",")...)
	cluster.Timeout = 30 * time.Second
	s, err := cluster.CreateSession()
	if err != nil {
		n.t.Logf("drop keyspace %s: %v", n.keyspace, err)
		return
	}
	defer s.Close()
	if err := s.Query("DROP KEYSPACE IF EXISTS " + n.keyspace).Exec(); err != nil {
		n.t.Logf("drop keyspace %s: %v", n.keyspace, err)
	}
}

// startPeer starts a second process of the same deployment as n (same
// topics, same store), with its own HTTP address and machine id: always a
// child, so that the deployment has processes of its own. It needs the
// real servers: the embedded broker and store belong to one process.
func startPeer(t *testing.T, n *node, machine int, extra ...string) *node {
	t.Helper()
	p := &node{
		t: t, b: n.b, dir: t.TempDir(), http: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		kafkaPort: freePort(t), prefix: n.prefix, keyspace: n.keyspace, extra: extra, machine: machine,
		admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)), child: true,
	}
	t.Cleanup(p.stop)
	p.start()
	return p
}

func (n *node) brokers() []string {
	if n.b.kafka != "" {
		return strings.Split(n.b.kafka, ",")
	}
	return []string{fmt.Sprintf("127.0.0.1:%d", n.kafkaPort)}
}

// args is the node's chatd command line, the same in both modes.
func (n *node) args() []string {
	args := []string{
		"--http", n.http, "--data", n.dir, "--topic-prefix", n.prefix,
		"--embedded-kafka-port", fmt.Sprint(n.kafkaPort), "--partitions", "4", "--log-level", cmp.Or(os.Getenv("EVCHAT_TEST_LOG"), "warn"),
		"--kafka", n.b.kafka, "--cassandra", n.b.cassandra, "--keyspace", n.keyspace,
		"--machine-id", fmt.Sprint(max(n.machine, 1)), "--admin", n.admin,
	}
	return append(args, n.extra...)
}

// start runs the node and waits until it answers /healthz.
func (n *node) start() {
	t := n.t
	t.Helper()
	n.logs = &logBuffer{}
	if n.child {
		n.r = n.startProcess()
	} else {
		n.r = n.startInProcess()
	}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-n.r.done:
			n.r.ended.Store(true)
			t.Fatalf("chatd at %s ended at start: %v\n%s", n.http, n.r.err, n.logs)
		default:
		}
		resp, err := http.Get("http://" + n.http + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("chatd at %s not healthy after 90s: %s", n.http, n.logs)
}

// startProcess starts chatdBin with the node's arguments.
func (n *node) startProcess() *running {
	args := n.args()
	cmd := exec.Command(chatdBin, args...)
	if n.nofile > 0 {
		cmd = exec.Command("prlimit", append([]string{fmt.Sprintf("--nofile=%d:%d", n.nofile, n.nofile), chatdBin}, args...)...)
	}
	cmd.Stderr = n.logs
	cmd.Stdout = io.Discard
	cmd.Env = append(os.Environ(), "EVCHAT_SECRET="+testSecret)
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	r := &running{done: make(chan struct{}), cmd: cmd}
	go func() { r.err = cmd.Wait(); close(r.done) }()
	return r
}

// startInProcess parses the node's arguments as chatd does and runs the
// node in a goroutine the run owns, its log in n.logs, every goroutine it
// starts labelled with the run.
func (n *node) startInProcess() *running {
	n.t.Helper()
	cfg, err := parseConfig(n.args(), n.logs, testEnv)
	if err != nil {
		n.t.Fatalf("chatd %s: %v", strings.Join(n.args(), " "), err)
	}
	nd, err := chatnode.New(cfg)
	if err != nil {
		n.t.Fatalf("node.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan struct{}), cancel: cancel, label: fmt.Sprintf("%s#%d", n.http, runs.Add(1))}
	go pprof.Do(ctx, pprof.Labels(nodeLabel, r.label), func(ctx context.Context) {
		defer close(r.done)
		r.err = nd.Run(ctx)
	})
	return r
}

// pid is the node's process id: only a child has a process of its own.
func (n *node) pid() int {
	n.t.Helper()
	if !n.child {
		n.t.Fatalf("pid of the in-process node at %s: start it with startChild", n.http)
	}
	return n.r.cmd.Process.Pid
}

// kill stops the child process with SIGKILL: nothing is flushed. An
// in-process node cannot be killed so: the test fails.
func (n *node) kill() {
	n.t.Helper()
	if !n.child {
		n.t.Fatalf("kill -9 of the in-process node at %s: start it with startChild", n.http)
	}
	n.r.ended.Store(true)
	_ = n.r.cmd.Process.Signal(syscall.SIGKILL)
	<-n.r.done
}

// stop stops the node and checks it ends cleanly: a child on SIGTERM with
// exit code 0; in this process, Run returns nil once its context is
// cancelled, within a bound, and leaves no goroutine behind. A node that
// ended by itself fails the test.
func (n *node) stop() {
	r := n.r
	if r == nil || r.ended.Swap(true) {
		return
	}
	select {
	case <-r.done:
		n.t.Errorf("chatd at %s ended by itself: %v", n.http, r.err)
		n.t.Logf("chatd log:\n%s", n.logs)
		return
	default:
	}
	if n.t.Failed() {
		n.dumpGoroutines("stop")
	}
	if n.child {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
	} else {
		r.cancel()
	}
	select {
	case <-r.done:
		if r.err != nil {
			n.t.Errorf("chatd at %s ended with %v, want a clean stop: %s", n.http, r.err, n.logs)
		}
		if !n.child {
			n.checkGoroutinesEnded(r)
		}
	case <-time.After(60 * time.Second):
		n.dumpGoroutines("stop-timeout")
		n.t.Errorf("chatd at %s did not stop within 60s", n.http)
		if n.child {
			_ = r.cmd.Process.Signal(syscall.SIGKILL)
			<-r.done
		}
	}
	if n.t.Failed() {
		n.t.Logf("chatd log:\n%s", n.logs)
	}
}

// checkGoroutinesEnded fails the test unless every goroutine the run
// started has ended within 30 s of Run's return (a closed client's last
// goroutines may take a moment), naming those left.
func (n *node) checkGoroutinesEnded(r *running) {
	var left []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if left = labelledGoroutines(nodeLabel, r.label); len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	n.t.Errorf("chatd at %s left %d goroutine stacks running after Run returned:\n%s", n.http, len(left), strings.Join(left, "\n\n"))
}

// labelledGoroutines returns the stacks of this process's goroutines that
// carry the profiler label key=value, as the goroutine profile prints them
// (debug=1: one entry per distinct stack, with its count).
func labelledGoroutines(key, value string) []string {
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		return []string{err.Error()}
	}
	want := strconv.Quote(key) + ":" + strconv.Quote(value)
	var out []string
	for entry := range strings.SplitSeq(b.String(), "\n\n") {
		if strings.Contains(entry, "# labels: ") && strings.Contains(entry, want) && !outlivesClose(entry) {
			out = append(out, entry)
		}
	}
	return out
}

// outlivesClose reports whether a goroutine's stack is one a library lets
// outlive its Close for a bounded time, by design: gocql handles a
// keyspace's schema event (any client's CREATE or DROP KEYSPACE, so the
// other tests') in a goroutine that waits for schema agreement for up to
// its MaxWaitSchemaAgreement (60 s), and neither the Session's close nor
// a context ends that wait.
func outlivesClose(stack string) bool {
	return strings.Contains(stack, "github.com/gocql/gocql.(*Session).handleSchemaEvent")
}

// dumpGoroutines writes the node's goroutines to a file for a post-mortem
// and names it in the test log: a child's from its admin address, an
// in-process node's with every other goroutine of the test process.
func (n *node) dumpGoroutines(tag string) {
	var b bytes.Buffer
	if n.child {
		tok, _ := os.ReadFile(filepath.Join(n.dir, "admin.token"))
		req, _ := http.NewRequest("GET", "http://"+n.admin+"/debug/pprof/goroutine?debug=2", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		_, _ = io.Copy(&b, resp.Body)
		resp.Body.Close()
	} else if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		return
	}
	path := filepath.Join(os.TempDir(), "chatd-goroutines-"+tag+"-"+strings.ReplaceAll(n.http, ":", "-")+".txt")
	if os.WriteFile(path, b.Bytes(), 0o644) == nil {
		n.t.Logf("goroutines of the node at %s: %s", n.http, path)
	}
}

// logBuffer holds a node's log: its goroutines' (or a child's stderr)
// writes, read when a test fails.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tail returns the last n lines logged: what a failure message can carry
// whole where the full log would be cut short.
func (l *logBuffer) tail(n int) string {
	lines := strings.SplitAfter(strings.TrimRight(l.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "")
}

// topicCount returns the number of records in a topic of this node.
func (n *node) topicCount(topic string) int64 {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Records, read committed: the offsets of transactional topics hold
	// commit markers too (message.sent is written in transactions).
	var total int64
	_, err := eventlog.ReadToEnd(ctx, eventlog.Config{Brokers: n.brokers(), Prefix: n.prefix}, n.prefix+"."+topic, eventlog.ReadRange{}, func(*kgo.Record) { total++ })
	if err != nil {
		n.t.Fatal(err)
	}
	return total
}

// ---- HTTP client ----

type apiError struct {
	Status int
	Code   string `json:"code"`
	Msg    string `json:"message"`
}

func (n *node) do(method, path, token string, body any, out any) apiError {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+n.http+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct{ Error apiError }
		if err := json.Unmarshal(raw, &e); err != nil || e.Error.Code == "" {
			n.t.Fatalf("%s %s: status %d with a body that is not an error: %s", method, path, resp.StatusCode, raw)
		}
		e.Error.Status = resp.StatusCode
		return e.Error
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			n.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return apiError{Status: resp.StatusCode}
}

// must fails the test unless the call succeeded.
func (n *node) must(method, path, token string, body any, out any) int {
	n.t.Helper()
	e := n.do(method, path, token, body, out)
	if e.Code != "" {
		n.t.Fatalf("%s %s: %d %s: %s", method, path, e.Status, e.Code, e.Msg)
	}
	return e.Status
}

type user struct {
	ID    string
	Name  string
	Token map[string]string // device → token
}

func (n *node) signUp(name string) *user {
	n.t.Helper()
	var r struct {
		UserID string `json:"user_id"`
	}
	n.must("POST", "/v1/users", "", map[string]string{"name": name, "password": "password-" + name}, &r)
	return &user{ID: r.UserID, Name: name, Token: map[string]string{}}
}

func (n *node) login(u *user, device string) string {
	n.t.Helper()
	var r struct {
		Token    string `json:"token"`
		DeviceID string `json:"device_id"`
	}
	n.must("POST", "/v1/login", "", map[string]string{"name": u.Name, "password": "password-" + u.Name, "device_id": device}, &r)
	if r.DeviceID != device {
		n.t.Fatalf("login: device %q, want %q", r.DeviceID, device)
	}
	u.Token[device] = r.Token
	return r.Token
}

type channelJSON struct {
	ChannelID string   `json:"channel_id"`
	Kind      string   `json:"kind"`
	Members   []string `json:"members"`
}

func (n *node) createChannel(token, kind string, members ...string) channelJSON {
	n.t.Helper()
	var c channelJSON
	n.must("POST", "/v1/channels", token, map[string]any{"kind": kind, "name": "test", "members": members}, &c)
	return c
}

type messageJSON struct {
	MessageID string `json:"message_id"`
	Seq       int64  `json:"seq"`
	Text      string `json:"text"`
	SenderID  string `json:"sender_id"`
}

type page struct {
	Messages []messageJSON `json:"messages"`
	HasMore  bool          `json:"has_more"`
}

func (n *node) history(token, channel, query string) page {
	n.t.Helper()
	var p page
	n.must("GET", "/v1/channels/"+channel+"/messages?"+query, token, nil, &p)
	return p
}

// allHistory pages backwards through a channel with the given page size.
func (n *node) allHistory(token, channel string, size int) []messageJSON {
	n.t.Helper()
	var all []messageJSON
	q := fmt.Sprintf("limit=%d", size)
	for range 10000 {
		p := n.history(token, channel, q)
		all = append(all, p.Messages...)
		if !p.HasMore {
			return all
		}
		q = fmt.Sprintf("limit=%d&before=%s", size, p.Messages[len(p.Messages)-1].MessageID)
	}
	n.t.Fatal("history does not end")
	return nil
}

// ---- WebSocket client ----

type frame struct {
	Type        string     `json:"type"`
	Epoch       *int32     `json:"epoch"`
	Position    *int64     `json:"position"`
	ChannelID   string     `json:"channel_id"`
	MessageID   string     `json:"message_id"`
	SenderID    string     `json:"sender_id"`
	Text        string     `json:"text"`
	ClientMsgID string     `json:"client_msg_id"`
	Code        string     `json:"code"`
	Message     string     `json:"message"`
	UserID      string     `json:"user_id"`
	DeviceID    string     `json:"device_id"`
	Online      *bool      `json:"online"`
	LastActive  *time.Time `json:"last_active_at"`
	// RetryAfterMS is set on an error rate_limited.
	RetryAfterMS int64 `json:"retry_after_ms"`
}

// wsClient is a test's WebSocket connection. One goroutine reads frames
// into a channel, so a test can wait for a frame with a timeout and still
// use the connection afterwards.
type wsClient struct {
	t      testing.TB
	c      *websocket.Conn
	mu     sync.Mutex
	frames chan frame
	err    error // set before frames is closed
	// patience is how long read waits for a frame; 0: 20 s.
	patience time.Duration
}

func (n *node) dial(token string, query ...string) (*wsClient, *http.Response, error) {
	u := url.URL{Scheme: "ws", Host: n.http, Path: "/v1/ws", RawQuery: "token=" + url.QueryEscape(token)}
	for _, q := range query {
		u.RawQuery += "&" + q
	}
	c, resp, err := websocket.DefaultDialer.Dial(u.String(), nil)
	if err != nil {
		return nil, resp, err
	}
	w := &wsClient{t: n.t, c: c, frames: make(chan frame, 100000)}
	go w.readLoop(nil)
	return w, resp, nil
}

// dialAsleep connects a device that reads nothing until wake is called:
// a client on a slow network, whose socket buffers fill.
func (n *node) dialAsleep(token string, query ...string) (w *wsClient, wake func()) {
	n.t.Helper()
	u := url.URL{Scheme: "ws", Host: n.http, Path: "/v1/ws", RawQuery: "token=" + url.QueryEscape(token)}
	for _, q := range query {
		u.RawQuery += "&" + q
	}
	c, _, err := websocket.DefaultDialer.Dial(u.String(), nil)
	if err != nil {
		n.t.Fatalf("dial: %v", err)
	}
	n.t.Cleanup(func() { c.Close() })
	gate := make(chan struct{})
	w = &wsClient{t: n.t, c: c, frames: make(chan frame, 100000)}
	go w.readLoop(gate)
	return w, sync.OnceFunc(func() { close(gate) })
}

func (w *wsClient) readLoop(gate <-chan struct{}) {
	defer close(w.frames)
	if gate != nil {
		<-gate
	}
	for {
		_, b, err := w.c.ReadMessage()
		if err != nil {
			w.err = err
			return
		}
		if err := schemas.ValidateServerFrame(b); err != nil {
			w.err = fmt.Errorf("server frame %s breaks schemas/frames/server.v1.json: %w", b, err)
			return
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			w.err = fmt.Errorf("frame %s: %w", b, err)
			return
		}
		w.frames <- f
	}
}

var errTimeout = errors.New("timeout")

// connect dials and reads the hello frame.
func (n *node) connect(token string) *wsClient {
	n.t.Helper()
	return n.connectQuery(token)
}

// resume connects a device that has everything up to position: it syncs
// from there before any live entry.
func (n *node) resume(token string, position int64) *wsClient {
	n.t.Helper()
	return n.connectQuery(token, "epoch=1", fmt.Sprintf("position=%d", position))
}

func (n *node) connectQuery(token string, query ...string) *wsClient {
	n.t.Helper()
	w, _, err := n.dial(token, query...)
	if err != nil {
		n.t.Fatalf("dial: %v", err)
	}
	n.t.Cleanup(func() { w.c.Close() })
	if f := w.read(); f.Type != "hello" {
		n.t.Fatalf("first frame %+v, want hello", f)
	}
	return w
}

func (w *wsClient) write(v any) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var err error
	if s, ok := v.(string); ok {
		err = w.c.WriteMessage(websocket.TextMessage, []byte(s))
	} else {
		err = w.c.WriteJSON(v)
	}
	if err != nil {
		w.t.Fatalf("ws write: %v", err)
	}
}

func (w *wsClient) read() frame {
	w.t.Helper()
	d := w.patience
	if d == 0 {
		d = 20 * time.Second
	}
	f, err := w.tryRead(d)
	if err != nil {
		w.t.Fatalf("ws read: %v", err)
	}
	return f
}

func (w *wsClient) tryRead(d time.Duration) (frame, error) {
	select {
	case f, ok := <-w.frames:
		if !ok {
			return f, w.err
		}
		return f, nil
	case <-time.After(d):
		return frame{}, errTimeout
	}
}

// readUntil reads frames until one of the type, returning the others seen.
func (w *wsClient) readUntil(typ string) (frame, []frame) {
	w.t.Helper()
	var others []frame
	for {
		f := w.read()
		if f.Type == typ {
			return f, others
		}
		others = append(others, f)
	}
}

// send sends and returns the ack or error frame. Like a real client, it
// resends with the same client message id while the answer is
// "unavailable" (a store or log that did not answer in time).
func (w *wsClient) send(channel, cmid, text string) frame {
	w.t.Helper()
	for attempt := 0; ; attempt++ {
		w.write(map[string]string{"type": "send", "channel_id": channel, "client_msg_id": cmid, "text": text})
		for {
			f := w.read()
			if f.ClientMsgID != cmid || (f.Type != "ack" && f.Type != "error") {
				continue
			}
			if f.Type == "error" && f.Code == "unavailable" && attempt < 5 {
				time.Sleep(time.Second)
				break
			}
			return f
		}
	}
}

// trySend sends once and returns the ack or error frame, or the error
// that closed the connection meanwhile.
func (w *wsClient) trySend(channel, cmid, text string) (frame, error) {
	w.mu.Lock()
	err := w.c.WriteJSON(map[string]string{"type": "send", "channel_id": channel, "client_msg_id": cmid, "text": text})
	w.mu.Unlock()
	if err != nil {
		return frame{}, err
	}
	for {
		f, err := w.tryRead(20 * time.Second)
		if err != nil {
			return f, err
		}
		if f.ClientMsgID == cmid && (f.Type == "ack" || f.Type == "error") {
			return f, nil
		}
	}
}

// messages reads until it has n message frames, ignoring acks.
func (w *wsClient) messages(n int) []frame {
	w.t.Helper()
	var out []frame
	for len(out) < n {
		f := w.read()
		switch f.Type {
		case "message":
			out = append(out, f)
		case "ack", "pong", "synced", "presence":
		default:
			w.t.Fatalf("unexpected frame %+v", f)
		}
	}
	return out
}

// quiet asserts that no message frame arrives within d.
func (w *wsClient) quiet(d time.Duration) {
	w.t.Helper()
	for {
		f, err := w.tryRead(d)
		if errors.Is(err, errTimeout) {
			return
		}
		if err != nil {
			w.t.Fatalf("ws read: %v", err)
		}
		if f.Type == "message" {
			w.t.Fatalf("unexpected message %+v", f)
		}
	}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// validateTopics reads every record of the node's topics and holds each to
// its JSON Schema.
func (n *node) validateTopics(topics ...string) {
	n.t.Helper()
	for _, topic := range topics {
		want := n.topicCount(topic)
		cl, err := kgo.NewClient(kgo.SeedBrokers(n.brokers()...), kgo.ConsumeTopics(n.prefix+"."+topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		if err != nil {
			n.t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var got int64
		for got < want && ctx.Err() == nil {
			cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
				got++
				if err := schemas.ValidateEvent(r.Value); err != nil {
					n.t.Errorf("%s@%d/%d breaks its schema: %v\n%s", topic, r.Partition, r.Offset, err, r.Value)
				}
			})
		}
		cancel()
		cl.Close()
		if got == 0 {
			n.t.Errorf("topic %s: no records read", topic)
		}
	}
}

// appendMessages writes count message.sent events from sender straight
// into the channel's topic, as gateways would after accepting them (much
// faster than sending each), and returns the last message id.
func (n *node) appendMessages(channel, sender string, count int) domain.MessageID {
	n.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(n.brokers()...), kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(100_000))
	if err != nil {
		n.t.Fatal(err)
	}
	defer cl.Close()
	base := uint64(time.Now().UnixNano())
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range count {
		rec, err := eventlog.Record(n.prefix+".channels", channel, domain.MessageSent{
			ChannelID: domain.ChannelID(channel), MessageID: domain.MessageID(base + uint64(i)),
			SenderID: domain.UserID(sender), DeviceID: "phone", ClientMsgID: fmt.Sprint("appended ", i), Text: "appended message",
		}, domain.Meta{EventID: fmt.Sprint(base + uint64(i)), Time: time.Now()})
		if err != nil {
			n.t.Fatal(err)
		}
		wg.Add(1)
		cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		n.t.Fatalf("%d of %d appends failed", failed.Load(), count)
	}
	return domain.MessageID(base + uint64(count) - 1)
}

// ops runs "chatd replay" or "chatd verify" against the node, as an
// operator would, and returns its output and whether it succeeded.
func (n *node) ops(args ...string) (string, bool) {
	n.t.Helper()
	cmd := exec.Command(chatdBin, append(args, "--admin", n.admin, "--admin-token-file", filepath.Join(n.dir, "admin.token"))...)
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

// metrics returns the lines of the node's /metrics that start with any
// of prefixes, or why it could not read them.
func (n *node) metrics(prefixes ...string) string {
	resp, err := http.Get("http://" + n.http + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var b strings.Builder
	for line := range strings.Lines(string(body)) {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				b.WriteString(line)
				break
			}
		}
	}
	return b.String()
}

// maxLag reads the node's largest projection lag from /metrics; -1 when
// it cannot.
func (n *node) maxLag() float64 {
	resp, err := http.Get("http://" + n.http + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	most, found := 0.0, false
	for line := range strings.Lines(string(body)) {
		if rest, ok := strings.CutPrefix(line, "evchat_projection_lag{"); ok {
			_, v, _ := strings.Cut(rest, "} ")
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				most, found = max(most, f), true
			}
		}
	}
	if !found {
		return -1
	}
	return most
}

func waitForTB(tb testing.TB, d time.Duration, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(time.Second) {
		if cond() {
			return
		}
	}
	tb.Fatalf("condition not met within %v", d)
}

// TestInProcessNode holds the harness to what it promises of an in-process
// node: every goroutine the node starts carries its run's label (so the
// leak check after stop cannot pass for want of finding any), kill and
// pid refuse it (failing the test, naming startChild) and leave it
// running, no goroutine of it is left once stop returns, and a restart on
// the same data works.
func TestInProcessNode(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann := n.signUp("ann")
		w := n.connect(n.login(ann, "phone"))
		first := n.r
		if got := labelledGoroutines(nodeLabel, first.label); len(got) < 5 {
			t.Fatalf("%d goroutine stacks labelled %s while the node runs, want its tasks' and more", len(got), first.label)
		}
		for name, call := range map[string]func(*node){"kill": (*node).kill, "pid": func(n *node) { n.pid() }} {
			if msg := fatalOf(t, n, call); !strings.Contains(msg, "startChild") {
				t.Errorf("%s of an in-process node: %q, want a failure that names startChild", name, msg)
			}
		}
		select {
		case <-first.done:
			t.Fatalf("the node ended: %v", first.err)
		default:
		}
		w.c.Close()
		n.stop()
		if t.Failed() {
			return
		}
		if left := labelledGoroutines(nodeLabel, first.label); len(left) > 0 {
			t.Fatalf("after stop, goroutines of the node remain:\n%s", strings.Join(left, "\n\n"))
		}
		n.start()
		if n.r == first || n.r.label == first.label {
			t.Fatalf("a restart reused the run %s", first.label)
		}
		n.login(ann, "phone") // the user from before the restart
	})
}

// fatalOf calls call on a copy of n whose test records a failure instead of
// failing t, and returns what it said ("" if nothing).
func fatalOf(t *testing.T, n *node, call func(*node)) string {
	rec := &fatalRecorder{TB: t}
	c := *n
	c.t = rec
	done := make(chan struct{})
	go func() { defer close(done); call(&c) }() // Fatalf ends this goroutine
	<-done
	return rec.msg
}

// fatalRecorder is a test whose Fatalf records its message and ends the
// calling goroutine, as testing's does, without failing the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
