package router

import (
	"slices"
	"time"
)

// ackedLog is what a feed remembers of the entries it acknowledged in
// full (feed.acked): their sequences, for ackedKeep. It is written on
// every full acknowledgement of a clustered feed and read only when the
// engine delivers an entry again, so writing is an append and reading
// pays: sequences go into one bucket per second, 8 bytes each (no map),
// and a bucket is sorted when a redelivery asks — once for a closed
// bucket; the open one again when it grew (pdqsort of an almost sorted
// slice is close to linear).
type ackedLog struct {
	buckets []ackedBucket // oldest first
	n       int           // sequences held
}

type ackedBucket struct {
	sec    int64    // Unix second of its acknowledgements
	seqs   []uint64 // seqs[:sorted] are in order
	sorted int
}

// ackedMax bounds a feed's log (16 MiB of sequences): beyond it the
// oldest buckets go early, so at more than ackedMax / ackedKeep full
// acknowledgements per second (~30k/s) a lost ack is recognised only
// while its entry is among the newest ackedMax.
const ackedMax = 2 << 20

func (l *ackedLog) add(seq uint64, now time.Time) {
	sec := now.Unix()
	drop := 0
	for drop < len(l.buckets) && (l.buckets[drop].sec < sec-int64(ackedKeep()/time.Second) || l.n >= ackedMax && drop < len(l.buckets)-1) {
		l.n -= len(l.buckets[drop].seqs)
		drop++
	}
	if drop > 0 {
		n := copy(l.buckets, l.buckets[drop:])
		clear(l.buckets[n:]) // the tail's copies would keep the dropped slices alive
		l.buckets = l.buckets[:n]
	}
	if k := len(l.buckets); k == 0 || l.buckets[k-1].sec != sec {
		l.buckets = append(l.buckets, ackedBucket{sec: sec})
	}
	b := &l.buckets[len(l.buckets)-1]
	b.seqs = append(b.seqs, seq)
	l.n++
}

func (l *ackedLog) has(seq uint64) bool {
	for i := range l.buckets {
		b := &l.buckets[i]
		if b.sorted < len(b.seqs) {
			slices.Sort(b.seqs)
			b.sorted = len(b.seqs)
		}
		if _, ok := slices.BinarySearch(b.seqs, seq); ok {
			return true
		}
	}
	return false
}
