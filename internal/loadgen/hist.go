package loadgen

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Latencies are kept in a log-linear histogram: 64 buckets per power of
// two of nanoseconds, so a quantile is off by at most 1/128 (0.8 %) when
// it is read as its bucket's midpoint. Recording is one atomic add with no
// lock, and each worker has its own histogram, so workers never share a
// cache line; the progress line and the final report merge them.

const (
	subBits    = 6
	subBuckets = 1 << subBits
	// Up to 2^40 ns (18 minutes); longer values land in the last bucket.
	maxExp     = 40
	numBuckets = (maxExp - subBits + 1) * subBuckets
)

// Hist is a concurrent latency histogram. The zero value is ready to use.
type Hist struct {
	counts [numBuckets]atomic.Uint64
	max    atomic.Int64
}

func bucketOf(ns int64) int {
	if ns < subBuckets {
		if ns < 0 {
			return 0
		}
		return int(ns)
	}
	e := bits.Len64(uint64(ns)) - subBits // >= 1
	i := e*subBuckets + int(uint64(ns)>>uint(e-1)) - subBuckets
	if i >= numBuckets {
		return numBuckets - 1
	}
	return i
}

// bucketRange is the range of values [lo, hi) that bucket i holds.
func bucketRange(i int) (lo, hi int64) {
	if i < subBuckets {
		return int64(i), int64(i) + 1
	}
	shift := uint(i/subBuckets - 1)
	m := int64(i%subBuckets + subBuckets)
	return m << shift, (m + 1) << shift
}

// Record adds one latency.
func (h *Hist) Record(d time.Duration) {
	ns := int64(d)
	h.counts[bucketOf(ns)].Add(1)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

// Snapshot is a histogram's counts at one moment; snapshots of several
// histograms add up, and two of one histogram subtract to an interval.
type Snapshot struct {
	counts [numBuckets]uint64
	max    int64
	n      uint64
}

// Snapshot reads the histogram.
func (h *Hist) Snapshot() *Snapshot {
	s := new(Snapshot)
	s.Add(h)
	return s
}

// Add adds h's current counts to s.
func (s *Snapshot) Add(h *Hist) {
	for i := range h.counts {
		c := h.counts[i].Load()
		s.counts[i] += c
		s.n += c
	}
	s.max = max(s.max, h.max.Load())
}

// Sub returns s minus an earlier snapshot prev of the same histograms. The
// maximum of an interval is not known; Sub keeps the largest bucket seen.
func (s *Snapshot) Sub(prev *Snapshot) *Snapshot {
	d := new(Snapshot)
	for i := range s.counts {
		d.counts[i] = s.counts[i] - prev.counts[i]
		d.n += d.counts[i]
		if d.counts[i] > 0 {
			_, hi := bucketRange(i)
			d.max = hi - 1
		}
	}
	return d
}

// Count is the number of latencies recorded.
func (s *Snapshot) Count() uint64 { return s.n }

// Max is the largest latency recorded.
func (s *Snapshot) Max() time.Duration { return time.Duration(s.max) }

// Quantile returns the q-quantile (0 < q <= 1), as the midpoint of its
// bucket, or 0 when nothing was recorded.
func (s *Snapshot) Quantile(q float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := uint64(q*float64(s.n) + 0.5)
	rank = min(max(rank, 1), s.n)
	var seen uint64
	for i, c := range s.counts {
		if seen += c; seen >= rank {
			lo, hi := bucketRange(i)
			mid := lo + (hi-lo)/2
			if s.max > 0 && mid > s.max {
				mid = s.max
			}
			return time.Duration(mid)
		}
	}
	return time.Duration(s.max)
}
