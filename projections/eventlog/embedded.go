package eventlog

import (
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is the in-process Kafka-protocol broker of the single-process
// mode: franz-go's kfake, persisting to a directory. Every batch is written
// to its file before it is acknowledged, so an acknowledged append survives
// kill -9; with fsync it also survives a power loss, at a cost in
// throughput (a real cluster gets the same from replication instead).
type Embedded struct {
	c *kfake.Cluster
}

// StartEmbedded starts the broker on 127.0.0.1:port (0 picks a free port)
// with its data in dir ("" keeps it in memory, for tests), fsyncing every
// batch when fsync is set.
func StartEmbedded(dir string, port int, fsync bool) (*Embedded, error) {
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": strconv.Itoa(15 * 60 * 1000)}),
	}
	if dir != "" {
		opts = append(opts, kfake.DataDir(dir))
		if fsync {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("eventlog: embedded broker: %w", err)
	}
	return &Embedded{c: c}, nil
}

// Addrs returns the broker's host:port addresses.
func (e *Embedded) Addrs() []string { return e.c.ListenAddrs() }

// Close stops the broker, flushing its data.
func (e *Embedded) Close() { e.c.Close() }
