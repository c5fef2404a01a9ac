package cassandra

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/storetest"
	cql "github.com/evchat/evchat/schemas/cassandra"
)

// envAddr names the Cassandra node the integration tests use, as host:port.
const envAddr = "EVCHAT_CASSANDRA"

// testStore opens a store on a fresh keyspace, evchat_test_<random>,
// migrated, and drops the keyspace when tb ends. It skips tb when
// EVCHAT_CASSANDRA is unset.
func testStore(tb testing.TB) *Store {
	tb.Helper()
	s := unmigratedStore(tb)
	if err := s.Migrate(context.Background()); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return s
}

// unmigratedStore is testStore without the Migrate.
func unmigratedStore(tb testing.TB) *Store {
	tb.Helper()
	addr := os.Getenv(envAddr)
	if addr == "" {
		tb.Skipf("%s is unset: set it to a Cassandra node's host:port (bash deploy/cassandra.sh start; %s=127.0.0.1:9042) to run the tests against real Cassandra", envAddr, envAddr)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	cfg := Config{Hosts: []string{addr}, Keyspace: "evchat_test_" + hex.EncodeToString(b[:]), Timeout: 30 * time.Second}
	ctx := context.Background()
	s, err := Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("open %s: %v", addr, err)
	}
	tb.Cleanup(func() {
		if err := s.query(context.Background(), "DROP KEYSPACE IF EXISTS "+cfg.Keyspace).Exec(); err != nil {
			tb.Errorf("drop keyspace %s: %v", cfg.Keyspace, err)
		}
		s.Close()
	})
	return s
}

func TestContract(t *testing.T) {
	s := testStore(t)
	storetest.Run(t, func(*testing.T) store.Store { return s })
}

func BenchmarkStore(b *testing.B) {
	s := testStore(b)
	storetest.Bench(b, func(*testing.B) store.Store { return s })
}

func TestMigrateTwice(t *testing.T) {
	s := testStore(t)
	ctx := context.Background()
	type row struct {
		version   int
		name, sum string
		at        time.Time
	}
	applied := func() []row {
		t.Helper()
		var rows []row
		iter := s.query(ctx, "SELECT version, name, checksum, applied_at FROM "+s.cfg.Keyspace+".schema_migrations").Iter()
		var r row
		for iter.Scan(&r.version, &r.name, &r.sum, &r.at) {
			rows = append(rows, r)
		}
		if err := iter.Close(); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(rows, func(a, b row) int { return a.version - b.version })
		return rows
	}
	first := applied()
	ms, err := migrations(cql.FS, s.cfg.Keyspace)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != len(ms) {
		t.Fatalf("schema_migrations has %d rows, want one per file (%d)", len(first), len(ms))
	}
	u := store.User{ID: "u1", Name: "alice", PasswordHash: "h", CreatedAt: time.UnixMilli(1).UTC()}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if second := applied(); !slices.Equal(first, second) {
		t.Fatalf("second migrate changed schema_migrations:\n got %v\nwant %v", second, first)
	}
	if got, err := s.UserByName(ctx, u.Name); err != nil || got.ID != u.ID {
		t.Fatalf("data after the second migrate: %+v, %v", got, err)
	}

	// A recorded file that differs from the embedded one is refused.
	if err := s.query(ctx, "UPDATE "+s.cfg.Keyspace+".schema_migrations SET checksum = 'edited' WHERE version = 1").Exec(); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "different file") {
		t.Fatalf("migrate over an edited file: got %v, want an error", err)
	}
}

// TestMigrateFrom001 migrates a keyspace that has only version 1 to the
// newest schema.
func TestMigrateFrom001(t *testing.T) {
	s := unmigratedStore(t)
	ctx := context.Background()
	v1, err := fs.ReadFile(cql.FS, "001_init.cql")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.migrate(ctx, fstest.MapFS{"001_init.cql": {Data: v1}}); err != nil {
		t.Fatalf("migrate to version 1: %v", err)
	}
	versions := func() []int {
		t.Helper()
		var vs []int
		iter := s.query(ctx, "SELECT version FROM "+s.cfg.Keyspace+".schema_migrations").Iter()
		var v int
		for iter.Scan(&v) {
			vs = append(vs, v)
		}
		if err := iter.Close(); err != nil {
			t.Fatal(err)
		}
		slices.Sort(vs)
		return vs
	}
	if got := versions(); !slices.Equal(got, []int{1}) {
		t.Fatalf("versions after migrating to 1: %v", got)
	}
	if _, err := s.InboxByMessage(ctx, "u", 1, 1); err == nil || errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("InboxByMessage at version 1: got %v, want an error (no index by message table)", err)
	}
	e := store.InboxEntry{UserID: "u", Epoch: 1, Partition: 2, Offset: 7, Message: domain.InboxMessage{
		UserID: "u", ChannelID: "gx", MessageID: 1, SenderID: "v", Text: "hi", SentAt: time.UnixMilli(1).UTC(),
	}}
	// Data written at version 1 (by version-1 code: no version column)
	// is kept.
	if err := s.query(ctx, "INSERT INTO "+s.cfg.Keyspace+".channels (channel_id, kind, creator_id, members) VALUES (?, ?, ?, ?)",
		"gx", "group", "v", []string{"u", "v"}).Exec(); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate from version 1: %v", err)
	}
	ms, err := migrations(cql.FS, s.cfg.Keyspace)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]int, len(ms))
	for i, m := range ms {
		want[i] = m.version
	}
	if got := versions(); !slices.Equal(got, want) || len(got) < 2 {
		t.Fatalf("versions after migrating from 1: %v, want %v", got, want)
	}
	if c, err := s.Channel(ctx, "gx"); err != nil || c.Version != 0 || len(c.Members) != 2 {
		t.Fatalf("channel written at version 1: %+v, %v", c, err)
	}
	if err := s.Apply(ctx, store.Batch{Inbox: []store.InboxEntry{e}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.InboxByMessage(ctx, "u", 1, 1)
	if err != nil || got.Offset != 7 || got.Message.Text != "hi" {
		t.Fatalf("InboxByMessage after migrating: %+v, %v", got, err)
	}
}

func TestBucketsSkipEmpty(t *testing.T) {
	s := testStore(t)
	ctx := context.Background()
	// Three messages 1000 buckets apart: reads cross the empty buckets
	// between them through channel_buckets.
	ch := domain.ChannelID("gbuckets")
	var ms []store.Message
	for i := range 3 {
		off := int64(i) * 1000 << bucketShift
		ms = append(ms, store.Message{ChannelID: ch, Offset: off, MessageID: domain.MessageID(i + 1), SenderID: "a", Text: "t", SentAt: time.UnixMilli(int64(i)).UTC()})
	}
	if err := s.Apply(ctx, store.Batch{Messages: ms}); err != nil {
		t.Fatal(err)
	}
	var buckets []int64
	iter := s.query(ctx, s.q.selectBucketsUp, string(ch), int64(-1)).Iter()
	var b int64
	for iter.Scan(&b) {
		buckets = append(buckets, b)
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	if want := []int64{0, 1000, 2000}; !slices.Equal(buckets, want) {
		t.Fatalf("channel_buckets %v, want %v", buckets, want)
	}
	got, err := s.MessagesBefore(ctx, ch, 1<<62, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Offset != ms[2].Offset || got[2].Offset != 0 {
		t.Fatalf("MessagesBefore: %+v", got)
	}
}

func TestOpenUnreachable(t *testing.T) {
	if os.Getenv(envAddr) == "" {
		t.Skipf("%s is unset", envAddr)
	}
	// Nothing listens on port 1 of loopback.
	_, err := Open(context.Background(), Config{Hosts: []string{"127.0.0.1:1"}, Timeout: time.Second})
	if !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("Open of an unreachable node: got %v, want ErrUnavailable", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"Zero", Config{}, true},
		{"Full", Config{Hosts: []string{"a:9042", "b"}, Keyspace: "chat_1", Consistency: "quorum", SerialConsistency: "SERIAL",
			Timeout: time.Second, ReplicationFactor: 3, LocalDC: "dc-1", WriteConcurrency: 4, PageSize: 10}, true},
		{"EmptyHost", Config{Hosts: []string{""}}, false},
		{"KeyspaceInjection", Config{Keyspace: "x; DROP KEYSPACE y"}, false},
		{"KeyspaceDigitFirst", Config{Keyspace: "1x"}, false},
		{"KeyspaceTooLong", Config{Keyspace: strings.Repeat("k", 49)}, false},
		{"Consistency", Config{Consistency: "MOST"}, false},
		{"ConsistencyAny", Config{Consistency: "ANY"}, false},
		{"Serial", Config{SerialConsistency: "QUORUM"}, false},
		{"Timeout", Config{Timeout: -time.Second}, false},
		{"Replication", Config{ReplicationFactor: -1}, false},
		{"DC", Config{LocalDC: "dc'1"}, false},
		{"WriteConcurrency", Config{WriteConcurrency: -1}, false},
		{"PageSize", Config{PageSize: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, domain.ErrBadRequest) {
				t.Fatalf("Validate() = %v, want ErrBadRequest", err)
			}
		})
	}
}

func TestReplication(t *testing.T) {
	if got, want := (Config{}).withDefaults().replication(), "{'class': 'SimpleStrategy', 'replication_factor': 1}"; got != want {
		t.Errorf("default replication %s, want %s", got, want)
	}
	if got, want := (Config{LocalDC: "dc1", ReplicationFactor: 3}).replication(), "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"; got != want {
		t.Errorf("replication %s, want %s", got, want)
	}
}

func TestMigrations(t *testing.T) {
	ms, err := migrations(cql.FS, "ks")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].version != 1 || ms[0].name != "001_init.cql" {
		t.Fatalf("migrations: %+v", ms)
	}
	for _, m := range ms {
		for _, stmt := range m.statements {
			if strings.Contains(stmt, "${") || strings.Contains(stmt, ";") || strings.Contains(stmt, "--") {
				t.Errorf("%s: statement not split or substituted: %q", m.name, stmt)
			}
			if !strings.Contains(stmt, "IF NOT EXISTS") {
				t.Errorf("%s: statement is not idempotent: %q", m.name, stmt)
			}
		}
	}
	var tables []string
	for _, stmt := range ms[0].statements {
		if f := strings.Fields(stmt); len(f) > 5 && f[1] == "TABLE" {
			tables = append(tables, f[5])
		}
	}
	want := []string{"ks.users", "ks.users_by_name", "ks.send_reservations", "ks.positions", "ks.channels", "ks.user_channels",
		"ks.messages", "ks.channel_buckets", "ks.messages_by_id", "ks.inbox", "ks.inbox_buckets"}
	if !slices.Equal(tables, want) {
		t.Fatalf("tables %v, want %v", tables, want)
	}
}

func TestSplitStatements(t *testing.T) {
	got := splitStatements("-- a comment; with a semicolon\nCREATE TABLE a (\n  x int PRIMARY KEY\n);\n\n// another\nCREATE TABLE b (y int PRIMARY KEY);\nSELECT 1")
	want := []string{"CREATE TABLE a (\nx int PRIMARY KEY\n)", "CREATE TABLE b (y int PRIMARY KEY)", "SELECT 1"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestBucketOf(t *testing.T) {
	tests := []struct{ off, want int64 }{{0, 0}, {1<<20 - 1, 0}, {1 << 20, 1}, {-1, -1}, {5 << 20, 5}}
	for _, tt := range tests {
		if got := bucketOf(tt.off); got != tt.want {
			t.Errorf("bucketOf(%d) = %d, want %d", tt.off, got, tt.want)
		}
	}
}

func TestLastByKey(t *testing.T) {
	type kv struct{ k, v int }
	got := lastByKey([]kv{{1, 1}, {2, 1}, {1, 2}, {3, 1}, {2, 2}}, func(x kv) int { return x.k })
	if want := []kv{{1, 2}, {3, 1}, {2, 2}}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestOwnedTables checks that ResetProjection's table lists classify every
// table of the schema: each table is owned by at most one projection, and
// the tables no projection owns are the ones a reset must keep.
func TestOwnedTables(t *testing.T) {
	ms, err := migrations(cql.FS, "ks")
	if err != nil {
		t.Fatal(err)
	}
	kept := []string{"users", "users_by_name", "send_reservations", "send_marks", "send_decisions", "push_reservations", "revoked_sessions", "positions", "channels", "user_channels"}
	owner := map[string]string{}
	for projection, tables := range ownedTables {
		for _, table := range tables {
			if o, ok := owner[table]; ok {
				t.Errorf("table %s is owned by both %s and %s: a TRUNCATE would delete the other's state", table, o, projection)
			}
			if slices.Contains(kept, table) {
				t.Errorf("table %s, owned by %s, must never be truncated", table, projection)
			}
			owner[table] = projection
		}
	}
	seen := map[string]bool{}
	for _, m := range ms {
		for _, stmt := range m.statements {
			f := strings.Fields(stmt)
			if len(f) < 6 || f[0] != "CREATE" || f[1] != "TABLE" {
				continue
			}
			table := strings.TrimPrefix(strings.TrimSuffix(f[5], "("), "ks.")
			seen[table] = true
			if _, ok := owner[table]; !ok && !slices.Contains(kept, table) {
				t.Errorf("%s: table %s is neither owned by a projection nor kept by a reset: add it to ownedTables or to this test", m.name, table)
			}
		}
	}
	for table := range owner {
		if !seen[table] {
			t.Errorf("ownedTables names %s, which the schema does not create", table)
		}
	}
}

// TestInboxByMessageBefore009 checks that InboxByMessage still finds the
// entries stored before inbox_by_message_span (schema version 009), whose
// index rows are only in inbox_by_message, and that the lowest offset
// wins there too.
func TestInboxByMessageBefore009(t *testing.T) {
	s := testStore(t)
	ctx := context.Background()
	const u, epoch = domain.UserID("old"), int32(1)
	id := domain.MessageID(7) << 50
	at := time.UnixMilli(1).UTC()
	entry := func(off int64) store.InboxEntry {
		return store.InboxEntry{UserID: u, Epoch: epoch, Offset: off, Message: domain.InboxMessage{UserID: u, ChannelID: "c", MessageID: id, SenderID: "a", SentAt: at}}
	}
	if err := s.Apply(ctx, store.Batch{Inbox: []store.InboxEntry{entry(40), entry(30)}}); err != nil {
		t.Fatal(err)
	}
	// As the code before 009 wrote them: the index rows in inbox_by_message.
	if err := s.query(ctx, "DELETE FROM "+s.cfg.Keyspace+".inbox_by_message_span WHERE user_id = ? AND epoch = ? AND span = ?", string(u), epoch, spanOf(id)).Exec(); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{40, 30} {
		if err := s.query(ctx, "INSERT INTO "+s.cfg.Keyspace+".inbox_by_message (user_id, epoch, message_id, log_offset) VALUES (?, ?, ?, ?)", string(u), epoch, int64(id), off).Exec(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.InboxByMessage(ctx, u, epoch, id)
	if err != nil || got.Offset != 30 {
		t.Fatalf("InboxByMessage of an entry indexed before 009: offset %d, %v; want 30", got.Offset, err)
	}
	if _, err := s.InboxByMessage(ctx, u, epoch, id+1); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("InboxByMessage of a message in no inbox: %v, want not found", err)
	}
}
