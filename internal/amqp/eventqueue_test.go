package amqp

import (
	"sync"
	"testing"
)

// TestEventQueueReuse: with batches recycled (eventQueue.recycle), every
// event pushed is taken exactly once and each producer's events come in
// the order it pushed them — what the connection loop relies on (a
// settlement after its delivery, a drain completion after the transfers).
func TestEventQueueReuse(t *testing.T) {
	q := &eventQueue{signal: make(chan struct{}, 1)}
	const producers, each = 4, 20000
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				q.push(event{kind: evOutcome, id: uint32(p<<24 | i)})
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	next := make([]int, producers)
	total := 0
	check := func(es []event) {
		for _, e := range es {
			p, i := int(e.id>>24), int(e.id&(1<<24-1))
			if i != next[p] {
				t.Fatalf("producer %d: event %d after %d", p, i, next[p]-1)
			}
			next[p]++
			total++
		}
	}
	for {
		select {
		case <-q.signal:
		case <-done:
			es := q.take()
			check(es)
			q.recycle(es)
			if total != producers*each {
				t.Fatalf("took %d events of %d", total, producers*each)
			}
			return
		}
		es := q.take()
		check(es)
		q.recycle(es)
	}
}
