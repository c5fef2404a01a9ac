package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/gorilla/websocket"

	"github.com/evchat/evchat/cmd/internal/node"
	"github.com/evchat/evchat/projections/verify"
)

// runNode starts a node of cfg in the test's process, like nats-server's
// test.RunServer, waits until it serves, and stops it (within a bound) when
// the test ends.
func runNode(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.New(cfg)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	done := make(chan struct{}) // closed once Run has returned runErr
	go func() { defer close(done); runErr = n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
			if runErr != nil && !t.Failed() {
				t.Errorf("Run after cancel: %v, want nil", runErr)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("Run did not return within 60 s of its cancel")
		}
	})
	select {
	case <-n.Ready():
	case <-done:
		t.Fatalf("Run: %v", runErr)
	case <-time.After(2 * time.Minute):
		t.Fatalf("the node did not start within 2 minutes")
	}
	return n
}

// testConfig is the embedded default in a temp dir, on free ports.
func testConfig(t *testing.T) node.Config {
	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.Partitions = 2
	return cfg
}

func call(t *testing.T, addr, method, path, token string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

type frame struct {
	Type      string `json:"type"`
	MessageID string `json:"message_id"`
	Text      string `json:"text"`
	Code      string `json:"code"`
}

// next reads frames until one of type typ, within 30 s.
func next(t *testing.T, c *websocket.Conn, typ string) frame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for a %s frame: %v", typ, err)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
		if f.Type == "error" {
			t.Fatalf("error frame: %s", b)
		}
		if f.Type == typ {
			return f
		}
	}
}

// chatFlow signs ann and bob up and in over HTTP, makes a direct
// channel, and has ann send bob a message over WebSocket: ann gets the
// ack, bob the message.
func chatFlow(t *testing.T, addr string) {
	t.Helper()

	token := map[string]string{}
	ids := map[string]string{}
	for _, name := range []string{"ann", "bob"} {
		var u struct {
			UserID string `json:"user_id"`
		}
		if st := call(t, addr, "POST", "/v1/users", "", map[string]string{"name": name, "password": "password-" + name}, &u); st != http.StatusCreated && st != http.StatusOK {
			t.Fatalf("sign-up %s: status %d", name, st)
		}
		var l struct {
			Token string `json:"token"`
		}
		if st := call(t, addr, "POST", "/v1/login", "", map[string]string{"name": name, "password": "password-" + name, "device_id": "phone"}, &l); st != http.StatusOK {
			t.Fatalf("login %s: status %d", name, st)
		}
		token[name], ids[name] = l.Token, u.UserID
	}
	var ch struct {
		ChannelID string `json:"channel_id"`
	}
	if st := call(t, addr, "POST", "/v1/channels", token["ann"], map[string]any{"kind": "direct", "members": []string{ids["bob"]}}, &ch); st >= 300 {
		t.Fatalf("create channel: status %d", st)
	}
	dial := func(name string) *websocket.Conn {
		u := url.URL{Scheme: "ws", Host: addr, Path: "/v1/ws", RawQuery: "token=" + url.QueryEscape(token[name])}
		c, _, err := websocket.DefaultDialer.Dial(u.String(), nil)
		if err != nil {
			t.Fatalf("dial %s: %v", name, err)
		}
		t.Cleanup(func() { c.Close() })
		next(t, c, "hello")
		return c
	}
	bob, ann := dial("bob"), dial("ann")
	send := fmt.Sprintf(`{"type":"send","channel_id":%q,"client_msg_id":"1","text":"hi bob"}`, ch.ChannelID)
	if err := ann.WriteMessage(websocket.TextMessage, []byte(send)); err != nil {
		t.Fatal(err)
	}
	ack := next(t, ann, "ack")
	if ack.MessageID == "" {
		t.Fatalf("ack without a message id")
	}
	if got := next(t, bob, "message"); got.MessageID != ack.MessageID || got.Text != "hi bob" {
		t.Fatalf("bob got %+v, want message %s \"hi bob\"", got, ack.MessageID)
	}
}

func TestNodeInProcess(t *testing.T) {
	n := runNode(t, testConfig(t))
	chatFlow(t, n.HTTPAddr())

	// Verify, through the admin endpoint, reads the table: the inbox of
	// the current epoch agrees once the projection has applied the entry.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var rep verify.Report
		st := call(t, n.AdminAddr(), "GET", "/admin/verify?projection=inbox", n.AdminToken(), nil, &rep)
		if st == http.StatusOK && rep.Err() == nil && rep.Entities > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify inbox: status %d, %s", st, rep.Summary())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Cursors too: every device cursor and read mark the session topic
	// holds below the positions.
	for deadline := time.Now().Add(30 * time.Second); ; {
		var rep verify.Report
		st := call(t, n.AdminAddr(), "GET", "/admin/verify?projection=cursors", n.AdminToken(), nil, &rep)
		if st == http.StatusOK && rep.Err() == nil && rep.Events > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify cursors: status %d, %s: %v", st, rep.Summary(), rep.Err())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Presence and the fan-out: their output topics against their input.
	for _, p := range []string{"presence", "fanout"} {
		for deadline := time.Now().Add(30 * time.Second); ; {
			var rep verify.Report
			st := call(t, n.AdminAddr(), "GET", "/admin/verify?projection="+p, n.AdminToken(), nil, &rep)
			if st == http.StatusOK && rep.Err() == nil && rep.Entities > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("verify %s: status %d, %s: %v", p, st, rep.Summary(), rep.Err())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if st := call(t, n.AdminAddr(), "GET", "/admin/verify?projection=push", n.AdminToken(), nil, nil); st != http.StatusBadRequest {
		t.Fatalf("verify push: status %d, want 400 (not verifiable)", st)
	}
}

// A node with some roles only serves health and metrics without the
// gateway, and refuses to replay a role it does not run.
func TestNodeSomeRoles(t *testing.T) {
	cfg := testConfig(t)
	cfg.Roles = []string{"history", "cursors"}
	n := runNode(t, cfg)
	if st := call(t, n.HTTPAddr(), "GET", "/healthz", "", nil, nil); st != http.StatusOK {
		t.Fatalf("/healthz: %d", st)
	}
	if st := call(t, n.HTTPAddr(), "GET", "/metrics", "", nil, nil); st != http.StatusOK {
		t.Fatalf("/metrics: %d", st)
	}
	if st := call(t, n.HTTPAddr(), "POST", "/v1/users", "", map[string]string{"name": "ann", "password": "password-ann"}, nil); st != http.StatusNotFound {
		t.Fatalf("sign-up on a node without the gateway: %d, want 404", st)
	}
	var e struct{ Error struct{ Message string } }
	b, _ := json.Marshal(map[string]string{"projection": "push", "from": "start"})
	req, _ := http.NewRequest("POST", "http://"+n.AdminAddr()+"/admin/replay", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+n.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error.Message, "does not run") {
		t.Fatalf("replay push on a node without it: %d %q", resp.StatusCode, e.Error.Message)
	}
}

func TestValidate(t *testing.T) {
	ok := node.DefaultConfig()
	for _, tc := range []struct {
		name   string
		change func(*node.Config)
		want   string // in the error; empty: valid
	}{
		{"default", func(*node.Config) {}, ""},
		{"machine id 0", func(c *node.Config) { c.MachineID = 0 }, ""},
		{"machine id 65535", func(c *node.Config) { c.MachineID = 65535 }, ""},
		{"machine id 65536 would wrap to 0", func(c *node.Config) { c.MachineID = 65536 }, "machine id 65536"},
		{"machine id 65537 would wrap to 1", func(c *node.Config) { c.MachineID = 65537 }, "machine id 65537"},
		{"machine id negative", func(c *node.Config) { c.MachineID = -1 }, "machine id -1"},
		{"partitions by backend", func(c *node.Config) { c.Partitions = 0 }, ""},
		{"negative partitions", func(c *node.Config) { c.Partitions = -1 }, "partitions -1"},
		{"no http address", func(c *node.Config) { c.HTTPAddr = "" }, "no HTTP address"},
		{"http address without port", func(c *node.Config) { c.HTTPAddr = "localhost" }, "HTTP address"},
		{"admin address without port", func(c *node.Config) { c.AdminAddr = "localhost" }, "admin address"},
		{"embedded without data dir", func(c *node.Config) { c.DataDir = "" }, "no data directory"},
		{"real servers and secret without data dir", func(c *node.Config) {
			c.DataDir, c.Kafka, c.Cassandra, c.Secret = "", []string{"k:9092"}, []string{"c:9042"}, strings.Repeat("s", 32)
		}, ""},
		{"embedded port too big", func(c *node.Config) { c.EmbeddedKafkaPort = 70000 }, "embedded Kafka port"},
		{"cassandra without keyspace", func(c *node.Config) { c.Cassandra, c.Keyspace = []string{"c:9042"}, "" }, "keyspace"},
		{"empty topic prefix", func(c *node.Config) { c.TopicPrefix = "" }, "topic prefix"},
		{"no presence window", func(c *node.Config) { c.PresenceWindow = 0 }, "presence window"},
		{"heartbeat as long as the window", func(c *node.Config) { c.Heartbeat = c.PresenceWindow }, "heartbeat"},
		{"negative push delay", func(c *node.Config) { c.PushDelay = -time.Second }, "push delay"},
		{"push max age below the delay", func(c *node.Config) { c.PushMaxAge = time.Second }, "push max age"},
		{"body cache below 1 MiB", func(c *node.Config) { c.BodyCache = 1000 }, "body cache"},
		{"store cache below 8 MiB", func(c *node.Config) { c.StoreCache = 1 << 20 }, "store cache"},
		{"negative embedded sync interval", func(c *node.Config) { c.EmbeddedSyncInterval = -time.Second }, "embedded sync interval"},
		{"password wait as long as the write timeout", func(c *node.Config) { c.PasswordWait = c.HTTPWriteTimeout }, "password wait"},
		{"short write timeout, password wait by default", func(c *node.Config) { c.HTTPWriteTimeout = 3 * time.Second }, ""},
		{"no body wait", func(c *node.Config) { c.BodyWait = 0 }, "body wait"},
		{"negative ready lag", func(c *node.Config) { c.ReadyLag = -1 }, "ready lag"},
		{"no revocation cache", func(c *node.Config) { c.RevocationCache = 0 }, "revocation cache"},
		{"no revocation recheck", func(c *node.Config) { c.RevocationRecheck = 0 }, "revocation cache"},
		{"revocation recheck over a minute", func(c *node.Config) { c.RevocationRecheck = time.Minute + 1 }, "revocation cache"},
		{"revocation recheck of a minute", func(c *node.Config) { c.RevocationRecheck = time.Minute }, ""},
		{"secret of 31 bytes", func(c *node.Config) { c.Secret = strings.Repeat("s", 31) }, "secret of 31 bytes"},
		{"secret of 32 bytes", func(c *node.Config) { c.Secret = strings.Repeat("s", 32) }, ""},
		{"some roles", func(c *node.Config) { c.Roles = node.RoleNames()[:2] }, ""},
		{"gateway only", func(c *node.Config) { c.Roles = []string{node.GatewayRole} }, ""},
		{"unknown role", func(c *node.Config) { c.Roles = []string{node.GatewayRole, "fanuot"} },
			`unknown role "fanuot": the roles are ` + strings.Join(node.RoleNames(), ", ")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.change(&cfg)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error with %q", err, tc.want)
			case tc.want != "" && !errors.Is(err, node.ErrConfig):
				t.Fatalf("Validate: %v does not wrap ErrConfig", err)
			}
			if _, nerr := node.New(cfg); (nerr == nil) != (err == nil) {
				t.Fatalf("New: %v, Validate: %v", nerr, err)
			}
		})
	}
}

// On real Kafka and Cassandra (EVCHAT_KAFKA, EVCHAT_CASSANDRA), a gateway
// and a projection worker run apart (--roles) and serve a chat together.
func TestNodeRolesApart(t *testing.T) {
	kafka, cass := os.Getenv("EVCHAT_KAFKA"), os.Getenv("EVCHAT_CASSANDRA")
	if kafka == "" || cass == "" {
		t.Skip("EVCHAT_KAFKA and EVCHAT_CASSANDRA name no servers")
	}
	suffix := fmt.Sprint(time.Now().UnixNano())
	t.Cleanup(func() { dropKeyspace(t, cass, "node_"+suffix) })
	base := func(machine int, roles []string) node.Config {
		cfg := testConfig(t)
		cfg.Kafka, cfg.Cassandra, cfg.Keyspace, cfg.TopicPrefix = []string{kafka}, []string{cass}, "node_"+suffix, "n"+suffix
		cfg.MachineID, cfg.Roles, cfg.Secret = machine, roles, "a secret of at least 32 bytes, "+suffix
		return cfg
	}
	var projections []string
	for _, name := range node.RoleNames() {
		if name != node.GatewayRole {
			projections = append(projections, name)
		}
	}
	runNode(t, base(2, projections))
	gw := runNode(t, base(1, []string{node.GatewayRole}))
	chatFlow(t, gw.HTTPAddr())
}

func dropKeyspace(t *testing.T, hosts, keyspace string) {
	c := gocql.NewCluster(strings.Split(hosts, ",")...)
	c.Timeout = 30 * time.Second
	s, err := c.CreateSession()
	if err != nil {
		t.Logf("drop keyspace %s: %v", keyspace, err)
		return
	}
	defer s.Close()
	if err := s.Query("DROP KEYSPACE IF EXISTS " + keyspace).Exec(); err != nil {
		t.Logf("drop keyspace %s: %v", keyspace, err)
	}
}
