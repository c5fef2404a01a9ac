package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/cursors"
	"github.com/evchat/evchat/projections/eventlog"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/pebblestore"
)

// TestVerifyCursors builds the store with the real cursors projection over
// a session topic (acknowledgements out of order, a read mark, heartbeats),
// changes it on purpose, and holds verify to naming each change; on the
// store as built it agrees, and a topic of heartbeats alone has nothing to
// compare and still agrees. Before, cursors could not be verified at all.
func TestVerifyCursors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := ensureTopics(t, ctx, eventlog.Config{Brokers: embeddedBrokers(t), Prefix: "c", Partitions: 2})
	topic := cfg.Topics().Sessions
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	add := func(partition int32, key string, ev domain.Event) {
		r, err := eventlog.Record(topic, key, ev, domain.Meta{EventID: fmt.Sprint(len(recs)), Time: t0.Add(time.Duration(len(recs)) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		r.Partition = partition
		recs = append(recs, r)
	}
	add(0, "ann", domain.DeviceHeartbeat{UserID: ann, DeviceID: "phone"})
	add(0, "ann", domain.DeviceAcked{UserID: ann, DeviceID: "phone", Epoch: 1, Position: 7})
	add(0, "ann", domain.DeviceAcked{UserID: ann, DeviceID: "phone", Epoch: 1, Position: 5}) // older: kept 7
	add(0, "ann", domain.DeviceAcked{UserID: ann, DeviceID: "laptop", Epoch: 2, Position: 3})
	add(1, "cat", domain.DeviceAcked{UserID: cat, DeviceID: "phone", Epoch: 1, Position: 11})
	add(1, "cat", domain.ChannelRead{UserID: cat, DeviceID: "phone", ChannelID: direct, MessageID: 102, Seq: 4})
	add(1, "cat", domain.ChannelRead{UserID: cat, DeviceID: "phone", ChannelID: direct, MessageID: 101, Seq: 2}) // older
	cl, err := kgo.NewClient(cfg.ClientOpts(kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	byPart := readAll(t, ctx, cfg, topic, len(recs))

	build := func(t *testing.T, upto int, mutate func(*store.Batch)) *pebblestore.Store {
		st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{CacheSize: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		h := cursors.New(st, nil)
		for _, p := range []int32{0, 1} {
			rs := byPart[p][:min(upto, len(byPart[p]))]
			if len(rs) == 0 {
				continue
			}
			b := store.Batch{Projection: cursors.Name, Positions: map[int32]int64{p: rs[len(rs)-1].Offset + 1}}
			if err := h.Handle(ctx, p, rs, &b); err != nil {
				t.Fatal(err)
			}
			mutate(&b)
			if err := st.Apply(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		return st
	}
	for _, tc := range []struct {
		name   string
		mutate func(*store.Batch)
		has    []string // empty: agrees
	}{
		{"as built", func(*store.Batch) {}, nil},
		{"cursor changed", func(b *store.Batch) {
			for i, c := range b.Cursors {
				if c.UserID == ann && c.DeviceID == "phone" {
					b.Cursors[i].Position = 5
				}
			}
		}, []string{"user ann's device cursors", "phone differs", "Position:7", "Position:5"}},
		{"cursor missing", func(b *store.Batch) {
			b.Cursors = slices.DeleteFunc(b.Cursors, func(c store.DeviceCursor) bool { return c.DeviceID == "laptop" })
		}, []string{"user ann's device cursors", "laptop", "missing from the store"}},
		{"cursor added", func(b *store.Batch) {
			if b.Positions[1] > 0 {
				b.Cursors = append(b.Cursors, store.DeviceCursor{UserID: cat, DeviceID: "tablet", Epoch: 1, Position: 1, UpdatedAt: t0})
			}
		}, []string{"user cat's device cursors", "tablet", "in the store but not in the log"}},
		{"read mark changed", func(b *store.Batch) {
			for i := range b.Reads {
				b.Reads[i].Seq = 2
			}
		}, []string{"channel d's read marks", "cat differs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := build(t, len(recs), tc.mutate)
			rep, err := Run(ctx, cfg, st, cursors.Name, Rules{Limits: domain.DefaultLimits()})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Entities != 3 || rep.Events != int64(len(recs)) {
				t.Errorf("compared %d entities and %d events, want 3 (ann, cat, channel d) and %d", rep.Entities, rep.Events, len(recs))
			}
			err = rep.Err()
			if len(tc.has) == 0 {
				if err != nil {
					t.Fatalf("%s: %v", rep.Summary(), err)
				}
				return
			}
			if !errors.Is(err, ErrDisagree) {
				t.Fatalf("got %v, want a disagreement", err)
			}
			for _, s := range tc.has {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%v: does not say %q", err, s)
				}
			}
		})
	}
	t.Run("heartbeats alone", func(t *testing.T) {
		// Positions just past partition 0's heartbeat, none in partition 1.
		st := build(t, 1, func(b *store.Batch) {
			if b.Positions[1] > 0 {
				b.Positions, b.Cursors, b.Reads = nil, nil, nil
			}
		})
		rep, err := Run(ctx, cfg, st, cursors.Name, Rules{Limits: domain.DefaultLimits()})
		if err != nil {
			t.Fatal(err)
		}
		if err := rep.Err(); err != nil || rep.Events != 1 || !rep.NoneKept {
			t.Fatalf("%s (none kept %v): %v", rep.Summary(), rep.NoneKept, err)
		}
	})
}
