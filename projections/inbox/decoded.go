package inbox

import (
	"bytes"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
)

// Decoded decodes inbox records once per process: the readers of an inbox
// topic in one process (the gateway's tailer, this projection, push) each
// fetch the same records and would each decode them. The first to decode
// a record leaves its entry here, by (topic, partition, offset), for the
// others, which read close behind one another. A slot is trusted only for
// the very bytes it was decoded from (compared, far cheaper than decoding),
// so a topic recreated under the same name cannot serve a stale entry.
//
// Each partition keeps its last slotsPerPartition offsets; older ones are
// decoded again, and do not take a newer one's slot: a reader far behind
// the others (push reads Delay behind: at 1,000 entries a second per
// partition, 3 s are 3,000 offsets) would otherwise push out what the
// readers at the front are about to share. Such a reader decodes for
// itself (DecodeInbox makes that cheap) rather than every process keeping
// seconds of entries per partition. Safe for concurrent use; the zero value is not: use
// NewDecoded. A nil *Decoded decodes every record.
type Decoded struct {
	mu    sync.Mutex
	parts map[topicPartition]*[slotsPerPartition]slot

	hits, misses atomic.Int64
}

// slotsPerPartition bounds what Decoded keeps: per partition, entries
// (~200 bytes with their strings) and the record values they came from.
const slotsPerPartition = 4096

type topicPartition struct {
	topic     string
	partition int32
}

type slot struct {
	offset int64
	value  []byte
	m      domain.InboxMessage
	ok     bool // an inbox entry; else another event
	used   bool
}

// NewDecoded returns an empty Decoded.
func NewDecoded() *Decoded {
	return &Decoded{parts: map[topicPartition]*[slotsPerPartition]slot{}}
}

// Entry returns the inbox entry that rec holds; ok is false when rec holds
// another event, and err is the decoding error of a record that is not an
// event. The entry is shared by value: callers may change their copy.
func (d *Decoded) Entry(rec *kgo.Record) (m domain.InboxMessage, ok bool, err error) {
	if d == nil {
		return domain.DecodeInbox(rec.Value)
	}
	k := topicPartition{rec.Topic, rec.Partition}
	i := int(uint64(rec.Offset) % slotsPerPartition)
	d.mu.Lock()
	if p := d.parts[k]; p != nil {
		if s := &p[i]; s.used && s.offset == rec.Offset && bytes.Equal(s.value, rec.Value) {
			m, ok = s.m, s.ok
			d.mu.Unlock()
			d.hits.Add(1)
			return m, ok, nil
		}
	}
	d.mu.Unlock()
	d.misses.Add(1)
	m, ok, err = domain.DecodeInbox(rec.Value)
	if err != nil {
		return m, ok, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.parts[k]
	if p == nil {
		p = new([slotsPerPartition]slot)
		d.parts[k] = p
	}
	if s := &p[i]; !s.used || s.offset <= rec.Offset {
		*s = slot{offset: rec.Offset, value: rec.Value, m: m, ok: ok, used: true}
	}
	return m, ok, nil
}

// Stats returns how many records were found decoded and how many were
// decoded.
func (d *Decoded) Stats() (hits, misses int64) { return d.hits.Load(), d.misses.Load() }
