package node_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/cmd/internal/node"
)

// TestDefaultPartitions: with no --partitions, the topics a node creates
// have 2 partitions on the embedded broker and 8 on Kafka; a number given
// is kept.
func TestDefaultPartitions(t *testing.T) {
	cases := []struct {
		name  string
		kafka bool
		set   int
		want  int
	}{
		{"embedded", false, 0, node.DefaultPartitionsEmbedded},
		{"embedded, given", false, 3, 3},
		{"kafka", true, 0, node.DefaultPartitionsKafka},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Partitions = c.set
			var brokers []string
			if c.kafka {
				k := os.Getenv("EVCHAT_KAFKA")
				if k == "" {
					t.Skip("EVCHAT_KAFKA not set: the real Kafka is proved in deploy/test.sh's run")
				}
				brokers = strings.Split(k, ",")
				cfg.Kafka = brokers
				cfg.TopicPrefix = fmt.Sprintf("parts%d", os.Getpid())
			} else {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				cfg.EmbeddedKafkaPort = l.Addr().(*net.TCPAddr).Port
				l.Close()
				brokers = []string{l.Addr().String()}
			}
			runNode(t, cfg)
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			topic := cfg.TopicPrefix + ".channels"
			md, err := kadm.NewClient(cl).Metadata(context.Background(), topic)
			if err != nil {
				t.Fatal(err)
			}
			td, ok := md.Topics[topic]
			if !ok || td.Err != nil {
				t.Fatalf("topic %s: %v (topics %v)", topic, td.Err, md.Topics.Names())
			}
			if got := len(td.Partitions); got != c.want {
				t.Fatalf("%s has %d partitions, want %d", topic, got, c.want)
			}
		})
	}
}
