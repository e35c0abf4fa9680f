package router

import (
	"testing"
	"time"
)

// The acked log finds what it holds for ackedKeep (whatever the order of
// the acknowledgements, before and after a lookup sorted a bucket),
// forgets it after, and stays within ackedMax.
func TestAckedLog(t *testing.T) {
	var l ackedLog
	t0 := time.Unix(1_000_000, 0)
	for i, seq := range []uint64{50, 10, 30} {
		l.add(seq, t0.Add(time.Duration(i)*300*time.Millisecond))
	}
	for _, seq := range []uint64{10, 30, 50} {
		if !l.has(seq) {
			t.Fatalf("%d not found", seq)
		}
	}
	l.add(20, t0.Add(time.Second/2)) // into the sorted bucket, out of order
	l.add(5, t0.Add(2*time.Second))  // a new bucket
	for _, seq := range []uint64{5, 10, 20, 30, 50} {
		if !l.has(seq) {
			t.Fatalf("%d not found after more acks", seq)
		}
	}
	if l.has(40) || l.has(0) {
		t.Fatal("found a sequence never acknowledged")
	}
	// Past ackedKeep the first buckets go with the next acknowledgement.
	l.add(99, t0.Add(ackedKeep()+3*time.Second))
	if l.has(10) || l.has(5) || !l.has(99) || l.n != 1 {
		t.Fatalf("after ackedKeep: 10 %v, 5 %v, 99 %v, n %d", l.has(10), l.has(5), l.has(99), l.n)
	}
	// The bound: the oldest buckets go early, the newest stay.
	var b ackedLog
	for i := range ackedMax + 10 {
		b.add(uint64(i), t0.Add(time.Duration(i)*time.Microsecond)) // three buckets, all within ackedKeep
	}
	if b.n > ackedMax || !b.has(ackedMax+9) || b.has(0) {
		t.Fatalf("bound: n %d (max %d), newest %v, oldest %v", b.n, ackedMax, b.has(ackedMax+9), b.has(0))
	}
}

// BenchmarkAckedLogAdd is the cost on the settle path of a clustered feed.
func BenchmarkAckedLogAdd(b *testing.B) {
	var l ackedLog
	t0 := time.Now()
	b.ReportAllocs()
	for i := range b.N {
		l.add(uint64(i), t0.Add(time.Duration(i)*10*time.Microsecond))
	}
}
