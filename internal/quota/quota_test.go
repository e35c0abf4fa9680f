package quota

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestBucketBurstThenRate(t *testing.T) {
	var b Bucket
	// Burst defaults to one second's worth: 10 at once.
	for i := range 10 {
		if ok, _ := b.Take(t0, 10, 0); !ok {
			t.Fatalf("take %d refused within the burst", i)
		}
	}
	ok, wait := b.Take(t0, 10, 0)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("11th take = %v, %v; want refused, 100ms", ok, wait)
	}
	// 50 ms later: half a token, still refused, 50 ms to go.
	if ok, wait := b.Take(t0.Add(50*time.Millisecond), 10, 0); ok || wait != 50*time.Millisecond {
		t.Fatalf("take at +50ms = %v, %v; want refused, 50ms", ok, wait)
	}
	if ok, _ := b.Take(t0.Add(100*time.Millisecond), 10, 0); !ok {
		t.Fatal("take at +100ms refused")
	}
	// A long pause refills to the burst, not beyond.
	later := t0.Add(time.Hour)
	n := 0
	for {
		if ok, _ := b.Take(later, 10, 0); !ok {
			break
		}
		n++
	}
	if n != 10 {
		t.Fatalf("after an hour %d tokens, want the burst 10", n)
	}
}

func TestBucketExplicitBurstAndLiveChange(t *testing.T) {
	var b Bucket
	for i := range 3 {
		if ok, _ := b.Take(t0, 1, 3); !ok {
			t.Fatalf("take %d refused within burst 3", i)
		}
	}
	if ok, wait := b.Take(t0, 1, 3); ok || wait != time.Second {
		t.Fatalf("4th take = %v, %v; want refused, 1s", ok, wait)
	}
	// Raised rate applies at once.
	if ok, _ := b.Take(t0.Add(100*time.Millisecond), 10, 3); !ok {
		t.Fatal("raised rate not applied")
	}
	// Unlimited.
	if ok, _ := b.Take(t0, 0, 0); !ok {
		t.Fatal("rate 0 must be unlimited")
	}
	// A fractional rate still allows one message (burst at least 1).
	var s Bucket
	if ok, _ := s.Take(t0, 0.5, 0); !ok {
		t.Fatal("rate 0.5: first message refused")
	}
	if ok, wait := s.Take(t0, 0.5, 0); ok || wait != 2*time.Second {
		t.Fatalf("rate 0.5: second take = %v, %v; want refused, 2s", ok, wait)
	}
}

func TestLimiterTenantsAndConnections(t *testing.T) {
	var l Limiter
	r := Rates{In: 5, InPerConnection: 2}
	var c1, c2, c3 Bucket
	// Connection 1 gets its 2, then its own limit (not the tenant's).
	for range 2 {
		if err := l.Admit(t0, "a", r, &c1); err != nil {
			t.Fatal(err)
		}
	}
	var qe *Error
	if err := l.Admit(t0, "a", r, &c1); !errors.As(err, &qe) || qe.Limit != MessagesInPerConnection {
		t.Fatalf("3rd on c1: %v; want the per-connection limit", err)
	}
	// Connections 2 and 3 share the tenant's remaining 3.
	for _, c := range []*Bucket{&c2, &c2, &c3} {
		if err := l.Admit(t0, "a", r, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Admit(t0, "a", r, &c3); !errors.As(err, &qe) || qe.Limit != MessagesIn || qe.RetryAfter != 200*time.Millisecond {
		t.Fatalf("6th of the tenant: %v; want the tenant limit, retry 200ms", err)
	}
	if qe.RetryAfterSeconds() != 1 {
		t.Fatalf("RetryAfterSeconds = %d, want 1", qe.RetryAfterSeconds())
	}
	// Another tenant is unaffected.
	for range 5 {
		if err := l.Admit(t0, "b", r, nil); err != nil {
			t.Fatalf("tenant b: %v", err)
		}
	}
	// No limits: always admitted.
	for range 100 {
		if err := l.Admit(t0, "c", Rates{}, &c1); err != nil {
			t.Fatal(err)
		}
	}
}
