package cassandra

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/gocql/gocql"

	"github.com/evchat/evchat/domain"
)

// Config configures Open. The zero value connects to a single local node;
// each field documents the default its zero value stands for.
type Config struct {
	// Hosts are the contact points, "host" or "host:port". Default
	// ["127.0.0.1:9042"].
	Hosts []string
	// Keyspace is the keyspace of every table: letters, digits and
	// underscores, starting with a letter, at most 48 characters. Default
	// "evchat".
	Keyspace string
	// Consistency is the consistency of reads and writes, a name such as
	// "LOCAL_QUORUM", "QUORUM" or "ONE". Default "LOCAL_QUORUM".
	Consistency string
	// SerialConsistency is the consistency of the Paxos phase of
	// lightweight transactions: "LOCAL_SERIAL" or "SERIAL". Default
	// "LOCAL_SERIAL".
	SerialConsistency string
	// Timeout bounds connecting and each request. Default 5s.
	Timeout time.Duration
	// ReplicationFactor is the keyspace's replication factor when Migrate
	// creates it (an existing keyspace is left alone). Default 1, which is
	// right for one node only.
	ReplicationFactor int
	// LocalDC is the name of the local data center. When set, requests go
	// to its nodes first and Migrate creates the keyspace with
	// NetworkTopologyStrategy {LocalDC: ReplicationFactor}; when empty,
	// requests go round robin to every node and the keyspace uses
	// SimpleStrategy. Default "".
	LocalDC string
	// Username and Password, when Username is set, log in with Cassandra's
	// PasswordAuthenticator. Default: no authentication.
	Username string
	Password string
	// WriteConcurrency is the most requests one Apply has in flight.
	// Default 32.
	WriteConcurrency int
	// PageSize is the most rows fetched per page by reads that may be long.
	// Default 500.
	PageSize int
	// Logger receives the driver's messages (connection failures and the
	// like) at level Warn. Nil discards them.
	Logger *slog.Logger
}

// Defaults of Config's zero fields.
const (
	DefaultHost              = "127.0.0.1:9042"
	DefaultKeyspace          = "evchat"
	DefaultConsistency       = "LOCAL_QUORUM"
	DefaultSerialConsistency = "LOCAL_SERIAL"
	DefaultTimeout           = 5 * time.Second
	DefaultReplicationFactor = 1
	DefaultWriteConcurrency  = 32
	DefaultPageSize          = 500
)

var (
	keyspaceRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,47}$`)
	dcRE       = regexp.MustCompile(`^[A-Za-z0-9_.\-]+$`)
)

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if len(c.Hosts) == 0 {
		c.Hosts = []string{DefaultHost}
	}
	if c.Keyspace == "" {
		c.Keyspace = DefaultKeyspace
	}
	if c.Consistency == "" {
		c.Consistency = DefaultConsistency
	}
	if c.SerialConsistency == "" {
		c.SerialConsistency = DefaultSerialConsistency
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.WriteConcurrency == 0 {
		c.WriteConcurrency = DefaultWriteConcurrency
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports settings that make no sense. Zero fields are valid: they
// stand for their defaults.
func (c Config) Validate() error {
	_, _, err := c.withDefaults().parse()
	return err
}

// parse validates a defaulted config and returns its consistencies.
func (c Config) parse() (gocql.Consistency, gocql.SerialConsistency, error) {
	bad := func(format string, args ...any) error {
		return domain.Errorf(domain.CodeBadRequest, "cassandra: config: "+format, args...)
	}
	for _, h := range c.Hosts {
		if strings.TrimSpace(h) == "" {
			return 0, 0, bad("empty host")
		}
	}
	if !keyspaceRE.MatchString(c.Keyspace) {
		return 0, 0, bad("keyspace %q: want a letter, then letters, digits or underscores, at most 48", c.Keyspace)
	}
	cons, err := gocql.ParseConsistencyWrapper(strings.ToUpper(c.Consistency))
	if err != nil {
		return 0, 0, bad("consistency %q: %v", c.Consistency, err)
	}
	if cons == gocql.Any {
		return 0, 0, bad("consistency ANY cannot read")
	}
	var serial gocql.SerialConsistency
	if err := serial.UnmarshalText([]byte(strings.ToUpper(c.SerialConsistency))); err != nil {
		return 0, 0, bad("serial consistency %q: want SERIAL or LOCAL_SERIAL", c.SerialConsistency)
	}
	if c.Timeout < 0 {
		return 0, 0, bad("timeout %v is negative", c.Timeout)
	}
	if c.ReplicationFactor < 1 {
		return 0, 0, bad("replication factor %d: want at least 1", c.ReplicationFactor)
	}
	if c.LocalDC != "" && !dcRE.MatchString(c.LocalDC) {
		return 0, 0, bad("local data center %q: want letters, digits, '_', '.' or '-'", c.LocalDC)
	}
	if c.WriteConcurrency < 1 {
		return 0, 0, bad("write concurrency %d: want at least 1", c.WriteConcurrency)
	}
	if c.PageSize < 1 {
		return 0, 0, bad("page size %d: want at least 1", c.PageSize)
	}
	return cons, serial, nil
}

// replication returns the keyspace's replication map in CQL.
func (c Config) replication() string {
	if c.LocalDC != "" {
		return fmt.Sprintf("{'class': 'NetworkTopologyStrategy', '%s': %d}", c.LocalDC, c.ReplicationFactor)
	}
	return fmt.Sprintf("{'class': 'SimpleStrategy', 'replication_factor': %d}", c.ReplicationFactor)
}

// driverLogger sends gocql's messages to slog.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) {
	l.log.Warn(strings.TrimSuffix(fmt.Sprint(v...), "\n"), "component", "gocql")
}
func (l driverLogger) Printf(format string, v ...any) {
	l.log.Warn(strings.TrimSuffix(fmt.Sprintf(format, v...), "\n"), "component", "gocql")
}
func (l driverLogger) Println(v ...any) {
	l.log.Warn(strings.TrimSuffix(fmt.Sprintln(v...), "\n"), "component", "gocql")
}
