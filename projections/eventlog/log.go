package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/evchat/evchat/domain"
)

// Config says where the log is and how its topics are made.
type Config struct {
	// Brokers are the seed brokers. Required.
	Brokers []string
	// Prefix starts every topic name. Default "chat".
	Prefix string
	// InboxEpoch is the epoch of the inbox topics (the fan-out's output).
	// Default 1. A running node learns it from the epochs topic.
	InboxEpoch int32
	// PresenceEpoch is the epoch of the presence topics. Default 1.
	PresenceEpoch int32
	// Partitions is the partition count of each topic created at start.
	// Default 8. Channels and FanoutState must keep equal counts.
	Partitions int32
	// ReplicationFactor of created topics. Default -1: the broker's default.
	ReplicationFactor int16
	// DeliveryTimeout bounds how long an Appender keeps trying to write one
	// record (kgo.RecordDeliveryTimeout, Kafka's delivery.timeout.ms): after
	// it the record fails and is not sent again, so an append started more
	// than DeliveryTimeout ago (and a request on its way then) can no longer
	// land. Default DefaultDeliveryTimeout.
	DeliveryTimeout time.Duration
	// Logger receives the client's logs at warn and above. Default: discard.
	Logger *slog.Logger
	// Lag, if set, tracks the projections' lag.
	Lag *Lag
	// Dial, if set, opens the clients' connections to the brokers
	// (kgo.Dialer): the embedded broker's Dial, which connects the
	// clients of its process in memory. Default: TCP.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DefaultDeliveryTimeout is Config.DeliveryTimeout's default.
const DefaultDeliveryTimeout = 5 * time.Second

func (c Config) withDefaults() Config {
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = DefaultDeliveryTimeout
	}
	if c.Prefix == "" {
		c.Prefix = "chat"
	}
	if c.Partitions == 0 {
		c.Partitions = 8
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.InboxEpoch == 0 {
		c.InboxEpoch = 1
	}
	if c.PresenceEpoch == 0 {
		c.PresenceEpoch = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("eventlog: no brokers")
	}
	if c.Partitions < 0 {
		return fmt.Errorf("eventlog: partitions %d < 0", c.Partitions)
	}
	if c.DeliveryTimeout < 0 {
		return fmt.Errorf("eventlog: delivery timeout %s < 0", c.DeliveryTimeout)
	}
	return nil
}

// Topics returns the topic names of this config.
func (c Config) Topics() Topics {
	c = c.withDefaults()
	return NewTopics(c.Prefix, c.InboxEpoch, c.PresenceEpoch)
}

// Group returns the consumer group (and transactional id stem) of a role:
// the topic prefix and the role's name, so deployments that share a
// cluster under different prefixes never share a group.
func (c Config) Group(role string) string {
	return c.withDefaults().Prefix + "." + role
}

// GroupOpts returns the options of a role's consumer group member: the
// group, static membership under the process's instance id (a restarted
// process takes its partitions back at once instead of waiting for its
// dead predecessor's session to expire), and a 10 s session timeout so
// partitions of a process that does not return move within seconds.
func (c Config) GroupOpts(role, instance string) []kgo.Opt {
	if instance == "" {
		instance = "0"
	}
	return []kgo.Opt{
		kgo.ConsumerGroup(c.Group(role)),
		kgo.InstanceID(c.Group(role) + "-" + instance),
		kgo.SessionTimeout(10 * time.Second),
		kgo.HeartbeatInterval(time.Second),
	}
}

// Epoch returns the inbox epoch.
func (c Config) Epoch() int32 { return c.withDefaults().InboxEpoch }

// WithEpoch returns the config with an output's epoch set.
func (c Config) WithEpoch(output string, epoch int32) Config {
	switch output {
	case domain.OutputInbox:
		c.InboxEpoch = epoch
	case domain.OutputPresence:
		c.PresenceEpoch = epoch
	}
	return c
}

// Epoched names what belongs to one epoch of an output: a projection's
// positions, a consumer group, a role ("fanout.e2").
func Epoched(name string, epoch int32) string { return fmt.Sprintf("%s.e%d", name, max(epoch, 1)) }

// metadataMinAge is the least time between two metadata loads of a client.
const metadataMinAge = 250 * time.Millisecond

// ClientOpts returns the options every client of the chat starts from:
// the seed brokers, acks from all in-sync replicas with the idempotent
// producer (franz-go's defaults, stated here so nobody turns them off),
// read-committed fetches (the fan-out writes in transactions), and slog.
func (c Config) ClientOpts(extra ...kgo.Opt) []kgo.Opt {
	c = c.withDefaults()
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ProducerLinger(0),
		kgo.FetchMaxWait(200 * time.Millisecond),
		// A client loads a topic's metadata when it first produces to
		// it, and no sooner than MetadataMinAge after its last load
		// (franz-go's default 5 s): the sends processor's and the
		// fan-out's first produces to the channel, replies and inbox
		// topics waited up to that long on real Kafka, and every send
		// with them (perf.sh rate real: acknowledgements stood still
		// for 2 to 5 s a second after the load began, in 7 of 9 runs;
		// with 100 ms, in none of 2).
		kgo.MetadataMinAge(metadataMinAge),
		kgo.WithLogger(kslog.New(slog.New(quiet{c.Logger.Handler()}))),
	}
	if c.Dial != nil {
		opts = append(opts, kgo.Dialer(c.Dial))
	}
	return append(opts, extra...)
}

// Gather returns the options of a consumer that no reader waits on: each
// fetch waits up to wait for records (up to 1 MiB of them) instead of
// coming back with the first, so the consumer wakes, decodes and writes
// its batch a few times a second rather than once per record or
// transaction its input gets. Zero wait returns no options (the
// consumer's fetches come back as soon as there is anything).
func Gather(wait time.Duration) []kgo.Opt {
	if wait <= 0 {
		return nil
	}
	return []kgo.Opt{kgo.FetchMinBytes(1 << 20), kgo.FetchMaxWait(wait)}
}

// GatherWait is how long the consumers that no reader waits on (cursors,
// the logouts tail) let their fetches gather records.
const GatherWait = 100 * time.Millisecond

// replyRetention is how long the replies topic keeps an answer: an hour.
var replyRetention = "3600000"

// EnsureTopics creates every topic that does not exist yet.
func EnsureTopics(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	cl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		return fmt.Errorf("eventlog: client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	compact := "compact"
	topics := cfg.Topics()
	for _, name := range topics.All() {
		var configs map[string]*string
		if slices.Contains(topics.Compacted(), name) {
			configs = map[string]*string{"cleanup.policy": &compact}
		}
		if name == topics.SendReplies {
			// An answer is read within seconds or never: the gateway
			// that waits reads its partition from its end at start.
			configs = map[string]*string{"retention.ms": &replyRetention}
		}
		resp, err := adm.CreateTopic(ctx, cfg.Partitions, cfg.ReplicationFactor, configs, name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("eventlog: create topic %s: %w", name, err)
		}
	}
	// Topic creation is asynchronous on real brokers: wait until every
	// partition has a leader.
	for {
		md, err := adm.Metadata(ctx, cfg.Topics().All()...)
		if err == nil && topicsReady(md, cfg.Topics().All()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("eventlog: waiting for topics: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func topicsReady(md kadm.Metadata, topics []string) bool {
	for _, name := range topics {
		t, ok := md.Topics[name]
		if !ok || t.Err != nil || len(t.Partitions) == 0 {
			return false
		}
		for _, p := range t.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return false
			}
		}
	}
	return true
}

// Record builds the record of an event: key, envelope value, and the
// event's type as a header so tools can filter without decoding.
func Record(topic, key string, ev domain.Event, m domain.Meta) (*kgo.Record, error) {
	v, err := domain.Encode(ev, m)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: v, Headers: typeHeaders(ev.EventType())}, nil
}

// headersByType holds, per event type, the headers every record of that
// type carries, shared by all of them: the fan-out builds a record per
// member per message, and a new header slice and value for each were two
// of its nine allocations per member.
var headersByType sync.Map // event type -> []kgo.RecordHeader

// typeHeaders returns the shared headers of an event type. Its capacity is
// its length, so an append to a record's headers copies them rather than
// writing into what other records share; nothing changes them in place
// (the client encodes headers, it does not modify them).
func typeHeaders(t string) []kgo.RecordHeader {
	if h, ok := headersByType.Load(t); ok {
		return h.([]kgo.RecordHeader)
	}
	h, _ := headersByType.LoadOrStore(t, []kgo.RecordHeader{{Key: "type", Value: []byte(t)}})
	return h.([]kgo.RecordHeader)
}

// Appender appends events and waits for the log to accept them.
type Appender struct {
	cl *kgo.Client
}

// NewAppender returns an appender on a client of its own, which gives up on
// a record after cfg.DeliveryTimeout.
func NewAppender(cfg Config, extra ...kgo.Opt) (*Appender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	opts := append([]kgo.Opt{kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout)}, extra...)
	cl, err := kgo.NewClient(cfg.ClientOpts(opts...)...)
	if err != nil {
		return nil, fmt.Errorf("eventlog: client: %w", err)
	}
	return &Appender{cl: cl}, nil
}

// KeyEnd returns the partition of topic that records keyed by key go to
// (the producer's default partitioning: murmur2 of the key, as Kafka's) and
// the offset just past its last record, the high watermark: every record
// the log has acknowledged lies below it.
func KeyEnd(ctx context.Context, adm *kadm.Client, topic, key string) (Position, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return Position{}, &domain.Error{Code: domain.CodeUnavailable, Msg: "the log's end is unknown", Err: err}
	}
	n := len(ends[topic])
	if n == 0 {
		return Position{}, &domain.Error{Code: domain.CodeUnavailable, Msg: "topic " + topic + " has no partitions"}
	}
	p := int32(kgo.StickyKeyPartitioner(nil).ForTopic(topic).Partition(&kgo.Record{Key: []byte(key)}, n))
	o, ok := ends.Lookup(topic, p)
	if !ok {
		return Position{}, &domain.Error{Code: domain.CodeUnavailable, Msg: fmt.Sprintf("no end offset of %s/%d", topic, p)}
	}
	return Position{Partition: p, Offset: o.Offset}, nil
}

// Position is where the log put a record.
type Position struct {
	Partition int32
	Offset    int64
}

// Append writes ev under key to topic and returns its position once every
// in-sync replica has it. An error means the event may or may not be in the
// log; callers that must know retry with the same ids.
func (a *Appender) Append(ctx context.Context, topic, key string, ev domain.Event, m domain.Meta) (Position, error) {
	rec, err := Record(topic, key, ev, m)
	if err != nil {
		return Position{}, err
	}
	r, err := a.cl.ProduceSync(ctx, rec).First()
	if err != nil {
		return Position{}, &domain.Error{Code: domain.CodeUnavailable, Msg: "the log did not accept the event", Err: err}
	}
	return Position{Partition: r.Partition, Offset: r.Offset}, nil
}

// Close flushes nothing (every append is synchronous) and closes the client.
func (a *Appender) Close() { a.cl.Close() }

// quiet passes on the Kafka client's warnings and errors only: its info
// lines (every rebalance, every metrics subscription) drown the chat's own.
type quiet struct{ slog.Handler }

func (q quiet) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && q.Handler.Enabled(ctx, l)
}

func (q quiet) WithAttrs(as []slog.Attr) slog.Handler { return quiet{q.Handler.WithAttrs(as)} }
func (q quiet) WithGroup(g string) slog.Handler       { return quiet{q.Handler.WithGroup(g)} }

// AppendRecords writes records built with Record and waits for all of
// them; the first error is returned.
func (a *Appender) AppendRecords(ctx context.Context, recs ...*kgo.Record) error {
	if err := a.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return &domain.Error{Code: domain.CodeUnavailable, Msg: "the log did not accept the events", Err: err}
	}
	return nil
}
