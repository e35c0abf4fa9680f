package engine

import (
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDiskGuard: the alarm goes on below the limit (the reserve file is
// given up), stays on until three times the limit is free, then goes off
// with the reserve back.
func TestDiskGuard(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Int64
	free.Store(100 << 20)
	const limit = 4 << 20
	g, err := startDiskGuard(dir, filepath.Join(dir, "jetstream"), limit,
		func(string) (int64, error) { return free.Load(), nil }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	reserve := filepath.Join(dir, reserveName)
	st, err := os.Stat(reserve)
	if err != nil || st.Size() != limit {
		t.Fatalf("reserve file: %v %v", st, err)
	}
	if g.alarm.Load() {
		t.Fatal("alarm on with plenty of space")
	}
	free.Store(limit - 1)
	waitFor(t, "the alarm", g.alarm.Load)
	if _, err := os.Stat(reserve); !os.IsNotExist(err) {
		t.Fatalf("reserve kept under the alarm: %v", err)
	}
	free.Store(2 * limit) // above the limit, below the hysteresis
	time.Sleep(3 * diskPoll)
	if !g.alarm.Load() {
		t.Fatal("alarm off at twice the limit")
	}
	free.Store(3 * limit)
	waitFor(t, "the alarm to end", func() bool { return !g.alarm.Load() })
	if _, err := os.Stat(reserve); err != nil {
		t.Fatalf("reserve not back: %v", err)
	}
}

// TestDiskGuardRealFS: the default limit and the reserve on the real file
// system of the test's directory.
func TestDiskGuardRealFS(t *testing.T) {
	dir := t.TempDir()
	e, err := Start(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if e.DiskAlarm() {
		t.Skip("the test machine's disk is nearly full")
	}
	if l := DefaultDiskFreeLimit(dir); l < 1<<20 || l > 256<<20 {
		t.Fatalf("default limit %d", l)
	}
	if _, err := os.Stat(filepath.Join(dir, reserveName)); err != nil {
		t.Fatalf("no reserve file: %v", err)
	}
}
