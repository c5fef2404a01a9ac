//go:build chaosservers

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestChaosServers is TestChaos on real servers that die too: during a
// burst into a group of ten it kills -9 the Kafka broker and restarts it,
// kills -9 Cassandra and restarts it, and kills -9 one of two chatd nodes
// at a time and restarts it. Devices are spread over both nodes and go to
// the other when theirs is down; while a server is down they get
// "unavailable" and resend with the same client message id. The checker is
// TestChaos's: nothing lost, duplicated, reordered or phantom on any
// device, history exact, the log without a second copy and readable to
// its end.
//
// Killing the shared servers would break every other test running, so this
// test starts a Kafka and a Cassandra of its own with deploy/servers.sh, on
// other ports and in another run directory (privateServers), and stops them
// when it ends, also on failure, and fails when they cannot start.
//
// It is built only with the chaosservers tag; deploy/test.sh (so CI) runs
// it after the rest of the suite, where it takes 3 to 5 minutes. Its first
// run lost one acknowledged message from history on Cassandra (Cassandra
// killed -9 loses the acknowledged writes after its commit log's last sync
// marker, and the history projector went on past the lost batch; the
// projector now seeks back, TestRunStoreLostAcknowledgedBatch). In session
// 13's CI it twice found a send decision missing from the store, as the
// same loss would leave it; the sends processor now mends such a loss from
// the log (gateway/chat/SENDS.md). deploy/README.md has the runs. By hand:
//
//	go test -race -count=1 -tags chaosservers -run '^TestChaosServers$' -v -timeout 40m ./cmd/chatd
func TestChaosServers(t *testing.T) {
	rounds := 1
	if s := os.Getenv("EVCHAT_CHAOS_ROUNDS"); s != "" { // a longer run by hand
		rounds, _ = strconv.Atoi(s)
		rounds = max(1, rounds)
	}
	srv := startPrivateServers(t)
	b := backend{name: "private kafka+cassandra", kafka: srv.kafka, cassandra: srv.cassandra}
	a := startChild(t, b, unlimitedSends...) // killed with SIGKILL, like its peer
	p := startPeer(t, a, 2, unlimitedSends...)
	nodes := []*node{a, p}
	// The burst is paced (at most 50 a second) so that it outlasts the
	// kills on a fast machine too: what the kill schedule lets through
	// between outages (pauses of up to 2.5 s, 100 sends of progress each)
	// stays below 2,400.
	cfg := chaosConfig{users: 12, burst: 2400 * rounds, steady: 150 * rounds, window: 20, every: 20 * time.Millisecond}
	r := newChaosRun(t, a, nodes, cfg)
	r.start()
	defer r.stop()

	// alive fails the test if a node exited by itself: a node must ride
	// out an outage of the log or the store, not stop.
	alive := func() {
		t.Helper()
		for _, n := range nodes {
			select {
			case <-n.r.done:
				t.Fatalf("chatd at %s exited by itself (%v); its stderr:\n%s", n.http, n.r.err, n.logs)
			default:
			}
		}
	}
	// progress waits until the burst has moved on by count sends since
	// now: whatever was killed last has recovered.
	progress := func(count int, after string) {
		t.Helper()
		a0, _ := r.acked()
		start := time.Now()
		ok := waitUntil(3*time.Minute, func() bool {
			alive()
			a, s := r.acked()
			return a >= min(a0+count, s)
		})
		if a, s := r.acked(); !ok {
			t.Fatalf("after %s no progress for %v: %d of %d sends acknowledged, %d at the start of the wait",
				after, time.Since(start).Round(time.Second), a, s, a0)
		}
	}

	kills := map[string]int{}
	outage := map[string]time.Duration{}
	schedule := []string{"chatd", "kafka", "chatd", "cassandra", "chatd", "chatd"}
	last := "the start"
	for range rounds {
		for _, what := range schedule {
			progress(100, last)
			chaosPause()
			a, s := r.acked()
			if a == s {
				t.Fatalf("the burst ended before the %s kill: make it longer", what)
			}
			kills[what]++
			down := time.Now()
			switch what {
			case "chatd":
				n := nodes[kills[what]%2]
				t.Logf("%s kill -9 chatd at %s (machine %d) with %d of %d sends acknowledged", clock(), n.http, max(n.machine, 1), a, s)
				n.kill()
				chaosPause() // its devices find it down and go to the other
				n.start()
			default:
				t.Logf("%s kill -9 %s with %d of %d sends acknowledged", clock(), what, a, s)
				srv.kill(what)
				srv.restart(what)
			}
			outage[what] += time.Since(down)
			last = fmt.Sprintf("the %s restart", what)
			alive()
		}
	}
	progress(100, last)
	r.check(fmt.Sprintf("kill -9 of kafka %d times (down %v in all), cassandra %d (down %v), a chatd node of two %d (down %v)",
		kills["kafka"], outage["kafka"].Round(100*time.Millisecond), kills["cassandra"], outage["cassandra"].Round(100*time.Millisecond),
		kills["chatd"], outage["chatd"].Round(100*time.Millisecond)))
}

// The private servers' ports: below the ephemeral range (32768 and up),
// outside freePort's 20000-32000, apart from the shared servers' 9092,
// 9093, 9042, 7000 and 7199.
const (
	privateKafkaPort           = 19092
	privateKafkaControllerPort = 19093
	privateCassandraPort       = 19042
	privateCassandraStorage    = 17000
	privateCassandraJMX        = 17199
)

// privateServers is a Kafka broker and a Cassandra node of one test's own,
// run by the deploy scripts in a run directory of their own.
type privateServers struct {
	t         *testing.T
	deploy    string // the deploy/ directory
	run       string // EVCHAT_RUN
	env       []string
	kafka     string
	cassandra string
}

// startPrivateServers starts both servers and stops them (deleting their
// data) when the test ends, whatever happened; a start that fails fails
// the test.
func startPrivateServers(t *testing.T) *privateServers {
	t.Helper()
	deploy, err := filepath.Abs(filepath.Join("..", "..", "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	s := &privateServers{t: t, deploy: deploy, run: filepath.Join(os.TempDir(), fmt.Sprintf("evchat-chaos-servers-%d", os.Getpid()))}
	s.env = append(os.Environ(),
		"EVCHAT_RUN="+s.run,
		fmt.Sprintf("EVCHAT_KAFKA_PORT=%d", privateKafkaPort),
		fmt.Sprintf("EVCHAT_KAFKA_CONTROLLER_PORT=%d", privateKafkaControllerPort),
		fmt.Sprintf("EVCHAT_CASSANDRA_PORT=%d", privateCassandraPort),
		fmt.Sprintf("EVCHAT_CASSANDRA_STORAGE_PORT=%d", privateCassandraStorage),
		fmt.Sprintf("EVCHAT_CASSANDRA_JMX_PORT=%d", privateCassandraJMX),
	)
	t.Cleanup(s.stop) // before starting: a half start is stopped too
	start := time.Now()
	out, err := s.script("servers.sh", "start")
	if err != nil {
		t.Fatalf("the private servers did not start: %v\n%s", err, out)
	}
	s.kafka = fmt.Sprintf("127.0.0.1:%d", privateKafkaPort)
	s.cassandra = fmt.Sprintf("127.0.0.1:%d", privateCassandraPort)
	t.Logf("private Kafka %s and Cassandra %s up after %v (run directory %s)", s.kafka, s.cassandra, time.Since(start).Round(100*time.Millisecond), s.run)
	return s
}

// script runs one of the deploy scripts on the private servers and returns
// its output (stderr, where the scripts log, then stdout).
func (s *privateServers) script(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(s.deploy, name)}, args...)...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kill kills -9 the server ("kafka" or "cassandra") by its pidfile; its
// data stays.
func (s *privateServers) kill(server string) {
	s.t.Helper()
	if out, err := s.script(server+".sh", "kill"); err != nil {
		s.t.Fatalf("kill %s: %v\n%s", server, err, out)
	}
}

// restart starts the server again on the data it left, and waits until it
// answers.
func (s *privateServers) restart(server string) {
	s.t.Helper()
	start := time.Now()
	out, err := s.script(server+".sh", "restart")
	if err != nil {
		s.t.Fatalf("restart %s: %v\n%s", server, err, out)
	}
	s.t.Logf("%s %s answers again %v after its restart began", clock(), server, time.Since(start).Round(100*time.Millisecond))
}

// stop shows the servers' last log lines if the test failed, then stops
// both and deletes their data.
func (s *privateServers) stop() {
	if s.t.Failed() {
		for _, f := range []string{"kafka/logs/server.log", "cassandra/logs/system.log"} {
			if b, err := os.ReadFile(filepath.Join(s.run, f)); err == nil {
				lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
				s.t.Logf("last lines of %s:\n%s", f, strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
	}
	if out, err := s.script("servers.sh", "stop"); err != nil {
		s.t.Errorf("stopping the private servers: %v\n%s", err, out)
		return
	}
	_ = os.Remove(s.run) // empty once the scripts removed kafka/ and cassandra/
}

// clock is the time of day in UTC, to place the log's lines among message
// ids' times.
func clock() string { return time.Now().UTC().Format("15:04:05.00") }
