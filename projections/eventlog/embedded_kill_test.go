package eventlog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The kill -9 test runs the embedded broker and a transactional processor
// in a child process (this test binary, re-executed), kills it with
// SIGKILL while a transaction is open, and starts it again on the same
// data directory, round after round. The child appends the values of
// every transaction it committed to a ledger file and fsyncs it after the
// commit returns; at the end the parent reads the log read-committed and
// holds it to the ledger.
const (
	killEnvDir     = "EVCHAT_KILL9_DIR"
	killEnvLedger  = "EVCHAT_KILL9_LEDGER"
	killEnvRound   = "EVCHAT_KILL9_ROUND"
	killEnvCommits = "EVCHAT_KILL9_COMMITS"

	killTopicIn    = "kill9.in"
	killTopicOut   = "kill9.out"
	killTopicState = "kill9.state"
	killParts      = 4
	killInputs     = 60 // per round; a transaction takes at most 10
)

// TestEmbeddedTransactionsSurviveKill9 is the proof of issue 10: a
// transaction open when the process died never becomes visible, however
// many kills and restarts follow, and read-committed readers reach the
// end of every partition.
func TestEmbeddedTransactionsSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process per round")
	}
	dir := t.TempDir()
	ledger := filepath.Join(t.TempDir(), "committed")
	// Transactions each round commits before it opens one and is killed;
	// -1 kills the child as soon as its broker is up, before any client.
	plan := []int{3, 0, -1, 2, 0, 0, 4, -1, 1}
	for round, commits := range plan {
		aborted := runKillRound(t, dir, ledger, round, commits)
		// A start aborts what the previous process left open, and
		// its markers hold: the next start finds nothing open.
		switch {
		case round == 0 && aborted != 0:
			t.Errorf("round 0: %d transactions aborted on a new directory", aborted)
		case round > 0 && plan[round-1] >= 0 && aborted == 0:
			t.Errorf("round %d: the transaction round %d left open was not aborted", round, round-1)
		case round > 0 && plan[round-1] < 0 && aborted != 0:
			t.Errorf("round %d: %d transactions aborted again after round %d aborted them", round, aborted, round-1)
		}
	}

	// After the last kill (the broker loads by replaying its segments)
	// the same transactional id commits again, as a restarted fan-out
	// does; then after a clean close (the broker loads its snapshots).
	e, err := StartEmbedded(dir, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if e.AbortedAtStart() == 0 {
		t.Error("the transaction the last round left open was not aborted")
	}
	processKill9(t, e.Addrs(), ledger, len(plan), 3, false)
	committed := readLedger(t, ledger)
	checkCommitted(t, "after kill -9", e.Addrs(), committed, 1)
	e.Close()
	if e, err = StartEmbedded(dir, 0, false); err != nil {
		t.Fatal(err)
	}
	if n := e.AbortedAtStart(); n != 0 {
		t.Errorf("%d transactions aborted after a clean close", n)
	}
	checkCommitted(t, "after a clean close", e.Addrs(), committed, 2)
	e.Close()
}

// runKillRound starts the child and kills it with SIGKILL once it says
// a transaction is open (or, with commits < 0, once its broker is up). It
// returns how many transactions the child's broker aborted at its start.
func runKillRound(t *testing.T, dir, ledger string, round, commits int) (aborted int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestEmbeddedKill9Child$", "-test.v")
	cmd.Env = append(os.Environ(),
		killEnvDir+"="+dir,
		killEnvLedger+"="+ledger,
		killEnvRound+"="+strconv.Itoa(round),
		killEnvCommits+"="+strconv.Itoa(commits),
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	want := "KILL9 open"
	if commits < 0 {
		want = "KILL9 up"
	}
	seen := make(chan struct{})
	var out strings.Builder // written by the scanner until seen closes
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			if signalled {
				continue
			}
			out.WriteString(line + "\n")
			if n, ok := strings.CutPrefix(line, "KILL9 up "); ok {
				aborted, _ = strconv.Atoi(n)
			}
			if strings.HasPrefix(line, want) {
				signalled = true
				close(seen)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case <-seen:
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("round %d: the child never said %q\nstdout:\n%s\nstderr:\n%s", round, want, out.String(), stderr.String())
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("round %d: %d aborted at start, %d commits, then killed at %q", round, aborted, commits, want)
	return aborted
}

// TestEmbeddedKill9Child is the child of TestEmbeddedTransactionsSurviveKill9.
func TestEmbeddedKill9Child(t *testing.T) {
	dir := os.Getenv(killEnvDir)
	if dir == "" {
		t.Skip("run by TestEmbeddedTransactionsSurviveKill9")
	}
	round, _ := strconv.Atoi(os.Getenv(killEnvRound))
	commits, _ := strconv.Atoi(os.Getenv(killEnvCommits))

	e, err := StartEmbedded(dir, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("KILL9 up", e.AbortedAtStart())
	if commits < 0 {
		select {} // killed here
	}
	processKill9(t, e.Addrs(), os.Getenv(killEnvLedger), round, commits, true)
}

// processKill9 appends killInputs input records, then consumes them
// transactionally, like the fan-out, and commits the given number of
// transactions, appending their values to the ledger. Then, with open, it
// begins one more, writes its records, says "KILL9 open" and waits to be
// killed; without, it returns.
func processKill9(t *testing.T, addrs []string, ledger string, round, commits int, open bool) {
	t.Helper()
	ctx := context.Background()

	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	for _, topic := range []string{killTopicIn, killTopicOut, killTopicState} {
		r, err := adm.CreateTopic(ctx, killParts, 1, nil, topic)
		if err == nil {
			err = r.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			t.Fatal(err)
		}
	}
	var in []*kgo.Record
	for i := range killInputs {
		in = append(in, &kgo.Record{
			Topic: killTopicIn,
			Key:   []byte(fmt.Sprintf("k%d", i%13)),
			Value: []byte(fmt.Sprintf("r%d-i%d", round, i)),
		})
	}
	if err := cl.ProduceSync(ctx, in...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	f, err := os.OpenFile(ledger, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	cfg := Config{Brokers: addrs}
	sess, err := kgo.NewGroupTransactSession(cfg.ClientOpts(append(cfg.GroupOpts("kill9", "0"),
		kgo.TransactionalID("kill9-0"),
		kgo.TransactionTimeout(time.Minute),
		kgo.ConsumeTopics(killTopicIn),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RecordPartitioner(partitioner{killTopicState}),
	)...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for done := 0; ; {
		if done == commits && !open {
			return
		}
		fs := sess.PollRecords(ctx, 10)
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		if fs.NumRecords() == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			t.Fatal(err)
		}
		// Like the fan-out: an output per input record, keyed by
		// something else than the input (a recipient), and a state
		// change in the changelog partition of the input.
		var outs, values []string
		var recs []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			recs = append(recs,
				&kgo.Record{Topic: killTopicOut, Key: r.Value, Value: r.Value},
				&kgo.Record{Topic: killTopicState, Partition: r.Partition, Key: r.Key, Value: r.Value})
			values = append(values, string(r.Value))
		})
		produceErr := sess.ProduceSync(ctx, recs...).FirstErr()
		if done == commits && produceErr == nil {
			// The transaction's records are in the log; it stays open.
			fmt.Println("KILL9 open", strings.Join(values, " "))
			select {} // killed here
		}
		if produceErr != nil {
			t.Logf("produce: %v", produceErr)
		}
		ok, err := sess.End(ctx, kgo.TransactionEndTry(produceErr == nil))
		if err != nil || !ok {
			t.Logf("not committed: %v", err)
			continue
		}
		for _, v := range values {
			outs = append(outs, v+"\n")
		}
		if _, err := f.WriteString(strings.Join(outs, "")); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		done++
	}
}

// partitioner sends state records to the partition they carry and hashes
// the key of every other record.
type partitioner struct{ state string }

func (p partitioner) ForTopic(t string) kgo.TopicPartitioner {
	if t == p.state {
		return kgo.ManualPartitioner().ForTopic(t)
	}
	return kgo.StickyKeyPartitioner(nil).ForTopic(t)
}

func readLedger(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	committed := map[string]bool{}
	for _, v := range strings.Fields(string(b)) {
		if committed[v] {
			t.Errorf("the ledger holds %s twice: an input was committed twice", v)
		}
		committed[v] = true
	}
	return committed
}

// checkCommitted waits until no partition has an open transaction, then
// reads out and state read-committed from the start up to a sentinel
// appended to each partition (the sentinels-th), and holds what it reads
// to the ledger: every committed value once in each topic, nothing else.
func checkCommitted(t *testing.T, how string, addrs []string, committed map[string]bool, sentinels int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics := []string{killTopicIn, killTopicOut, killTopicState}
	for {
		stable, err1 := adm.ListCommittedOffsets(ctx, topics...)
		end, err2 := adm.ListEndOffsets(ctx, topics...)
		if err := errors.Join(err1, err2, stable.Error(), end.Error()); err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		open := 0
		end.Each(func(o kadm.ListedOffset) {
			if s, _ := stable.Lookup(o.Topic, o.Partition); s.Offset != o.Offset {
				open++
				t.Logf("%s: %s/%d: last stable offset %d, end %d", how, o.Topic, o.Partition, s.Offset, o.Offset)
			}
		})
		if open == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: the last stable offset never reached the end", how)
		case <-time.After(200 * time.Millisecond):
		}
	}

	sentinel := fmt.Sprintf("sentinel-%d", sentinels)
	var recs []*kgo.Record
	for _, topic := range topics[1:] {
		for p := range int32(killParts) {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: []byte(sentinel)})
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	rd, err := kgo.NewClient(
		kgo.SeedBrokers(addrs...),
		kgo.ConsumeTopics(topics[1:]...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxPartitionBytes(64<<10), // many fetches, not one
	)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	seen := map[string]map[string]int{}
	for _, topic := range topics[1:] {
		seen[topic] = map[string]int{}
	}
	reached := 0
	for reached < len(recs) {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: reached the sentinel of %d of %d partitions; read %d out, %d state, %d committed",
				how, reached, len(recs), len(seen[killTopicOut]), len(seen[killTopicState]), len(committed))
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("%s: fetch %s/%d: %v", how, topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			v := string(r.Value)
			if strings.HasPrefix(v, "sentinel-") {
				if v == sentinel {
					reached++
				}
				return
			}
			seen[r.Topic][v]++
		})
	}
	for _, topic := range topics[1:] {
		var missing, twice, uncommitted []string
		for v := range committed {
			if seen[topic][v] == 0 {
				missing = append(missing, v)
			}
		}
		for v, n := range seen[topic] {
			if n > 1 {
				twice = append(twice, fmt.Sprintf("%s×%d", v, n))
			}
			if !committed[v] {
				uncommitted = append(uncommitted, v)
			}
		}
		if len(missing)+len(twice)+len(uncommitted) > 0 {
			t.Errorf("%s: %s: %d committed values: %d missing %v; %d read twice %v; %d never committed %v",
				how, topic, len(committed), len(missing), missing, len(twice), twice, len(uncommitted), uncommitted)
		} else {
			t.Logf("%s: %s: every one of the %d committed values read once, nothing else", how, topic, len(committed))
		}
	}
}
