package clock

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOffsetIsAWallClockJump: with an offset, Now is the shifted wall
// clock without a monotonic reading, so that comparisons with it (stored
// timestamps, or another Now) see the jump; without one it is time.Now.
func TestOffsetIsAWallClockJump(t *testing.T) {
	t.Cleanup(func() { SetOffset(0) })
	if s := Now().String(); !strings.Contains(s, "m=") {
		t.Fatalf("without an offset Now should be time.Now (monotonic reading), got %s", s)
	}
	stored := time.UnixMilli(time.Now().Add(time.Minute).UnixMilli()) // a stored expiry: wall clock only
	if Until(stored) <= 0 || Now().After(stored) {
		t.Fatal("a minute ahead is not in the future")
	}
	SetOffset(time.Hour)
	if s := Now().String(); strings.Contains(s, "m=") {
		t.Fatalf("with an offset Now must have no monotonic reading, got %s", s)
	}
	if d := Now().Sub(time.Now()); d < time.Hour-time.Second || d > time.Hour+time.Second {
		t.Fatalf("offset 1h: Now is %s ahead", d)
	}
	if !Now().After(stored) || Until(stored) > -59*time.Minute {
		t.Fatalf("after a jump of 1h the stored expiry must be past (until %s)", Until(stored))
	}
	// An expiry taken from Now before a jump back is judged by the
	// wall clock too (not by the monotonic reading).
	exp := Now().Add(time.Minute)
	SetOffset(-time.Hour)
	if d := Until(exp); d < 2*time.Hour || d > 2*time.Hour+2*time.Minute {
		t.Fatalf("jump back by 2h: an expiry a minute ahead is %s ahead, want about 2h1m", d)
	}
	if Since(exp) >= 0 {
		t.Fatal("Since of a future time must be negative")
	}
	SetOffset(0)
	if Offset() != 0 || !strings.Contains(Now().String(), "m=") {
		t.Fatal("offset 0 is time.Now again")
	}
}

// TestWatch: the offset file is applied at once and on every change, and
// each applied value is acknowledged in <file>.applied; a bad value is
// ignored.
func TestWatch(t *testing.T) {
	t.Cleanup(func() { SetOffset(0) })
	old := pollInterval
	pollInterval = 5 * time.Millisecond
	t.Cleanup(func() { pollInterval = old })
	dir := t.TempDir()
	path := filepath.Join(dir, "offset")
	if err := os.WriteFile(path, []byte("90m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := Watch(ctx, path, nil); err != nil {
		t.Fatal(err)
	}
	if Offset() != 90*time.Minute {
		t.Fatalf("offset %s after Watch, want 1h30m0s", Offset())
	}
	applied := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := os.ReadFile(path + ".applied")
			if strings.TrimSpace(string(b)) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("applied %q, want %q (offset %s)", b, want, Offset())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	applied("1h30m0s")
	for _, c := range []struct{ write, want string }{{"-2h", "-2h0m0s"}, {"", "0s"}, {"10s", "10s"}} {
		if err := os.WriteFile(path, []byte(c.write), 0o644); err != nil {
			t.Fatal(err)
		}
		applied(c.want)
		if Offset().String() != c.want {
			t.Fatalf("offset %s, want %s", Offset(), c.want)
		}
	}
	if err := os.WriteFile(path, []byte("soon"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if Offset() != 10*time.Second {
		t.Fatalf("a bad value changed the offset to %s", Offset())
	}
	os.Remove(path)
	applied("0s")
	cancel()

	// A bad value at the start is an error.
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Watch(context.Background(), bad, nil); err == nil {
		t.Fatal("Watch accepted a bad offset")
	}
}
