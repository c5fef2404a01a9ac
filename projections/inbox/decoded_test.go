package inbox

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/evchat/evchat/domain"
	"github.com/evchat/evchat/projections/store"
	"github.com/evchat/evchat/projections/store/storetest"
)

// TestDecodedOnce: the process's readers of one record share one decoding;
// other bytes at the same offset (a topic recreated), another partition or
// an offset that left the window are decoded anew; a nil Decoded decodes.
func TestDecodedOnce(t *testing.T) {
	d := NewDecoded()
	a := record(t, entry{7, "a", 70})
	again := *a // another reader's copy of the same record
	again.Value = append([]byte(nil), a.Value...)
	for i, rec := range []*kgo.Record{a, &again} {
		m, ok, err := d.Entry(rec)
		if err != nil || !ok || m.UserID != "a" || m.MessageID != 70 {
			t.Fatalf("read %d: %+v %v %v", i, m, ok, err)
		}
	}
	if hits, misses := d.Stats(); hits != 1 || misses != 1 {
		t.Fatalf("two reads of a record: %d hits, %d misses; want 1, 1", hits, misses)
	}
	other := record(t, entry{7, "b", 71}) // same partition and offset, other bytes
	otherPart := record(t, entry{7, "a", 70})
	otherPart.Partition = 4
	later := record(t, entry{7 + slotsPerPartition, "c", 72}) // takes a's slot
	for _, rec := range []*kgo.Record{other, otherPart, later, a} {
		want, _, _ := domain.DecodeInbox(rec.Value)
		if m, ok, err := d.Entry(rec); err != nil || !ok || m != want {
			t.Fatalf("%d/%d: %+v, want %+v (%v)", rec.Partition, rec.Offset, m, want, err)
		}
	}
	if hits, misses := d.Stats(); hits != 1 || misses != 5 {
		t.Fatalf("%d hits, %d misses; want 1, 5", hits, misses)
	}
	// A reader far behind the others (push, Delay behind) decoded a, from
	// the window's past: it took nothing from the readers at its front.
	if _, _, err := d.Entry(later); err != nil {
		t.Fatal(err)
	}
	if hits, misses := d.Stats(); hits != 2 || misses != 5 {
		t.Fatalf("the newer record again, after an older one in its slot: %d hits, %d misses; want 2, 5", hits, misses)
	}
	var none *Decoded
	if m, ok, err := none.Entry(a); err != nil || !ok || m.MessageID != 70 {
		t.Fatalf("nil Decoded: %+v %v %v", m, ok, err)
	}
	if _, _, err := d.Entry(&kgo.Record{Topic: "t", Value: []byte("{")}); domain.CodeOf(err) != domain.CodeBadRequest {
		t.Fatalf("undecodable: %v", err)
	}
}

// TestDecodedSharedByProjection: the projection takes what another reader
// decoded, and stores the same entries as without it.
func TestDecodedSharedByProjection(t *testing.T) {
	d := NewDecoded()
	recs := []*kgo.Record{record(t, entry{1, "a", 10}), record(t, entry{2, "b", 10})}
	for _, rec := range recs {
		if _, _, err := d.Entry(rec); err != nil {
			t.Fatal(err)
		}
	}
	st := storetest.OpenPebble(t)
	var shared, alone store.Batch
	if err := New(st, epoch, d, nil).Handle(context.Background(), 3, recs, &shared); err != nil {
		t.Fatal(err)
	}
	if err := New(st, epoch, nil, nil).Handle(context.Background(), 3, recs, &alone); err != nil {
		t.Fatal(err)
	}
	if hits, _ := d.Stats(); hits != 2 {
		t.Errorf("the projection found %d of 2 records decoded", hits)
	}
	if len(shared.Inbox) != 2 || len(alone.Inbox) != 2 || shared.Inbox[0] != alone.Inbox[0] || shared.Inbox[1] != alone.Inbox[1] {
		t.Errorf("entries %+v; without sharing %+v", shared.Inbox, alone.Inbox)
	}
}
