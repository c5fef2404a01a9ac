package firstcopy

import (
	"testing"
	"time"
)

// TestMemory: what a memory answers, and where it leaves the store to.
func TestMemory(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	m := New[string](t0, 2)
	late := t0.Add(SkewMargin)
	check := func(k string, sent time.Time, wantOff int64, wantKnown bool) {
		t.Helper()
		off, known := m.Lookup(k, sent)
		if known != wantKnown || known && off != wantOff {
			t.Errorf("Lookup(%s, start%+v) = %d, %v; want %d, %v", k, sent.Sub(t0), off, known, wantOff, wantKnown)
		}
	}
	check("a", t0.Add(SkewMargin-time.Nanosecond), 0, false) // may have a copy from before the run
	check("a", late, -1, true)
	m.Add("a", 5, late)
	m.Add("a", 3, late) // a lower offset stored again (a batch applied again)
	check("a", late, 3, true)
	check("a", t0, 3, true) // remembered, whenever sent
	m.Add("b", 6, late.Add(time.Second))
	m.Add("c", 7, late.Add(2*time.Second)) // a is forgotten
	check("a", late, 0, false)
	check("z", late, 0, false)                      // as old as one forgotten
	check("z", late.Add(time.Nanosecond), -1, true) // newer than any forgotten
	check("b", late.Add(time.Second), 6, true)
	m.Add("d", 8, late.Add(3*time.Second)) // b is forgotten
	check("b", late.Add(time.Second), 0, false)
	check("c", late.Add(2*time.Second), 7, true)
}
