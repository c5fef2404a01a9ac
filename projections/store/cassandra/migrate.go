package cassandra

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	cql "github.com/evchat/evchat/schemas/cassandra"
)

// migration is one versioned CQL file.
type migration struct {
	version    int
	name       string
	statements []string
	checksum   string // of the file as embedded, before substitution
}

var migrationName = regexp.MustCompile(`^(\d+)_[a-z0-9_]+\.cql$`)

// migrations reads the versioned CQL files of fsys, in version order, with
// the keyspace substituted.
func migrations(fsys fs.FS, keyspace string) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.cql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		sub := migrationName.FindStringSubmatch(name)
		if sub == nil {
			return nil, fmt.Errorf("schema file %s: want NNN_name.cql", name)
		}
		v, err := strconv.Atoi(sub[1])
		if err != nil || v < 1 {
			return nil, fmt.Errorf("schema file %s: bad version", name)
		}
		text, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(text)
		ms = append(ms, migration{
			version:    v,
			name:       name,
			statements: splitStatements(strings.ReplaceAll(string(text), "${keyspace}", keyspace)),
			checksum:   hex.EncodeToString(sum[:]),
		})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("schema files %s and %s have one version", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// splitStatements splits CQL text into statements: comment lines (starting
// with "--" or "//") are dropped, and a statement ends with a line that ends
// with a semicolon.
func splitStatements(text string) []string {
	var (
		stmts []string
		cur   strings.Builder
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "--") || strings.HasPrefix(line, "//") {
			continue
		}
		if cur.Len() > 0 {
			cur.WriteByte('\n')
		}
		cur.WriteString(line)
		if strings.HasSuffix(line, ";") {
			stmts = append(stmts, strings.TrimSuffix(cur.String(), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		stmts = append(stmts, s)
	}
	return stmts
}

// Migrate brings the keyspace to the newest schema: it creates the keyspace
// (with Config.ReplicationFactor and Config.LocalDC) and the
// schema_migrations table if they are missing, then applies, in version
// order, each embedded CQL file of schemas/cassandra that
// schema_migrations does not list, and records it there. Applied versions
// are skipped, so a second Migrate does nothing. Every statement is
// idempotent, so a Migrate that stopped half way may be run again.
//
// A file that differs from the one recorded as applied is an error: applied
// files are never edited; changes go in a new version. Run Migrate from one
// process at a time, as a deployment step: concurrent schema changes of one
// table can leave the cluster's schema in disagreement.
func (s *Store) Migrate(ctx context.Context) error { return s.migrate(ctx, cql.FS) }

// migrate is Migrate with the CQL files of fsys.
func (s *Store) migrate(ctx context.Context, fsys fs.FS) error {
	ks := s.cfg.Keyspace
	ms, err := migrations(fsys, ks)
	if err != nil {
		return fmt.Errorf("cassandra: migrate: %w", err)
	}
	ddl := []string{
		fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s AND durable_writes = true", ks, s.cfg.replication()),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.schema_migrations (
    version    int PRIMARY KEY,
    name       text,
    checksum   text,
    applied_at timestamp
)`, ks),
	}
	for _, stmt := range ddl {
		if err := s.schema(ctx, stmt); err != nil {
			return fail("migrate", err)
		}
	}
	applied := map[int]string{}
	iter := s.query(ctx, fmt.Sprintf("SELECT version, checksum FROM %s.schema_migrations", ks)).Iter()
	var (
		v   int
		sum string
	)
	for iter.Scan(&v, &sum) {
		applied[v] = sum
	}
	if err := iter.Close(); err != nil {
		return fail("migrate: read applied versions", err)
	}
	record := fmt.Sprintf("INSERT INTO %s.schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)", ks)
	for _, m := range ms {
		if sum, ok := applied[m.version]; ok {
			if sum != m.checksum {
				return fmt.Errorf("cassandra: migrate: %s was applied as a different file (checksum %s, now %s): add a new version instead of editing it", m.name, sum, m.checksum)
			}
			continue
		}
		for _, stmt := range m.statements {
			if err := s.schema(ctx, stmt); err != nil {
				return fail(fmt.Sprintf("migrate: %s: %.60q", m.name, stmt), err)
			}
		}
		if err := s.query(ctx, record, m.version, m.name, m.checksum, time.Now().UTC()).Exec(); err != nil {
			return fail("migrate: record "+m.name, err)
		}
	}
	if err := s.session.AwaitSchemaAgreement(ctx); err != nil {
		return fail("migrate: schema agreement", err)
	}
	return nil
}

// schema runs one statement of Migrate. A schema change on a busy node can
// outlast Config.Timeout (CI saw "no response received from cassandra
// within timeout period" for a CREATE TABLE while other test suites shared
// the node), and every statement of Migrate is idempotent, so one that
// fails as unavailable is run again, schemaAttempts times at most, while
// ctx lasts.
func (s *Store) schema(ctx context.Context, stmt string) error {
	return retryUnavailable(ctx, schemaAttempts, time.Second, func() error { return s.query(ctx, stmt).Exec() })
}

// schemaAttempts bounds the runs of one schema statement: with the default
// 5 s timeout and waits of 1, 2, 4, 8 and 8 s, about a minute.
const schemaAttempts = 6

// retryUnavailable calls do until it succeeds, fails otherwise than as
// unavailable, has been called attempts times or ctx ends; it waits wait
// after the first failure, twice that after the next, up to 8 s. It
// returns do's last error.
func retryUnavailable(ctx context.Context, attempts int, wait time.Duration, do func() error) error {
	for i := 1; ; i++ {
		err := do()
		if err == nil || !unavailable(err) || i >= attempts || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 8*time.Second)
	}
}
