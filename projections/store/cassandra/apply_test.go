package cassandra

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
)

// partitionOf names the partition a statement of an Apply writes to, from
// its table and partition key, independently of how chains count them.
func partitionOf(t *testing.T, q queries, st stmt) string {
	t.Helper()
	keys := map[string]struct {
		table string
		n     int // the partition key's columns, the statement's first
	}{
		q.insertChannelBucket:  {"channel_buckets", 1},
		q.insertMessage:        {"messages", 2},
		q.insertMessageID:      {"messages_by_id", 2},
		q.insertInboxBucket:    {"inbox_buckets", 2},
		q.insertInbox:          {"inbox", 3},
		q.insertInboxByMessage: {"inbox_by_message_span", 3},
	}
	k, ok := keys[st.q]
	if !ok {
		t.Fatalf("statement of no known table: %s", st.q)
	}
	return fmt.Sprint(k.table, st.args[:k.n])
}

// TestRounds checks the requests an Apply sends: each within Cassandra's
// batch limits, every statement once, a chain's buckets one after another
// and its rows in offset order, and far fewer requests than chains.
func TestRounds(t *testing.T) {
	s := &Store{q: newQueries("ks")}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var chains []chain
	// 400 users with one inbox entry each, as a busy projection's batch has.
	for i := range 400 {
		chains = append(chains, s.inboxChains([]store.InboxEntry{{
			UserID: domain.UserID(fmt.Sprint("u", i)), Offset: 10,
			Message: domain.InboxMessage{ChannelID: "c", MessageID: domain.MessageID(i + 1), SentAt: at},
		}})...)
	}
	// 40 channels with a 1 KB message each.
	for i := range 40 {
		chains = append(chains, s.messageChain([]store.Message{{
			ChannelID: domain.ChannelID(fmt.Sprint("c", i)), Offset: 7, MessageID: domain.MessageID(1000 + i),
			Text: strings.Repeat("x", 1000), SentAt: at,
		}}))
	}
	// An inbox whose entries cross a bucket, and a channel with a 100 KB
	// message among 100 small ones.
	var cross []store.InboxEntry
	for off := int64(1<<20 - 30); off < 1<<20+30; off++ {
		cross = append(cross, store.InboxEntry{UserID: "cross", Offset: off,
			Message: domain.InboxMessage{ChannelID: "c", MessageID: domain.MessageID(off), SentAt: at}})
	}
	chains = append(chains, s.inboxChains(cross)...)
	var big []store.Message
	for off := range int64(101) {
		text := "small"
		if off == 50 {
			text = strings.Repeat("y", 100_000)
		}
		big = append(big, store.Message{ChannelID: "big", Offset: off, MessageID: domain.MessageID(5000 + off), Text: text, SentAt: at})
	}
	chains = append(chains, s.messageChain(big))

	want := 0
	for _, c := range chains {
		for _, u := range c.units {
			want += len(u.stmts)
		}
	}
	got, requests := 0, 0
	type place struct{ round, bucket int64 }
	last := map[string]place{} // by the partition of a bucket's rows' chain
	lastOffset := map[string]int64{}
	for r, units := range rounds(chains) {
		requests += len(units)
		for _, u := range units {
			parts, bytes := map[string]bool{}, 0
			for _, st := range u.stmts {
				parts[partitionOf(t, s.q, st)] = true
				bytes += st.size
			}
			got += len(u.stmts)
			switch {
			case len(u.stmts) > maxBatchRows:
				t.Errorf("round %d: a request of %d statements, over %d", r, len(u.stmts), maxBatchRows)
			case len(parts) == 1 && bytes > maxBatchBytes:
				t.Errorf("round %d: a one-partition request of %d bytes", r, bytes)
			case len(parts) > 1 && (len(parts) > maxBatchPartitions || bytes > maxPackedBytes):
				t.Errorf("round %d: a request over %d partitions of %d bytes, over Cassandra's limits", r, len(parts), bytes)
			}
			for _, st := range u.stmts {
				var chainKey string
				var off, bucket int64
				switch st.q {
				case s.q.insertInbox:
					chainKey, bucket, off = fmt.Sprint("inbox", st.args[0]), st.args[2].(int64), st.args[3].(int64)
				case s.q.insertMessage:
					chainKey, bucket, off = fmt.Sprint("messages", st.args[0]), st.args[1].(int64), st.args[2].(int64)
				default:
					continue
				}
				if p, ok := last[chainKey]; ok {
					if bucket != p.bucket && int64(r) <= p.round {
						t.Errorf("%s: bucket %d in round %d, with bucket %d's rows", chainKey, bucket, r, p.bucket)
					}
					if off <= lastOffset[chainKey] {
						t.Errorf("%s: offset %d after %d", chainKey, off, lastOffset[chainKey])
					}
				}
				last[chainKey], lastOffset[chainKey] = place{int64(r), bucket}, off
			}
		}
	}
	if got != want {
		t.Errorf("%d statements sent, want %d", got, want)
	}
	if requests > len(chains)/2 {
		t.Errorf("%d requests for %d chains: chains are not packed together", requests, len(chains))
	}
	t.Logf("%d statements of %d chains in %d requests", got, len(chains), requests)
}

// TestInboxIndexPartitions checks that the index rows by message of a
// user's inbox entries in one Apply share a partition, not one each: 8
// entries of one user (message ids of one span) write three partitions,
// the user's bucket index, its bucket and the index's span, and 8 entries
// whose ids lie in two spans, four.
func TestInboxIndexPartitions(t *testing.T) {
	s := &Store{q: newQueries("ks")}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	base := domain.MessageID(7) << 50 // a sonyflake id of some day
	for _, c := range []struct {
		name  string
		step  domain.MessageID // between consecutive message ids
		parts int
	}{
		{"one span", 1 << 24, 3},  // 8 ids 10 ms apart
		{"two spans", 1 << 38, 4}, // 8 ids 2.7 minutes apart, crossing into the next span
	} {
		var entries []store.InboxEntry
		for i := range 8 {
			entries = append(entries, store.InboxEntry{UserID: "u", Epoch: 1, Offset: int64(100 + i),
				Message: domain.InboxMessage{ChannelID: "c", MessageID: base + domain.MessageID(i)*c.step, SentAt: at}})
		}
		parts := map[string]bool{}
		indexed := 0
		for _, units := range rounds(s.inboxChains(entries)) {
			for _, u := range units {
				for _, st := range u.stmts {
					parts[partitionOf(t, s.q, st)] = true
					if st.q == s.q.insertInboxByMessage {
						indexed++
					}
				}
			}
		}
		if len(parts) != c.parts || indexed != len(entries) {
			t.Errorf("%s: %d entries of one user wrote %d index rows to %d partitions, want %d rows to %d: %v", c.name, len(entries), indexed, len(parts), len(entries), c.parts, parts)
		}
	}
}

// BenchmarkRequestCost measures what a Cassandra node spends on the kinds
// of request the store sends: one row per request, rows packed into batches
// over 3 and 10 partitions (as Apply sends them), a lightweight transaction
// (as ReservePush) and a point read (of a row that is not there). With
// EVCHAT_CASSANDRA_PID set to the node's process id (bash deploy/cassandra.sh writes it to
// $EVCHAT_RUN/cassandra/cassandra.pid) it reports the node's CPU per row,
// from /proc; 32 requests are in flight, as Apply has by default.
//
//	EVCHAT_CASSANDRA=127.0.0.1:9042 EVCHAT_CASSANDRA_PID=$(cat /tmp/evchat-servers/cassandra/cassandra.pid) \
//	  go test -run x -bench RequestCost -benchtime 20000x ./projections/store/cassandra/
func BenchmarkRequestCost(b *testing.B) {
	s := testStore(b)
	ctx := context.Background()
	if err := s.query(ctx, "CREATE TABLE "+s.cfg.Keyspace+".bench (u text, id bigint, off bigint, PRIMARY KEY ((u, id), off))").Exec(); err != nil {
		b.Fatal(err)
	}
	insert := "INSERT INTO " + s.cfg.Keyspace + ".bench (u, id, off) VALUES (?, ?, ?)"
	var run atomic.Int64 // keeps the rows of each sub-benchmark apart
	for _, c := range []struct {
		name string
		rows int // per request
		q    string
		cas  bool
	}{
		{"one-row", 1, insert, false},
		{"batch-3", 3, insert, false},
		{"batch-10", 10, insert, false},
		{"lwt", 1, insert + " IF NOT EXISTS", true},
		{"read", 1, "SELECT off FROM " + s.cfg.Keyspace + ".bench WHERE u = ? AND id = ? AND off = ?", false},
	} {
		b.Run(c.name, func(b *testing.B) {
			base := run.Add(1) << 40
			cpu0 := serverCPU(b)
			b.ResetTimer()
			var next atomic.Int64
			g := newGroup(ctx, 32)
			for range b.N {
				g.do(func(ctx context.Context) error {
					n := base + next.Add(1)*int64(c.rows)
					if c.rows == 1 {
						q := s.query(ctx, c.q, fmt.Sprint("u", n%500), n, n)
						if c.cas {
							_, err := q.SerialConsistency(s.serial).MapScanCAS(map[string]any{})
							return err
						}
						if strings.HasPrefix(c.q, "SELECT") {
							err := q.Scan(new(int64))
							if errors.Is(err, gocql.ErrNotFound) {
								err = nil
							}
							return err
						}
						return q.Exec()
					}
					batch := s.session.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
					for i := range int64(c.rows) {
						batch.Query(c.q, fmt.Sprint("u", (n+i)%500), n+i, n+i)
					}
					return s.session.ExecuteBatch(batch)
				})
			}
			if err := g.wait(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			rows := float64(b.N * c.rows)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/rows, "ns/row")
			if cpu0 >= 0 {
				b.ReportMetric((serverCPU(b)-cpu0)*1e6/rows, "server-µs/row")
			}
		})
	}
}

// serverCPU returns the CPU seconds the process EVCHAT_CASSANDRA_PID names
// has used, or -1 if it is unset.
func serverCPU(b *testing.B) float64 {
	pid := os.Getenv("EVCHAT_CASSANDRA_PID")
	if pid == "" {
		return -1
	}
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		b.Fatalf("EVCHAT_CASSANDRA_PID: %v", err)
	}
	// The command name may hold spaces: the fields after it start past ')'.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatalf("%s's /proc stat: %v", pid, err)
	}
	return (utime + stime) / 100 // clock ticks, 100 a second on Linux
}
