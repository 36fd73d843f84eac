package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestBucketsCoverEveryValue: buckets are contiguous, increasing, and each
// value lands in the bucket whose range holds it.
func TestBucketsCoverEveryValue(t *testing.T) {
	next := int64(0)
	for i := range numBuckets {
		lo, hi := bucketRange(i)
		if lo != next || hi <= lo {
			t.Fatalf("bucket %d is [%d,%d), want it to start at %d", i, lo, hi, next)
		}
		for _, v := range []int64{lo, hi - 1, lo + (hi-lo)/2} {
			if b := bucketOf(v); b != i {
				t.Fatalf("value %d in bucket %d, want %d [%d,%d)", v, b, i, lo, hi)
			}
		}
		if float64(hi-lo)/float64(lo+1) > 1.0/subBuckets+1e-9 && lo >= subBuckets {
			t.Fatalf("bucket %d [%d,%d) is wider than 1/%d of its values", i, lo, hi, subBuckets)
		}
		next = hi
	}
}

// TestQuantilesMatchSorted compares the histogram's quantiles with the
// exact ones of a sorted sample: within the bucket precision.
func TestQuantilesMatchSorted(t *testing.T) {
	var h Hist
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]time.Duration, 100000)
	for i := range vals {
		// Log-uniform from 1 us to 100 ms.
		v := time.Duration(1000 * math.Pow(2, r.Float64()*17))
		vals[i] = v
		h.Record(v)
	}
	slices.Sort(vals)
	s := h.Snapshot()
	if s.Count() != uint64(len(vals)) || s.Max() != vals[len(vals)-1] {
		t.Fatalf("count %d max %v, want %d %v", s.Count(), s.Max(), len(vals), vals[len(vals)-1])
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := s.Quantile(q)
		if d := float64(got-exact) / float64(exact); d > 0.01 || d < -0.01 {
			t.Errorf("q%.3f = %v, exact %v (%.2f %% off)", q, got, exact, 100*d)
		}
	}
}

// TestSnapshotSub: an interval's quantiles come from its own latencies.
func TestSnapshotSub(t *testing.T) {
	var h Hist
	for range 1000 {
		h.Record(time.Millisecond)
	}
	before := h.Snapshot()
	for range 10 {
		h.Record(10 * time.Microsecond)
	}
	d := h.Snapshot().Sub(before)
	if d.Count() != 10 {
		t.Fatalf("interval count %d, want 10", d.Count())
	}
	if q := d.Quantile(0.99); q < 9900*time.Nanosecond || q > 10100*time.Nanosecond {
		t.Fatalf("interval p99 %v, want about 10us", q)
	}
	var empty Snapshot
	if empty.Quantile(0.5) != 0 {
		t.Fatal("quantile of nothing is not 0")
	}
}
