package eventlog

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Batch attribute bits of the Kafka record batch format.
const (
	attrTransactional = 0x10
	attrControl       = 0x20
)

// openTxn is a transaction whose data batches sit in a partition with no
// control marker after them: the producer's process (in the embedded mode,
// this very process) died before the transaction ended.
type openTxn struct {
	topic     string
	partition int32
	pid       int64
	epoch     int16 // of the producer's last batch in the partition
}

// endOpenTxns ends, through WriteTxnMarkers, every transaction that the
// log holds open, and returns how many (partition, producer) pairs it
// aborted and how many it committed.
//
// It is for a broker that has just started and that no client has used
// yet, where an open transaction can only be one whose producer died with
// the previous process. kfake takes such a transaction as aborted when it
// loads its data directory, but only in memory: no marker is written, and
// at a later load the same producer's next commit marker would take the
// dead batches into its transaction. A marker makes the outcome part of
// the log, so every later load, and every read-committed client, agrees.
//
// Most such transactions never reached their commit and are aborted, as
// kafka-transactions.sh abort does for a hanging transaction on a real
// cluster. But kfake writes a committing transaction's markers partition
// by partition, so a kill in the middle of a commit leaves it committed in
// some partitions and open in the others. Aborting those would tear the
// transaction: its inbox entries in one partition, not in another, while
// its changelog says all were written. A transaction is known by its
// producer id and epoch (the broker bumps the epoch at every EndTxn), so
// one that has a COMMIT marker in any partition reached its commit: it is
// rolled forward, with COMMIT markers in the partitions that lack one, as
// a real coordinator completes a transaction it had prepared to commit.
// What kfake does not make durable is the commit's consumer offsets (it
// applies them after the markers): the consumer reads that input again,
// and must know from its own committed state what it has done (the
// fan-out keeps each channel's progress in its changelog).
func endOpenTxns(ctx context.Context, cl *kgo.Client) (aborted int, committed kadm.TopicsSet, err error) {
	adm := kadm.NewClient(cl)
	topics, err := adm.ListTopicsWithInternal(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("eventlog: list topics: %w", err)
	}
	if err := topics.Error(); err != nil {
		return 0, nil, fmt.Errorf("eventlog: list topics: %w", err)
	}
	names := topics.Names()
	if len(names) == 0 {
		return 0, nil, nil
	}
	starts, err := adm.ListStartOffsets(ctx, names...)
	if err != nil {
		return 0, nil, fmt.Errorf("eventlog: start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, names...)
	if err != nil {
		return 0, nil, fmt.Errorf("eventlog: end offsets: %w", err)
	}
	var open []openTxn
	commits := map[pidEpoch]bool{}
	for _, td := range topics.Sorted() {
		for _, pd := range td.Partitions.Sorted() {
			start, ok1 := starts.Lookup(td.Topic, pd.Partition)
			end, ok2 := ends.Lookup(td.Topic, pd.Partition)
			if !ok1 || !ok2 || start.Err != nil || end.Err != nil {
				return 0, nil, fmt.Errorf("eventlog: offsets of %s/%d: %v %v", td.Topic, pd.Partition, start.Err, end.Err)
			}
			found, err := scanOpenTxns(ctx, cl, td.Topic, td.ID, pd.Partition, pd.Leader, start.Offset, end.Offset, commits)
			if err != nil {
				return 0, nil, err
			}
			open = append(open, found...)
		}
	}
	if len(open) == 0 {
		return 0, nil, nil
	}
	markers := map[pidEpoch]kadm.TopicsSet{}
	for _, o := range open {
		k := pidEpoch{o.pid, o.epoch}
		ts := markers[k]
		ts.Add(o.topic, o.partition)
		markers[k] = ts
	}
	var req []kadm.TxnMarkers
	for k, ts := range markers {
		req = append(req, kadm.TxnMarkers{ProducerID: k.pid, ProducerEpoch: k.epoch, Commit: commits[k], Topics: ts})
		if commits[k] {
			ts.Each(func(t string, p int32) { committed.Add(t, p) })
		}
	}
	resps, err := adm.WriteTxnMarkers(ctx, req...)
	if err != nil {
		return 0, nil, fmt.Errorf("eventlog: write transaction markers: %w", err)
	}
	written := 0
	for _, r := range resps {
		for _, tr := range r.Topics {
			for _, pr := range tr.Partitions {
				if pr.Err != nil {
					return 0, nil, fmt.Errorf("eventlog: transaction marker for producer %d on %s/%d: %w", r.ProducerID, tr.Topic, pr.Partition, pr.Err)
				}
				written++
			}
		}
	}
	if written != len(open) {
		return 0, nil, fmt.Errorf("eventlog: %d transaction markers written, %d needed", written, len(open))
	}
	n := 0
	committed.Each(func(string, int32) { n++ })
	return written - n, committed, nil
}

// pidEpoch names one transaction: the broker bumps a transactional
// producer's epoch when the transaction ends.
type pidEpoch struct {
	pid   int64
	epoch int16
}

// scanOpenTxns reads one partition from start to end, uncommitted and raw
// (control batches included), and returns the producers whose last
// transactional batch is not followed by a control marker of theirs. It
// adds to commits the transaction of every COMMIT marker it reads.
func scanOpenTxns(ctx context.Context, cl *kgo.Client, topic string, id kadm.TopicID, part, leader int32, start, end int64, commits map[pidEpoch]bool) ([]openTxn, error) {
	open := map[int64]int16{} // producer id -> epoch of its last batch
	for off := start; off < end; {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = 0
		req.MaxBytes = 16 << 20
		req.IsolationLevel = 0 // read uncommitted: every batch, markers too
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rt.TopicID = [16]byte(id)
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = part
		rp.FetchOffset = off
		rp.PartitionMaxBytes = 16 << 20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		kresp, err := cl.Broker(int(leader)).Request(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("eventlog: scan %s/%d at %d: %w", topic, part, off, err)
		}
		resp := kresp.(*kmsg.FetchResponse)
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return nil, fmt.Errorf("eventlog: scan %s/%d at %d: %w", topic, part, off, err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return nil, fmt.Errorf("eventlog: scan %s/%d at %d: malformed fetch response", topic, part, off)
		}
		p := resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
			return nil, fmt.Errorf("eventlog: scan %s/%d at %d: %w", topic, part, off, err)
		}
		next := off
		for raw := p.RecordBatches; len(raw) >= 12; {
			// FirstOffset (8 bytes), then Length (4) of what follows.
			n := 12 + int(int32(binary.BigEndian.Uint32(raw[8:12])))
			if n < 12 || n > len(raw) {
				break // a partial batch at the end of the response
			}
			var b kmsg.RecordBatch
			if err := b.ReadFrom(raw[:n]); err != nil {
				return nil, fmt.Errorf("eventlog: scan %s/%d: batch at %d: %w", topic, part, next, err)
			}
			raw = raw[n:]
			next = b.FirstOffset + int64(b.LastOffsetDelta) + 1
			switch {
			case b.Attributes&attrTransactional == 0:
			case b.Attributes&attrControl != 0:
				// A commit or an abort: either ends the
				// producer's transaction in this partition.
				delete(open, b.ProducerID)
				if isCommitMarker(b) {
					commits[pidEpoch{b.ProducerID, b.ProducerEpoch}] = true
				}
			default:
				open[b.ProducerID] = b.ProducerEpoch
			}
		}
		if next <= off {
			return nil, fmt.Errorf("eventlog: scan %s/%d: no progress at offset %d (end %d)", topic, part, off, end)
		}
		off = next
	}
	var out []openTxn
	for pid, epoch := range open {
		out = append(out, openTxn{topic: topic, partition: part, pid: pid, epoch: epoch})
	}
	return out, nil
}

// isCommitMarker reports whether the control batch b is a COMMIT marker:
// its record's key is a version (int16) and a type (int16, 1 for COMMIT).
// An unreadable marker counts as an abort, as kfake's loader takes it.
func isCommitMarker(b kmsg.RecordBatch) bool {
	var rec kmsg.Record
	if err := rec.ReadFrom(b.Records); err != nil || len(rec.Key) < 4 {
		return false
	}
	return binary.BigEndian.Uint16(rec.Key[2:4]) == 1
}
