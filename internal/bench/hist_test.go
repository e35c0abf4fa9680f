package bench

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactPercentile is the nearest-rank percentile of sorted xs.
func exactPercentile(sorted []int64, p float64) int64 {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func TestHistogramPercentilesWithinRelativeError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dist := range []struct {
		name string
		gen  func() int64
	}{
		{"uniform-small", func() int64 { return rng.Int64N(300) }},
		{"uniform-wide", func() int64 { return rng.Int64N(10_000_000_000) }},
		{"lognormal", func() int64 { return int64(math.Exp(rng.NormFloat64()*2 + 12)) }},
		{"constant", func() int64 { return 123_456_789 }},
	} {
		t.Run(dist.name, func(t *testing.T) {
			h := NewHistogram()
			xs := make([]int64, 100_000)
			for i := range xs {
				xs[i] = dist.gen()
				h.Record(xs[i])
			}
			slices.Sort(xs)
			for _, p := range []float64{0, 1, 25, 50, 90, 99, 99.9, 99.99, 100} {
				got, want := h.Percentile(p), exactPercentile(xs, p)
				if d := math.Abs(float64(got - want)); d > RelativeError*float64(want)+0.5 {
					t.Errorf("p%v = %d, want %d ± %.3f%%", p, got, want, RelativeError*100)
				}
			}
			if h.Max() != xs[len(xs)-1] || h.Min() != xs[0] || h.Count() != uint64(len(xs)) {
				t.Errorf("max/min/count = %d/%d/%d, want %d/%d/%d", h.Max(), h.Min(), h.Count(), xs[len(xs)-1], xs[0], len(xs))
			}
		})
	}
}

func TestHistogramBuckets(t *testing.T) {
	// Every value falls in a bucket whose range contains it, and bucket
	// ranges are contiguous and increasing.
	prevHi := int64(-1)
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketRange(i)
		if lo != prevHi+1 || hi < lo {
			t.Fatalf("bucket %d = [%d, %d] after %d", i, lo, hi, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucketOf(%d)=%d, bucketOf(%d)=%d, want %d", lo, bucketOf(lo), hi, bucketOf(hi), i)
		}
		prevHi = hi
		if hi < 0 || hi == math.MaxInt64 {
			break
		}
	}
	if b := bucketOf(math.MaxInt64); b >= numBuckets {
		t.Fatalf("MaxInt64 in bucket %d of %d", b, numBuckets)
	}
}

func TestHistogramMerge(t *testing.T) {
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	for i := int64(1); i <= 10000; i++ {
		v := i * 1000
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
		all.Record(v)
	}
	a.Merge(b)
	a.Merge(nil)
	a.Merge(NewHistogram())
	if a.Count() != all.Count() || a.Max() != all.Max() || a.Min() != all.Min() || a.Mean() != all.Mean() {
		t.Fatalf("merged count/max/min/mean differ: %d/%d/%d/%v vs %d/%d/%d/%v",
			a.Count(), a.Max(), a.Min(), a.Mean(), all.Count(), all.Max(), all.Min(), all.Mean())
	}
	for _, p := range []float64{50, 99, 99.9} {
		if a.Percentile(p) != all.Percentile(p) {
			t.Errorf("p%v: merged %d, single %d", p, a.Percentile(p), all.Percentile(p))
		}
	}
	empty := NewHistogram()
	if empty.Percentile(99) != 0 || empty.Max() != 0 || empty.Min() != 0 || empty.Mean() != 0 {
		t.Error("empty histogram reports non-zero values")
	}
	empty.Record(-5) // clock step: counted as 0
	if empty.Max() != 0 || empty.Count() != 1 {
		t.Error("negative value not recorded as 0")
	}
}

// fakeClock drives a Schedule without real sleeping.
type fakeClock struct {
	now   time.Time
	slept []time.Duration
	idles int
}

func TestScheduleIntendedTimes(t *testing.T) {
	start := time.Unix(1000, 0)
	fc := &fakeClock{now: start}
	s := NewSchedule(start, 1000) // 1 ms apart
	s.now = func() time.Time { return fc.now }
	s.sleep = func(_ context.Context, d time.Duration) error {
		fc.slept = append(fc.slept, d)
		fc.now = fc.now.Add(d)
		return nil
	}
	s.OnIdle = func() { fc.idles++ }
	ctx := context.Background()
	// On plan: every message waits for its slot.
	for i := 0; i < 5; i++ {
		got, err := s.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := start.Add(time.Duration(i) * time.Millisecond); !got.Equal(want) {
			t.Fatalf("message %d due %v, want %v", i, got, want)
		}
	}
	if len(fc.slept) != 4 || fc.idles != 4 {
		t.Fatalf("slept %v, idle %d times; want 4 sleeps of 1ms", fc.slept, fc.idles)
	}
	// A stall of 10 ms: the next messages keep their planned times (they
	// are late, and that lateness is measured), and are sent without
	// waiting until the sender has caught up.
	fc.now = fc.now.Add(10 * time.Millisecond)
	fc.slept = nil
	if b := s.Behind(); b != 9*time.Millisecond {
		t.Fatalf("Behind = %v, want 9ms", b)
	}
	for i := 5; i < 15; i++ {
		got, _ := s.Next(ctx)
		if want := start.Add(time.Duration(i) * time.Millisecond); !got.Equal(want) {
			t.Fatalf("message %d due %v, want %v (intended time must not slip)", i, got, want)
		}
	}
	if len(fc.slept) != 0 {
		t.Fatalf("a late sender slept %v", fc.slept)
	}
	got, _ := s.Next(ctx) // message 15 is due at +15ms; now is +14ms
	if len(fc.slept) != 1 || fc.slept[0] != time.Millisecond || !got.Equal(start.Add(15*time.Millisecond)) {
		t.Fatalf("after catching up: slept %v, due %v", fc.slept, got)
	}
}

func TestScheduleUnpacedAndCancel(t *testing.T) {
	s := NewSchedule(time.Now(), 0)
	before := time.Now()
	got, err := s.Next(context.Background())
	if err != nil || got.Before(before) || s.Behind() != 0 {
		t.Fatalf("unpaced Next = %v, %v", got, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewSchedule(time.Now().Add(time.Hour), 1).Next(ctx); err == nil {
		t.Fatal("Next on a cancelled context did not fail")
	}
	// A real short sleep returns (precise sleep path).
	s = NewSchedule(time.Now(), 10000)
	for i := 0; i < 20; i++ {
		if _, err := s.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
