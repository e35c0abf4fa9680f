package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// node is a `throng serve` child process on free loopback ports, for the
// modes that measure a whole node with its own data directory (registry).
// Only MQTT and the admin API listen (plus pprof when asked); the other
// listeners are off so that nothing else shares the machine's ports.
type node struct {
	dataDir, logPath string
	password         string
	admin, mqtt      string // host:port
	pprof            string // host:port, "" when off

	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's, set before done closes
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startNode starts bin serve on dataDir (created if missing) and waits
// until /readyz answers 200. extra are further serve flags.
func startNode(ctx context.Context, bin, dataDir, logPath string, pprof bool, extra []string) (*node, error) {
	n := &node{dataDir: dataDir, logPath: logPath, password: "bench-" + randomID() + randomID()}
	addrs := []*string{&n.admin, &n.mqtt}
	if pprof {
		addrs = append(addrs, &n.pprof)
	}
	for _, p := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		*p = a
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--data-dir", dataDir, "--admin", n.admin, "--mqtt", n.mqtt,
		"--amqp", "", "--amqps", "", "--mqtts", "", "--http", "", "--https", "", "--log-format", "json"}
	if n.pprof != "" {
		args = append(args, "--pprof", n.pprof)
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	// The admin password is given at every start, so that a data
	// directory from an earlier run (a resumed registry) accepts it.
	cmd.Env = append(os.Environ(), "THRONG_ADMIN_PASSWORD="+n.password)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() {
		n.err = cmd.Wait()
		logf.Close()
		close(n.done)
	}()
	if err := n.waitReady(ctx, 5*time.Minute); err != nil {
		n.stop(5 * time.Second)
		return nil, err
	}
	return n, nil
}

func (n *node) pid() int { return n.cmd.Process.Pid }

func (n *node) adminURL() string { return "http://" + n.admin }

func (n *node) waitReady(ctx context.Context, timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		if resp, err := hc.Get("http://" + n.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-n.done:
			return fmt.Errorf("bench: throng serve exited before it was ready: %v (log %s: %s)", n.err, n.logPath, tail(n.logPath))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: throng serve not ready within %s (log %s)", timeout, n.logPath)
		}
	}
}

// stop asks for a graceful shutdown and kills the process after timeout.
func (n *node) stop(timeout time.Duration) {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(timeout):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// tail returns the last lines of a log file, for an error message.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-3):], " | ")
}

// loadAverage reads the 1-minute load average (Linux), -1 if unknown:
// the machine is shared, and figures are reported with it.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	var l float64
	if _, err := fmt.Sscan(string(b), &l); err != nil {
		return -1
	}
	return l
}

// dirSize is the bytes of the files under dir (the data directory's
// footprint), 0 if unreadable.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil && !d.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}
