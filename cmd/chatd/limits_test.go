package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The abuse rows of issue 13 on the HTTP side: descriptors, slow clients,
// bodies, password checks, login throttling and names. Each test drives a
// chatd child process over real connections, on both backends.

// rawAnswer is an HTTP answer read off a connection of one request.
type rawAnswer struct {
	status     int
	code       string
	retryAfter string
}

// oneRequest sends req on a connection of its own (no keep-alive) and
// returns the answer, or an error when the connection failed.
func oneRequest(req *http.Request) (rawAnswer, error) {
	cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: 10 * time.Second}, Timeout: 60 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return rawAnswer{}, err
	}
	defer resp.Body.Close()
	var e struct{ Error struct{ Code string } }
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return rawAnswer{resp.StatusCode, e.Error.Code, resp.Header.Get("Retry-After")}, nil
}

func (n *node) get(path string) (rawAnswer, error) {
	req, _ := http.NewRequest("GET", "http://"+n.http+path, nil)
	return oneRequest(req)
}

func (n *node) postRaw(path string, body io.Reader, length int64) (rawAnswer, error) {
	req, _ := http.NewRequest("POST", "http://"+n.http+path, body)
	req.Header.Set("Content-Type", "application/json")
	if length < 0 || length > 64<<10 {
		// As a client that sends large bodies should: the server refuses
		// before the body is sent, not while it is being written (when
		// the client sees a reset rather than the answer).
		req.Header.Set("Expect", "100-continue")
	}
	req.ContentLength = length
	return oneRequest(req)
}

// closedWithin reports whether the server closes c within d, while feed
// writes to it every half second (nil: writes nothing). It reads: EOF or
// a reset means closed (an answer before the close is read and skipped).
func closedWithin(c net.Conn, d time.Duration, feed func(c net.Conn) error) bool {
	deadline := time.Now().Add(d)
	buf := make([]byte, 4096)
	for time.Now().Before(deadline) {
		if feed != nil {
			if err := feed(c); err != nil {
				return true // the server has closed it
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := c.Read(buf)
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return true
		}
	}
	return false
}

// TestHTTPConnectionCap: plain HTTP connections past --max-http-conns are
// answered 503 busy with Retry-After at once, WebSockets do not count and
// keep working meanwhile, and the places come back when the idle
// connections go. Before: ~19,800 idle connections took every descriptor.
func TestHTTPConnectionCap(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		// 12 WebSockets of one device: past the default per-device cap.
		n := startNode(t, b, "--max-http-conns", "8", "--http-header-timeout", "5m", "--ws-max-per-device", "16")
		ann, bob := n.signUp("ann"), n.signUp("bob")
		tok := n.login(ann, "laptop")
		ch := n.createChannel(tok, "direct", bob.ID)
		// More WebSockets than plain places: an upgraded connection is
		// not plain.
		var wss []*wsClient
		for range 12 {
			wss = append(wss, n.connect(tok))
		}
		var idle []net.Conn
		for range 8 {
			c, err := net.Dial("tcp", n.http)
			if err != nil {
				t.Fatal(err)
			}
			idle = append(idle, c)
		}
		var busy rawAnswer
		waitFor(t, func() bool {
			a, err := n.get("/healthz")
			busy = a
			return err == nil && a.status == http.StatusServiceUnavailable
		})
		if busy.code != "busy" || busy.retryAfter == "" {
			t.Fatalf("past the cap: %+v, want 503 busy with Retry-After", busy)
		}
		// The WebSockets carry on while the plain places are taken.
		if f := wss[11].send(ch.ChannelID, "during", "hello while full"); f.Type != "ack" {
			t.Fatalf("send while HTTP is full: %+v", f)
		}
		for _, c := range idle {
			c.Close()
		}
		waitFor(t, func() bool { a, err := n.get("/healthz"); return err == nil && a.status == http.StatusOK })
		if a, err := n.get("/readyz"); err != nil || a.status != http.StatusOK {
			t.Fatalf("readyz after the flood: %+v %v", a, err)
		}
	})
}

// TestSlowHTTPClients: a body sent a byte at a time, headers sent a byte
// at a time and an idle keep-alive connection are all closed within their
// timeouts, while a WebSocket opened before them is still served after
// they are gone. Before: held open indefinitely (only ReadHeaderTimeout).
func TestSlowHTTPClients(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b, "--http-read-timeout", "3s", "--http-idle-timeout", "3s", "--http-header-timeout", "3s", "--http-write-timeout", "3s")
		ann, bob := n.signUp("ann"), n.signUp("bob")
		tok := n.login(ann, "laptop")
		ch := n.createChannel(tok, "direct", bob.ID)
		ws := n.connect(tok)

		dial := func() net.Conn {
			c, err := net.Dial("tcp", n.http)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		const bound = 60 * time.Second
		slowBody := dial()
		if _, err := io.WriteString(slowBody, "POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"); err != nil {
			t.Fatal(err)
		}
		if !closedWithin(slowBody, bound, func(c net.Conn) error { _, err := c.Write([]byte(" ")); return err }) {
			t.Fatalf("a body at 2 bytes a second still open after %s", bound)
		}
		slowHeaders := dial()
		if !closedWithin(slowHeaders, bound, func(c net.Conn) error { _, err := c.Write([]byte("X")); return err }) {
			t.Fatalf("headers at 2 bytes a second still open after %s", bound)
		}
		idle := dial()
		if _, err := io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("keep-alive request: %v %v", resp, err)
		}
		resp.Body.Close()
		if !closedWithin(idle, bound, nil) {
			t.Fatalf("an idle keep-alive connection still open after %s", bound)
		}
		// The WebSocket outlived every HTTP timeout.
		if f := ws.send(ch.ChannelID, "after", "still here"); f.Type != "ack" {
			t.Fatalf("send on the WebSocket after the timeouts: %+v", f)
		}
	})
}

// TestDescriptorFlood runs chatd under an open-files limit of 1536 with
// 1024 kept in reserve and opens 1400 idle connections to it: the node
// holds its connections within its share (the rest are answered 503 and
// closed), so descriptors remain for the log and the store, sends are
// acknowledged during the flood, and afterwards a new user signs up, logs
// in, connects and sends. Before: the flood took every descriptor.
func TestDescriptorFlood(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		const nofile = 1536
		n := startChildLimited(t, b, nofile, "--fd-reserve", "1024", "--http-header-timeout", "5m")
		ann, bob := n.signUp("ann"), n.signUp("bob")
		tok := n.login(ann, "laptop")
		ch := n.createChannel(tok, "direct", bob.ID)
		ws := n.connect(tok)
		pid := n.pid()

		var (
			mu    sync.Mutex
			flood []net.Conn
		)
		t.Cleanup(func() {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range flood {
				c.Close()
			}
		})
		for range 1400 {
			c, err := net.Dial("tcp", n.http)
			if err != nil {
				continue // the backlog is full: the flood is as large as it gets
			}
			mu.Lock()
			flood = append(flood, c)
			mu.Unlock()
		}
		// The node holds at most its share: 512 connections, and the 64
		// being answered 503, beside what the log and the store hold.
		most := 0
		for i := range 20 {
			fds := openFDs(t, pid)
			most = max(most, fds)
			if fds > nofile-256 {
				t.Fatalf("%d open files during the flood (limit %d): the reserve is gone", fds, nofile)
			}
			if f := ws.send(ch.ChannelID, fmt.Sprint("flood-", i), "during the flood"); f.Type != "ack" {
				t.Fatalf("send during the flood: %+v", f)
			}
		}
		t.Logf("%d connections opened; the node held at most %d open files", len(flood), most)
		mu.Lock()
		for _, c := range flood {
			c.Close()
		}
		flood = nil
		mu.Unlock()
		waitFor(t, func() bool { a, err := n.get("/readyz"); return err == nil && a.status == http.StatusOK })
		cat := n.signUp("cat")
		ctok := n.login(cat, "phone")
		ch2 := n.createChannel(ctok, "direct", ann.ID)
		if f := n.connect(ctok).send(ch2.ChannelID, "after", "after the flood"); f.Type != "ack" {
			t.Fatalf("send after the flood: %+v", f)
		}
	})
}

func openFDs(t *testing.T, pid int) int {
	t.Helper()
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestBodyAndPasswordLimits: a body over --max-body is 413 too_long,
// whether it says its length or not; logins beyond the password pool's
// workers and queue are 503 busy with Retry-After, never a 5xx of another
// kind; a known and an unknown name both answer 401.
func TestBodyAndPasswordLimits(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b, "--password-workers", "1", "--password-queue", "1",
			"--login-failures-per-name", "0", "--login-failures-per-addr", "0")
		ann := n.signUp("ann")
		big := `{"name":"ann","password":"` + strings.Repeat("x", 256<<10) + `"}`
		for _, length := range []int64{int64(len(big)), -1} { // declared, chunked
			a, err := n.postRaw("/v1/login", strings.NewReader(big), length)
			if err != nil || a.status != http.StatusRequestEntityTooLarge || a.code != "too_long" {
				t.Fatalf("256 KiB login body (length %d): %+v %v, want 413 too_long", length, a, err)
			}
		}
		a, err := n.postRaw("/v1/users", bytes.NewReader([]byte(big)), -1)
		if err != nil || a.status != http.StatusRequestEntityTooLarge {
			t.Fatalf("256 KiB sign-up body: %+v %v", a, err)
		}

		// 16 wrong logins at once on a pool of one worker and one place.
		sawBusy := false
		for round := 0; round < 20 && !sawBusy; round++ {
			var wg sync.WaitGroup
			answers := make([]rawAnswer, 16)
			for i := range answers {
				name := "ann"
				if i%2 == 1 {
					name = "nobody" // an unknown name costs a check too
				}
				wg.Go(func() {
					body := fmt.Sprintf(`{"name":%q,"password":"wrong password %d"}`, name, i)
					a, err := n.postRaw("/v1/login", strings.NewReader(body), int64(len(body)))
					if err != nil {
						t.Errorf("login: %v", err)
					}
					answers[i] = a
				})
			}
			wg.Wait()
			for _, a := range answers {
				switch {
				case a.status == http.StatusUnauthorized && a.code == "unauthorized":
				case a.status == http.StatusServiceUnavailable && a.code == "busy":
					if s, err := strconv.Atoi(a.retryAfter); err != nil || s < 1 {
						t.Fatalf("busy without a Retry-After: %+v", a)
					}
					sawBusy = true
				default:
					t.Fatalf("a login under load: %+v", a)
				}
			}
		}
		if !sawBusy {
			t.Fatal("20 rounds of 16 logins at once on a pool of 1+1: never busy")
		}
		n.login(ann, "laptop") // the pool is free again
	})
}

// TestLoginThrottle: failed logins per name and per address are limited:
// past the limit a login is 429 rate_limited with Retry-After, even with
// the right password, and without a password check; another name from
// another count is unaffected. Before: 300 wrong passwords all answered.
func TestLoginThrottle(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b, "--login-failures-per-name", "5", "--login-failures-per-addr", "12", "--login-window", "10m")
		ann, bob, cat := n.signUp("ann"), n.signUp("bob"), n.signUp("cat")
		wrong := func(name string) rawAnswer {
			body := fmt.Sprintf(`{"name":%q,"password":"not the password"}`, name)
			a, err := n.postRaw("/v1/login", strings.NewReader(body), int64(len(body)))
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		for i := range 5 {
			if a := wrong("ann"); a.status != http.StatusUnauthorized {
				t.Fatalf("wrong password %d: %+v, want 401", i+1, a)
			}
		}
		a := wrong("ANN") // the same name, folded
		if a.status != http.StatusTooManyRequests || a.code != "rate_limited" || a.retryAfter == "" {
			t.Fatalf("6th wrong password: %+v, want 429 rate_limited with Retry-After", a)
		}
		if s, _ := strconv.Atoi(a.retryAfter); s < 1 || s > 600 {
			t.Fatalf("Retry-After %q, want 1 to 600 seconds", a.retryAfter)
		}
		if e := n.do("POST", "/v1/login", "", map[string]string{"name": "ann", "password": "password-ann"}, nil); e.Status != http.StatusTooManyRequests {
			t.Fatalf("right password while throttled: %+v, want 429", e)
		}
		n.login(bob, "laptop") // another name is not throttled
		// 12 failures from this address in all: 5 above, 7 more.
		for i := range 7 {
			if a := wrong(fmt.Sprint("nobody", i)); a.status != http.StatusUnauthorized {
				t.Fatalf("failure %d from the address: %+v", 6+i, a)
			}
		}
		if e := n.do("POST", "/v1/login", "", map[string]string{"name": cat.Name, "password": "password-cat"}, nil); e.Status != http.StatusTooManyRequests || e.Code != "rate_limited" {
			t.Fatalf("login from an address past its failures: %+v, want 429", e)
		}
		_ = ann
	})
}

// TestUserNames: names are compared case-folded and NFKC-normalised, so
// "ANN" and the full-width "ＡＮＮ" are ann; "ann." and names with control
// or direction-override characters are refused; the data directory is
// its user's alone. Before: ann, ANN and ann. were three accounts, and the
// files were world-readable.
func TestUserNames(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann := n.signUp("ann")
		for _, name := range []string{"ANN", "Ann", "ＡＮＮ"} {
			if e := n.do("POST", "/v1/users", "", map[string]string{"name": name, "password": "password-x"}, nil); e.Status != http.StatusConflict {
				t.Errorf("sign up %q beside ann: %+v, want 409 conflict", name, e)
			}
		}
		for _, name := range []string{"ann.", ".ann", "a..nn", "ann\u202e", "an\u200bn", "ann\x07"} {
			if e := n.do("POST", "/v1/users", "", map[string]string{"name": name, "password": "password-x"}, nil); e.Status != http.StatusBadRequest || e.Code != "bad_request" {
				t.Errorf("sign up %q: %+v, want 400 bad_request", name, e)
			}
		}
		var r struct {
			UserID string `json:"user_id"`
		}
		n.must("POST", "/v1/login", "", map[string]string{"name": "ANN", "password": "password-ann"}, &r)
		if r.UserID != ann.ID {
			t.Fatalf("login as ANN: user %s, want ann's %s", r.UserID, ann.ID)
		}
		// Only the WebSocket route takes ?token=.
		tok := n.login(ann, "laptop")
		if a, err := n.get("/v1/channels?token=" + tok); err != nil || a.status != http.StatusUnauthorized {
			t.Fatalf("REST with ?token=: %+v %v, want 401", a, err)
		}
		checked := 0
		err := filepath.Walk(n.dir, func(path string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			want := os.FileMode(0o600)
			if fi.IsDir() {
				want = 0o700
			}
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
			}
			checked++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if b.kafka == "" && checked < 10 { // the log and the store are there
			t.Fatalf("checked %d paths under the data directory", checked)
		}
		if checked < 1 {
			t.Fatalf("checked %d paths under the data directory", checked)
		}
	})
}

// TestAdminAddress: the admin address refuses a request without the token
// from its file (pprof too), a POST that is not JSON (415), and a foreign
// Host (403); with all three right it serves, and the operators' chatd
// verify finds the token in the file. Before: all open to anyone.
func TestAdminAddress(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		path := filepath.Join(n.dir, "admin.token")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatalf("the admin token file: %v", err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("admin token file mode %v, want 0600", fi.Mode().Perm())
		}
		raw, _ := os.ReadFile(path)
		token := strings.TrimSpace(string(raw))
		call := func(method, path, tok, ctype, host string) rawAnswer {
			t.Helper()
			var body io.Reader
			if method == "POST" {
				body = strings.NewReader(`{"projection":"history","from":"start"}`)
			}
			req, _ := http.NewRequest(method, "http://"+n.admin+path, body)
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			if ctype != "" {
				req.Header.Set("Content-Type", ctype)
			}
			if host != "" {
				req.Host = host
			}
			a, err := oneRequest(req)
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		for _, tc := range []struct {
			name                           string
			method, path, tok, ctype, host string
			status                         int
			code                           string
		}{
			{"verify without token", "GET", "/admin/verify?projection=history", "", "", "", 401, "unauthorized"},
			{"verify with another token", "GET", "/admin/verify?projection=history", token + "x", "", "", 401, "unauthorized"},
			{"pprof without token", "GET", "/debug/pprof/goroutine?debug=1", "", "", "", 401, "unauthorized"},
			{"trace without token", "GET", "/debug/pprof/trace?seconds=1", "", "", "", 401, "unauthorized"},
			{"replay as text/plain", "POST", "/admin/replay", token, "text/plain", "", 415, "unsupported_media_type"},
			{"replay as a form", "POST", "/admin/replay", token, "application/x-www-form-urlencoded", "", 415, "unsupported_media_type"},
			{"replay from a foreign Host", "POST", "/admin/replay", token, "application/json", "evil.example:8081", 403, "forbidden"},
			{"verify from a foreign Host", "GET", "/admin/verify?projection=history", token, "", "attacker.test", 403, "forbidden"},
		} {
			if a := call(tc.method, tc.path, tc.tok, tc.ctype, tc.host); a.status != tc.status || a.code != tc.code {
				t.Errorf("%s: %+v, want %d %s", tc.name, a, tc.status, tc.code)
			}
		}
		if a := call("GET", "/debug/pprof/goroutine?debug=1", token, "", "localhost"); a.status != http.StatusOK {
			t.Errorf("pprof with the token: %+v", a)
		}
		n.signUp("ann")
		waitFor(t, func() bool { _, ok := n.ops("verify", "--projection", "history"); return ok })
		if out, ok := n.ops("replay", "--projection", "history"); !ok || !strings.Contains(out, "replay history done") {
			t.Fatalf("chatd replay with the token file: %v\n%s", ok, out)
		}
	})
}

// closedByServer waits (60 s at most) until the server closes w, reading
// past any frame, and returns the close error.
func closedByServer(t *testing.T, w *wsClient) error {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := w.tryRead(time.Second); err != nil && !errors.Is(err, errTimeout) {
			return err
		}
	}
	t.Fatal("the WebSocket is still open 60 s after logout")
	return nil
}

// TestLogoutRevokes: after logout the token is refused on REST and on the
// WebSocket upgrade, the device's open WebSocket is closed, and this holds
// after a restart and, on the real servers, on another node, where the
// device's open WebSocket is closed too (the peer tails device.logged_out)
// and ann's other device's is not. The same device logs in again with a
// new token, and ann's other device is not touched. Before: the
// logged-out token kept working everywhere; then, a WebSocket of the
// device on another node stayed open.
func TestLogoutRevokes(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b)
		ann, bob := n.signUp("ann"), n.signUp("bob")
		laptop, phone := n.login(ann, "laptop"), n.login(ann, "phone")
		ch := n.createChannel(phone, "direct", bob.ID)
		open, other := n.connect(laptop), n.connect(phone)
		var peer *node
		var peerOpen, peerOther *wsClient
		if b.kafka != "" {
			peer = startPeer(t, n, 2)
			peerOpen, peerOther = peer.connect(laptop), peer.connect(phone)
		}
		n.must("POST", "/v1/logout", laptop, nil, nil)

		if err := closedByServer(t, open); !strings.Contains(err.Error(), "logged out") {
			t.Fatalf("the laptop's WebSocket closed with %v, want a close that says logged out", err)
		}
		if peer != nil {
			if err := closedByServer(t, peerOpen); !strings.Contains(err.Error(), "logged out") {
				t.Fatalf("the laptop's WebSocket on another node closed with %v, want a close that says logged out", err)
			}
			peerOther.write(map[string]string{"type": "ping"})
			if f, _ := peerOther.readUntil("pong"); f.Type != "pong" {
				t.Fatalf("ann's phone on another node: %+v", f)
			}
		}
		refused := func(n *node, where string) {
			t.Helper()
			if e := n.do("GET", "/v1/channels", laptop, nil, nil); e.Status != http.StatusUnauthorized || e.Code != "unauthorized" {
				t.Fatalf("%s: REST with the logged-out token: %+v, want 401", where, e)
			}
			if _, resp, err := n.dial(laptop); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%s: WebSocket with the logged-out token: %v %v, want 401", where, resp, err)
			}
		}
		refused(n, "this node")
		if f := other.send(ch.ChannelID, "1", "the phone is still in"); f.Type != "ack" {
			t.Fatalf("ann's other device after the laptop logged out: %+v", f)
		}
		if peer != nil {
			refused(peer, "another node")
		}
		n.stop()
		n.start()
		refused(n, "after a restart")
		again := n.login(ann, "laptop")
		n.must("GET", "/v1/channels", again, nil, nil)
		n.must("GET", "/v1/channels", phone, nil, nil)
	})
}
