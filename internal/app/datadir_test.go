package app_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/app"
	"github.com/throngmq/throng/internal/testkit"
)

// TestDataDirLock: a second node on a data directory in use fails at once,
// naming the holder, without starting an engine there; the first keeps
// working; once the first has stopped the directory can be used again.
// Issue 11.1: two nodes on one directory corrupted the JetStream store.
func TestDataDirLock(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.AdminPassword = "lock-pw"
	first := start(t, cfg)

	b, err := os.ReadFile(filepath.Join(dir, app.LockFile))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file = %q, %v; want this PID %d", b, err, os.Getpid())
	}

	second, err := app.New(testConfig(t, dir), app.WithLogger(testkit.Logger()), app.WithStdout(&syncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- second.Run(context.Background()) }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("second node on the same data directory did not fail")
	}
	var locked *app.DataDirLockedError
	if !errors.As(err, &locked) || locked.PID != os.Getpid() || locked.Dir != dir {
		t.Fatalf("second Run = %v (%#v); want DataDirLockedError naming PID %d", err, locked, os.Getpid())
	}
	if msg := err.Error(); !strings.Contains(msg, "PID "+strconv.Itoa(os.Getpid())) || !strings.Contains(msg, dir) {
		t.Fatalf("message %q does not name the holder and directory", msg)
	}
	select {
	case <-second.Ready():
		t.Fatal("second node became ready")
	default:
	}

	// The first node is unaffected.
	if st := first.status(t, "admin", "lock-pw"); st != 200 {
		t.Fatalf("first node after the refused start: %d", st)
	}

	// Released on shutdown: a new node starts on the directory and finds
	// the first one's data.
	first.stop()
	if b, _ := os.ReadFile(filepath.Join(dir, app.LockFile)); len(b) != 0 {
		t.Fatalf("lock file still names a PID after shutdown: %q", b)
	}
	third := start(t, testConfig(t, dir))
	if st := third.status(t, "admin", "lock-pw"); st != 200 {
		t.Fatalf("third node: %d", st)
	}
}
