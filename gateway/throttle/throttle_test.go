package throttle

import (
	"fmt"
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	now := time.Unix(1000, 0)
	msgs := New(Rule{PerSecond: 2, Burst: 3})
	bytes := New(Rule{PerSecond: 100, Burst: 250})
	take := func(at time.Time, key string, n int) (time.Duration, bool) {
		return Allow(at, key, Take{msgs, 1}, Take{bytes, n})
	}
	for i := range 3 {
		if _, ok := take(now, "ann", 10); !ok {
			t.Fatalf("send %d within the burst refused", i)
		}
	}
	retry, ok := take(now, "ann", 10)
	if ok || retry != 500*time.Millisecond {
		t.Fatalf("fourth send: ok %v, retry %s; want refused, retry 500ms", ok, retry)
	}
	if _, ok := take(now, "bob", 10); !ok {
		t.Fatal("another user's bucket is shared")
	}
	// A refusal takes nothing: after the retry, exactly one more fits.
	if _, ok := take(now.Add(retry), "ann", 10); !ok {
		t.Fatal("refused after retry-after")
	}
	// Bytes: all or none. bob has 240 bytes left; 241 is refused and
	// takes no message token either.
	retry, ok = take(now, "bob", 241)
	if ok || retry <= 0 {
		t.Fatalf("over the byte bucket: ok %v retry %s", ok, retry)
	}
	if _, ok := take(now, "bob", 240); !ok {
		t.Fatal("the refused send took tokens")
	}
	// More than a bucket holds is never allowed.
	if retry, ok := take(now.Add(time.Hour), "cid", 251); ok || retry != 0 {
		t.Fatalf("over the burst: ok %v retry %s; want refused for good", ok, retry)
	}
	// Nil buckets allow.
	if _, ok := Allow(now, "x", Take{nil, 1 << 30}); !ok {
		t.Fatal("nil buckets refused")
	}
}

func TestSweep(t *testing.T) {
	now := time.Unix(1000, 0)
	b := New(Rule{PerSecond: 1, Burst: 1})
	for i := range 3 * sweepEvery {
		Allow(now.Add(time.Duration(i)*time.Second), fmt.Sprint(i), Take{b, 1})
	}
	if n := len(b.byKey); n > sweepEvery+1 {
		t.Fatalf("%d buckets kept after refilling; want at most %d", n, sweepEvery+1)
	}
}
