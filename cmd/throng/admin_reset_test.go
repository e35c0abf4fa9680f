package main

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// adminStatus answers GET /api/status as user admin with pw.
func adminStatus(t *testing.T, p *proc, pw string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.adminAddr+"/api/status", nil)
	req.SetBasicAuth("admin", pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitPassword polls a process's stdout for the generated password.
func waitPassword(t *testing.T, p *proc) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if m := generatedPW.FindStringSubmatch(p.stdout.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no generated password on stdout: %q", p.stdout.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stopServe(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.waitErr != nil {
			t.Fatalf("exit after SIGTERM: %v", p.waitErr)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
}

// TestAdminResetPassword (issue 14 item 10): the operator who lost the
// one-time admin password stops the node, runs throng admin
// reset-password on its data directory and logs in with the new one; the
// command refuses while the node runs.
func TestAdminResetPassword(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dataDir := t.TempDir()
	p := startServe(t, bin, dataDir)
	lost := waitPassword(t, p)

	// Refused while the node holds the data directory: exit 3, the
	// holder named, nothing changed.
	r := mustCLI(t, nil, exitInUse, "admin", "reset-password", "--data-dir", dataDir)
	if !strings.Contains(r.stderr, "in use by throng process PID") || !strings.Contains(r.stderr, "stop that node first") || r.stdout != "" {
		t.Fatalf("reset while running:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	if st := adminStatus(t, p, lost); st != 200 {
		t.Fatalf("the old password after a refused reset: %d", st)
	}
	stopServe(t, p)

	// Generated: shown once on stdout.
	r = mustCLI(t, []string{"THRONG_DATA_DIR=" + dataDir}, 0, "admin", "reset-password")
	fields := strings.Fields(strings.TrimPrefix(r.stdout, "new admin password: "))
	if !strings.HasPrefix(r.stdout, "new admin password: ") || len(fields) == 0 || len(fields[0]) < 20 {
		t.Fatalf("reset output: %q", r.stdout)
	}
	fresh := fields[0]
	p = startServe(t, bin, dataDir)
	if out := p.stdout.String(); strings.Contains(out, "generated admin password") {
		t.Fatalf("a password generated again: %q", out)
	}
	if st := adminStatus(t, p, fresh); st != 200 {
		t.Fatalf("the new password: %d", st)
	}
	if st := adminStatus(t, p, lost); st != 401 {
		t.Fatalf("the old password after the reset: %d", st)
	}
	// The admin commands work with it.
	mustCLI(t, p.env(fresh), 0, "tenant", "create", "after-reset")
	stopServe(t, p)

	// Chosen, from standard input (not a flag: ps shows flags).
	old := stdin
	defer func() { stdin = old }()
	stdin = strings.NewReader("chosen-Pw-1\n")
	r = mustCLI(t, nil, 0, "admin", "reset-password", "--data-dir", dataDir, "--password-stdin")
	if strings.Contains(r.stdout+r.stderr, "chosen-Pw-1") || !strings.Contains(r.stdout, "admin password set") {
		t.Fatalf("stdin reset output: %q %q", r.stdout, r.stderr)
	}
	p = startServe(t, bin, dataDir)
	if st := adminStatus(t, p, "chosen-Pw-1"); st != 200 {
		t.Fatalf("the chosen password: %d", st)
	}
	stopServe(t, p)

	// With adminPassword configured a reset would be undone at the next
	// start: refused, exit 2.
	r = mustCLI(t, []string{"THRONG_ADMIN_PASSWORD=x"}, exitUsage, "admin", "reset-password", "--data-dir", dataDir)
	if !strings.Contains(r.stderr, "adminPassword is configured") || strings.Contains(r.stderr, "THRONG_ADMIN_PASSWORD=x") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	// A directory no node has used has no administrator to reset.
	r = mustCLI(t, nil, exitError, "admin", "reset-password", "--data-dir", t.TempDir())
	if !strings.Contains(r.stderr, "no throng node has used this data directory") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	stdin = strings.NewReader("")
	mustCLI(t, nil, exitUsage, "admin", "reset-password", "--data-dir", dataDir, "--password-stdin")
	mustCLI(t, nil, exitUsage, "admin", "reset-password", "extra")
	mustCLI(t, nil, exitUsage, "admin")
	mustCLI(t, nil, exitUsage, "admin", "bogus")
}
