package quota

import (
	"testing"
	"time"
)

// Wait looks at a bucket without taking a token: an empty bucket says
// how long until it has one, as Take's refusal does; a fresh bucket and
// an unlimited rate never wait.
func TestBucketWait(t *testing.T) {
	var b Bucket
	now := time.Unix(1000, 0)
	if w := b.Wait(now, 10, 2); w != 0 {
		t.Fatalf("fresh bucket waits %v", w)
	}
	for range 2 {
		if ok, _ := b.Take(now, 10, 2); !ok {
			t.Fatal("burst refused")
		}
	}
	_, want := b.Take(now, 10, 2)
	for range 3 { // asking takes nothing
		if w := b.Wait(now, 10, 2); w != want || w != 100*time.Millisecond {
			t.Fatalf("Wait %v, Take's wait %v, want 100ms", w, want)
		}
	}
	if w := b.Wait(now.Add(100*time.Millisecond), 10, 2); w != 0 {
		t.Fatalf("refilled bucket waits %v", w)
	}
	if w := b.Wait(now, 0, 0); w != 0 {
		t.Fatalf("unlimited waits %v", w)
	}
	var l Limiter
	r := Rates{In: 10, InBurst: 1}
	if err := l.Wait(now, "t", r); err != nil {
		t.Fatalf("no bucket yet: %v", err)
	}
	if err := l.Admit(now, "t", r, nil); err != nil {
		t.Fatal(err)
	}
	err := l.Wait(now, "t", r)
	if qe, ok := err.(*Error); !ok || qe.Limit != MessagesIn || qe.RetryAfter != 100*time.Millisecond {
		t.Fatalf("empty bucket: %v", err)
	}
}
