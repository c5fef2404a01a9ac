package eventlog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadRange says which part of a topic ReadToEnd reads. The zero value
// reads every partition from its start to its end.
type ReadRange struct {
	// Partitions are the partitions read; nil reads all of the topic's.
	Partitions []int32
	// From holds the offset a partition is read from; a partition not in
	// it is read from the log's start (as is one whose offset is below
	// the log's start).
	From map[int32]int64
	// Until holds an offset a partition is read up to when it is below the
	// partition's end (verify reads up to a projection's positions); a
	// partition not in it is read to its end.
	Until map[int32]int64
}

// ReadToEnd reads the partitions of topic that rr names up to the end
// offsets it takes when it starts, and calls fn with every record below
// them, in order within a partition (records of different partitions
// interleave). It returns, per partition, the offset it read up to: a tail
// that goes on from there misses nothing and repeats nothing.
//
// It returns only when every partition has reached its end, or with an
// error: a fetch error fails it, wrapped and naming topic and partition, as
// does ctx ending. It never decides that a partition is done because
// nothing came for a while.
//
// The end is the last stable offset (the reader is read-committed): below
// it every transaction is decided. Transaction markers take offsets and
// records of aborted transactions are skipped, so the last record fn sees
// may sit well below the end; compaction leaves gaps in the offsets too.
// The reader therefore keeps control records (kgo.KeepControlRecords, never
// handed to fn) and tracks each partition's position as the offset after
// the last record or marker it has seen, and a partition is done once that
// position reaches its end. The last offset below an end always holds a
// record or a marker the reader sees: a non-transactional record, a
// committed record, or the marker that decided its transaction (aborted
// records are followed by their abort marker; if that marker lies at or
// past the end because another transaction was open when the end was
// taken, the reader waits for it, as any read-committed reader waits for
// an open transaction). Compaction never removes the last batch of a
// partition (Kafka never cleans the active segment; kfake keeps the last
// batch), so no gap sits at the end.
func ReadToEnd(ctx context.Context, cfg Config, topic string, rr ReadRange, fn func(*kgo.Record)) (map[int32]int64, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.KeepControlRecords())...)
	if err != nil {
		return nil, fmt.Errorf("eventlog: reading %s: client: %w", topic, err)
	}
	defer cl.Close()
	starts, ends, err := bounds(ctx, kadm.NewClient(cl), topic, rr)
	if err != nil {
		return nil, err
	}
	reached := maps.Clone(ends)
	// next holds the partitions still to read and each one's position.
	next := map[int32]int64{}
	consume := map[int32]kgo.Offset{}
	for p, end := range ends {
		if start := starts[p]; start < end {
			next[p] = start
			consume[p] = kgo.NewOffset().At(start)
		} else {
			reached[p] = start
		}
	}
	if len(next) == 0 {
		return reached, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: consume})
	for len(next) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("eventlog: reading %s: %w", topic, err)
		}
		var errs []error
		fs.EachError(func(t string, p int32, err error) {
			errs = append(errs, fmt.Errorf("eventlog: reading %s partition %d: %w", t, p, err))
		})
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		var done []int32
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			pos, ok := next[fp.Partition]
			if fp.Topic != topic || !ok {
				return // finished: removed from the client, a fetch was under way
			}
			end := ends[fp.Partition]
			for _, r := range fp.Records {
				if r.Offset < pos {
					continue
				}
				if r.Offset >= end {
					pos = end
					break
				}
				pos = r.Offset + 1
				if !r.Attrs.IsControl() {
					fn(r)
				}
			}
			next[fp.Partition] = pos
			if pos >= end {
				delete(next, fp.Partition)
				done = append(done, fp.Partition)
			}
		})
		if len(done) > 0 {
			cl.RemoveConsumePartitions(map[string][]int32{topic: done})
		}
	}
	return reached, nil
}

// bounds returns where each partition of rr starts (From, raised to the
// log's start) and ends (the last stable offset, lowered to Until).
func bounds(ctx context.Context, adm *kadm.Client, topic string, rr ReadRange) (starts, ends map[int32]int64, err error) {
	list := func(what string, f func(context.Context, ...string) (kadm.ListedOffsets, error)) (map[int32]int64, error) {
		l, err := f(ctx, topic)
		if err == nil {
			err = l.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("eventlog: reading %s: %s offsets: %w", topic, what, err)
		}
		out := map[int32]int64{}
		l.Each(func(o kadm.ListedOffset) {
			if o.Topic == topic {
				out[o.Partition] = o.Offset
			}
		})
		if len(out) == 0 {
			return nil, fmt.Errorf("eventlog: reading %s: no %s offsets: does the topic exist?", topic, what)
		}
		return out, nil
	}
	logStarts, err := list("start", adm.ListStartOffsets)
	if err != nil {
		return nil, nil, err
	}
	stable, err := list("last stable", adm.ListCommittedOffsets)
	if err != nil {
		return nil, nil, err
	}
	parts := rr.Partitions
	if parts == nil {
		parts = slices.Sorted(maps.Keys(stable))
	}
	starts, ends = map[int32]int64{}, map[int32]int64{}
	for _, p := range parts {
		end, ok := stable[p]
		if !ok {
			return nil, nil, fmt.Errorf("eventlog: reading %s: no partition %d", topic, p)
		}
		if u, ok := rr.Until[p]; ok {
			end = min(end, u)
		}
		starts[p], ends[p] = max(rr.From[p], logStarts[p]), end
	}
	return starts, ends, nil
}
