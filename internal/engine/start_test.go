package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStartFailsFast (issue 14 item 9): a store the server cannot use
// fails Start at once with the server's own reason, instead of after the
// 30-second readiness timeout with "did not become ready".
func TestStartFailsFast(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jetstream"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e, err := Start(Config{DataDir: dir, DiskFreeLimit: -1})
	if err == nil {
		e.Shutdown()
		t.Fatal("started on a store directory that is a file")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s", d)
	}
	if !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("error %q does not say why", err)
	}
}
