package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram is a log-linear histogram of non-negative int64 values
// (latencies in nanoseconds), in the manner of HdrHistogram: values below
// 2·subCount are counted exactly; above, each power-of-two range is split
// into subCount equal buckets. A value is reported as the midpoint of its
// bucket, so a reported value is within RelativeError of the recorded one.
// Memory is fixed (about 58 KiB) whatever the range. Not safe for
// concurrent use: give each goroutine its own and Merge them.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	min    int64
	max    int64
	sum    float64
}

const (
	subBits    = 7
	subCount   = 1 << subBits // buckets per power of two
	numBuckets = (64-subBits-1)*subCount + 2*subCount
	// RelativeError bounds |reported - recorded| / recorded for every
	// percentile (half a bucket width over the bucket's low end).
	RelativeError = 1.0 / (2 * subCount)
)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxInt64} }

func bucketOf(v int64) int {
	u := uint64(v)
	b := bits.Len64(u)
	if b <= subBits+1 {
		return int(u) // linear region [0, 2·subCount)
	}
	shift := b - subBits - 1
	return shift*subCount + int(u>>shift) // top in [subCount, 2·subCount)
}

// bucketRange returns the lowest and highest value counted in bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*subCount {
		return int64(i), int64(i)
	}
	shift := i/subCount - 1
	top := uint64(i - shift*subCount)
	lo = int64(top << shift)
	hi = int64((top+1)<<shift - 1)
	return lo, hi
}

// Record counts one value; negative values count as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// RecordDuration counts d in nanoseconds.
func (h *Histogram) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest recorded value (exact), 0 when empty.
func (h *Histogram) Max() int64 {
	if h.n == 0 {
		return 0
	}
	return h.max
}

// Min is the smallest recorded value (exact), 0 when empty.
func (h *Histogram) Min() int64 {
	if h.n == 0 {
		return 0
	}
	return h.min
}

// Mean is the exact mean, 0 when empty.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Percentile returns the value at or below which p percent (0..100) of
// the recorded values lie, within RelativeError; 0 when empty.
func (h *Histogram) Percentile(p float64) int64 {
	if h.n == 0 {
		return 0
	}
	if p >= 100 {
		return h.max
	}
	rank := uint64(math.Ceil(p / 100 * float64(h.n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := lo + (hi-lo)/2
			// The exact extremes are known: never report beyond them.
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}
