package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildBinary builds cmd/throng once per test binary run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "throng-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "throng")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{string(out), err}
	}
	return bin, nil
})

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// proc is a `throng serve` child process.
type proc struct {
	cmd       *exec.Cmd
	adminAddr string
	stdout    *lockedBuffer
	done      chan struct{} // closed when the process has exited
	waitErr   error         // set before done is closed
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServe starts `throng serve` on a data directory with every listener
// on a free loopback port, and waits for the JSON log line that gives the
// admin address (serve logs "admin listening" with addr=host:port).
func startServe(t *testing.T, bin, dataDir string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "serve",
		"--data-dir", dataDir,
		"--admin", "127.0.0.1:0",
		"--amqp", "127.0.0.1:0", "--amqps", "", "--mqtt", "127.0.0.1:0", "--mqtts", "", "--http", "127.0.0.1:0", "--https", "",
		"--log-format", "json")
	cmd.Env = append(os.Environ(), "THRONG_ADMIN_PASSWORD=") // the test wants a generated password
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stdout: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "admin listening" {
				addrc <- line.Addr
			}
			if os.Getenv("THRONG_TEST_LOG") != "" {
				// Not t.Logf: this goroutine may outlive the test.
				os.Stderr.Write(append(sc.Bytes(), '\n'))
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case p.adminAddr = <-addrc:
	case <-p.done:
		t.Fatalf("serve exited early: %v", p.waitErr)
	case <-time.After(60 * time.Second):
		t.Fatal("no 'admin listening' line within 60s")
	}
	return p
}

func (p *proc) env(password string) []string {
	return []string{"THRONG_SERVER=http://" + p.adminAddr, "THRONG_PASSWORD=" + password}
}

var generatedPW = regexp.MustCompile(`generated admin password: (\S+)`)

func TestProcessKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dataDir := t.TempDir()

	p := startServe(t, bin, dataDir)
	// stdout is copied from a pipe by its own goroutine, which may lag
	// behind the stderr line startServe waited for: poll for it.
	var m []string
	for deadline := time.Now().Add(10 * time.Second); m == nil; {
		if m = generatedPW.FindStringSubmatch(p.stdout.String()); m == nil {
			if time.Now().After(deadline) {
				t.Fatalf("no generated password on stdout: %q", p.stdout.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	pw := m[1]
	env := p.env(pw)
	mustCLI(t, env, 0, "tenant", "create", "acme", "--auto-create", "jobs/#=queue")
	mustCLI(t, env, 0, "address", "create", "orders/eu", "--type", "queue", "--tenant", "acme", "--max-messages", "10")
	mustCLI(t, env, 0, "user", "create", "app1", "--user-password", "pw1", "--tenant", "acme", "--permission", "orders/#=send")

	// kill -9: no graceful shutdown.
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done

	p = startServe(t, bin, dataDir)
	if out := p.stdout.String(); strings.Contains(out, "generated admin password") {
		t.Fatalf("password generated again after restart: %q", out)
	}
	env = p.env(pw)
	var tenants []struct {
		Name       string `json:"name"`
		AutoCreate []struct {
			Pattern string `json:"pattern"`
		} `json:"autoCreate"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, env, 0, "tenant", "list", "-o", "json").stdout), &tenants); err != nil {
		t.Fatal(err)
	}
	if len(tenants) != 2 || tenants[0].Name != "acme" || len(tenants[0].AutoCreate) != 1 {
		t.Fatalf("tenants after kill -9: %+v", tenants)
	}
	var addr struct {
		Name   string `json:"name"`
		Type   string `json:"type"`
		Limits struct {
			MaxMessages int `json:"maxMessages"`
		} `json:"limits"`
		Stats *struct{} `json:"stats"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, env, 0, "address", "get", "orders/eu", "--tenant", "acme", "-o", "json").stdout), &addr); err != nil {
		t.Fatal(err)
	}
	if addr.Name != "orders/eu" || addr.Type != "queue" || addr.Limits.MaxMessages != 10 || addr.Stats == nil {
		t.Fatalf("address after kill -9: %+v", addr)
	}
	if out := mustCLI(t, env, 0, "user", "list", "--tenant", "acme").stdout; !strings.Contains(out, "app1") {
		t.Fatalf("user lost after kill -9: %s", out)
	}

	// SIGTERM: graceful shutdown, exit status 0.
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

// TestProcessDataDirLock: a second `throng serve` on a data directory that
// a running node holds exits at once with status 3 and a message naming
// the holder's PID; the first node keeps serving (issue 11.1: the second
// one used to start and corrupt the store).
func TestProcessDataDirLock(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dataDir := t.TempDir()
	first := startServe(t, bin, dataDir)
	var m []string
	for deadline := time.Now().Add(10 * time.Second); m == nil; {
		if m = generatedPW.FindStringSubmatch(first.stdout.String()); m == nil {
			if time.Now().After(deadline) {
				t.Fatalf("no generated password on stdout: %q", first.stdout.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	env := first.env(m[1])
	mustCLI(t, env, 0, "address", "create", "before", "--type", "queue")

	// Other ports, same directory.
	second := exec.Command(bin, "serve",
		"--data-dir", dataDir,
		"--admin", "127.0.0.1:0",
		"--amqp", "127.0.0.1:0", "--amqps", "", "--mqtt", "127.0.0.1:0", "--mqtts", "", "--http", "127.0.0.1:0", "--https", "")
	var stderr lockedBuffer
	second.Stderr = &stderr
	begin := time.Now()
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- second.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(20 * time.Second):
		_ = second.Process.Kill()
		<-exited
		t.Fatalf("second serve on the same data directory still running after 20s; stderr:\n%s", stderr.String())
	}
	took := time.Since(begin)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInUse {
		t.Fatalf("second serve: %v, want exit status %d; stderr:\n%s", err, exitInUse, stderr.String())
	}
	want := fmt.Sprintf("data directory %s is in use by throng process PID %d", dataDir, first.cmd.Process.Pid)
	if !strings.Contains(stderr.String(), want) {
		t.Fatalf("stderr does not say %q:\n%s", want, stderr.String())
	}
	if strings.Contains(stderr.String(), "throng ready") {
		t.Fatalf("second serve logged ready:\n%s", stderr.String())
	}
	t.Logf("second serve refused after %v", took)

	// The first node is unaffected and still writes its store.
	mustCLI(t, env, 0, "address", "create", "after", "--type", "queue")
	if out := mustCLI(t, env, 0, "address", "list").stdout; !strings.Contains(out, "before") || !strings.Contains(out, "after") {
		t.Fatalf("first node's addresses: %s", out)
	}
}
