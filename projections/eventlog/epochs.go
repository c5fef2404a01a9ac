package eventlog

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
)

// The epochs topic says which epoch of each derived output (the inbox, the
// fan-out's output; presence) every node reads. A rebuild writes an output
// into new topics whose names end in the next epoch and, once caught up,
// appends epoch.started; every node tails the topic and switches.

// ReadEpochs reads the epochs topic to its end and returns the config with
// the epochs it names (1 for an output without a record).
func ReadEpochs(ctx context.Context, cfg Config) (Config, error) {
	out := cfg
	_, err := ReadToEnd(ctx, cfg, cfg.Topics().Epochs, ReadRange{}, func(r *kgo.Record) {
		if ev, ok := decodeEpoch(r); ok && ev.Epoch > epochOf(out, ev.Output) {
			out = out.WithEpoch(ev.Output, ev.Epoch)
		}
	})
	if err != nil {
		return cfg, fmt.Errorf("eventlog: reading epochs: %w", err)
	}
	return out, nil
}

// WatchEpochs calls fn with every epoch.started, from the topic's start
// (so that none appended since ReadEpochs is missed; fn ignores the epochs
// it is past), in order, until ctx ends; it returns nil then.
func WatchEpochs(ctx context.Context, cfg Config, fn func(domain.EpochStarted)) error {
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.ConsumeTopics(cfg.Topics().Epochs),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachRecord(func(r *kgo.Record) {
			if ev, ok := decodeEpoch(r); ok {
				fn(ev)
			}
		})
	}
}

// StartEpoch appends epoch.started: every node switches output to epoch.
func StartEpoch(ctx context.Context, cfg Config, output string, epoch int32) error {
	a, err := NewAppender(cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	ev := domain.EpochStarted{Output: output, Epoch: epoch}
	_, err = a.Append(ctx, cfg.Topics().Epochs, output, ev,
		domain.Meta{EventID: fmt.Sprintf("epoch.%s.%d", output, epoch), Time: time.Now().UTC()})
	return err
}

func decodeEpoch(r *kgo.Record) (domain.EpochStarted, bool) {
	_, ev, err := domain.Decode(r.Value)
	if err != nil {
		return domain.EpochStarted{}, false
	}
	e, ok := ev.(domain.EpochStarted)
	return e, ok && e.Epoch >= 1 && (e.Output == domain.OutputInbox || e.Output == domain.OutputPresence)
}

// EpochOf returns the config's epoch of an output.
func EpochOf(cfg Config, output string) int32 { return epochOf(cfg.withDefaults(), output) }

func epochOf(cfg Config, output string) int32 {
	if output == domain.OutputPresence {
		return max(cfg.PresenceEpoch, 1)
	}
	return max(cfg.InboxEpoch, 1)
}

// ExistingEpochs returns, in order, the epochs of output that have a
// topic, begun or finished (epoch 1 always counts).
func ExistingEpochs(ctx context.Context, cfg Config) (inbox, presence []int32, err error) {
	cl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		return nil, nil, err
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("eventlog: list topics: %w", err)
	}
	first := NewTopics(cfg.withDefaults().Prefix, 1, 1)
	find := func(topic string) []int32 {
		stem := strings.TrimSuffix(topic, "1")
		out := []int32{1}
		for _, name := range topics.Names() {
			if rest, ok := strings.CutPrefix(name, stem); ok {
				if e, err := strconv.ParseInt(rest, 10, 32); err == nil && e > 1 {
					out = append(out, int32(e))
				}
			}
		}
		slices.Sort(out)
		return out
	}
	return find(first.Inbox), find(first.Presence), nil
}
