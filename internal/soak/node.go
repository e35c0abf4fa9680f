package soak

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Build compiles cmd/throng of the module that contains dir (the current
// directory when empty) into outDir and returns the binary's path. It is
// built without the race detector whatever the caller runs under: the node
// is a separate process and must keep up with the load.
func Build(ctx context.Context, dir, outDir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("soak: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if dir != "" {
		root = dir
	}
	bin := filepath.Join(outDir, "throng")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/throng")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("soak: go build ./cmd/throng: %w\n%s", err, out)
	}
	return bin, nil
}

// Node is a `throng serve` child process on fixed loopback ports (kept
// across restarts so that clients reconnect to the same addresses).
type Node struct {
	Bin, DataDir, LogPath string
	Password              string
	MQTT, AMQP, Admin     string // host:port
	// ClockFile is the node's THRONG_CLOCK_OFFSET_FILE: the offset of
	// the wall clock of its expiry decisions (SetClock; internal/clock).
	// It stays across restarts, as a machine's clock does.
	ClockFile string
	// Name is the node's name in a cluster (NewCluster), "" for a
	// single node; Args and Env are added to its command line and
	// environment (the cluster flags and secret).
	Name string
	Args []string
	Env  []string
	// Conns counts the soak clients' connections made to the node (a
	// cluster's clients are spread over its nodes and move on).
	Conns atomic.Int64

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	starts  int
}

// NewNode picks free loopback ports for a node on dataDir.
func NewNode(bin, dataDir, logPath string) (*Node, error) {
	n := &Node{Bin: bin, DataDir: dataDir, LogPath: logPath, Password: "soak-admin-pw", ClockFile: dataDir + ".clock"}
	for _, p := range []*string{&n.MQTT, &n.AMQP, &n.Admin} {
		a, err := freePort()
		if err != nil {
			return nil, err
		}
		*p = a
	}
	return n, nil
}

// clusterSecret authenticates the routes between a soak cluster's nodes.
const clusterSecret = "soak-cluster-secret"

// NewCluster makes k nodes of one cluster (named n1…nk), each on its own
// data directory and log under workDir, with route ports picked before
// any node starts (every node gets the same peer list, itself included,
// as docs/cluster.md asks). The nodes must be started together: a
// clustered node opens its listeners only once the cluster has formed.
func NewCluster(bin, workDir string, k int) ([]*Node, error) {
	var nodes []*Node
	var peers []string
	for i := range k {
		name := fmt.Sprintf("n%d", i+1)
		n, err := NewNode(bin, filepath.Join(workDir, "data-"+name), filepath.Join(workDir, "node-"+name+".log"))
		if err != nil {
			return nil, err
		}
		route, err := freePort()
		if err != nil {
			return nil, err
		}
		n.Name = name
		n.Args = []string{"--cluster-name", "soak", "--cluster-listen", route, "--node-name", name}
		n.Env = []string{"THRONG_CLUSTER_SECRET=" + clusterSecret}
		peers = append(peers, route)
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		n.Args = append(n.Args, "--peers", strings.Join(peers, ","))
	}
	return nodes, nil
}

// freePort picks a free loopback port below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range, 32768–60999 by default). A port the
// kernel handed out (":0") is one it also hands to outgoing connections:
// after a kill -9 the node's fixed port was sometimes the local port of a
// client's connection (the soak's own, or a reconnect storm's) and the
// restart failed with "address already in use" (a fault "not completed",
// the run ended). Ports in 20000–32767 are never given to outgoing
// connections; :0 remains the fallback.
func freePort() (string, error) {
	for range 50 {
		a := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12768))
		if ln, err := net.Listen("tcp", a); err == nil {
			ln.Close()
			return a, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Start starts the process and returns at once (see WaitReady).
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		select {
		case <-n.done:
		default:
			return errors.New("soak: node already running")
		}
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	n.starts++
	fmt.Fprintf(logf, "=== start %d at %s\n", n.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(n.Bin, "serve",
		"--data-dir", n.DataDir,
		"--admin", n.Admin, "--amqp", n.AMQP, "--mqtt", n.MQTT,
		"--amqps", "", "--mqtts", "", "--http", "", "--https", "",
		"--log-format", "json")
	cmd.Args = append(cmd.Args, n.Args...)
	cmd.Env = append(os.Environ(), "THRONG_ADMIN_PASSWORD="+n.Password, "THRONG_CLOCK_OFFSET_FILE="+n.ClockFile)
	cmd.Env = append(cmd.Env, n.Env...)
	cmd.Stdout = io.Discard
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		n.waitErr = err
		n.mu.Unlock()
		close(done)
	}()
	return nil
}

// label names the node in progress lines: its cluster name, or "node".
func (n *Node) label() string {
	if n.Name == "" {
		return "node"
	}
	return n.Name
}

// PID is the running process's id, 0 if none.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	select {
	case <-n.done:
		return 0
	default:
	}
	return n.cmd.Process.Pid
}

// Running reports whether the process has not exited.
func (n *Node) Running() bool { return n.PID() != 0 }

// WaitReady polls /readyz until it answers 200, the process exits, or
// timeout passes.
func (n *Node) WaitReady(ctx context.Context, timeout time.Duration) error {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get("http://" + n.Admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-done:
			n.mu.Lock()
			err := n.waitErr
			n.mu.Unlock()
			// The log's end says why (the test's temporary directory,
			// and the log with it, is gone when CI shows the failure).
			tail := ""
			if b, rerr := os.ReadFile(n.LogPath); rerr == nil {
				lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
				tail = strings.Join(lines[max(0, len(lines)-8):], "\n")
			}
			return fmt.Errorf("soak: node exited before ready: %v (log %s); its last lines:\n%s", err, n.LogPath, tail)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("soak: node not ready within %s (log %s)", timeout, n.LogPath)
		}
	}
}

// Signal sends sig to the process.
func (n *Node) Signal(sig syscall.Signal) error {
	pid := n.PID()
	if pid == 0 {
		return errors.New("soak: node not running")
	}
	return syscall.Kill(pid, sig)
}

// Kill sends SIGKILL and waits for the process to be gone.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Stop asks for a graceful shutdown (SIGTERM) and kills after timeout.
func (n *Node) Stop(timeout time.Duration) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		n.Kill()
	}
}

// Restart starts the node again and waits until it is ready.
func (n *Node) Restart(ctx context.Context, timeout time.Duration) error {
	// A client may briefly hold one of the node's ports as its own
	// ephemeral port while the node is down: retry the start.
	var err error
	for i := 0; i < 20; i++ {
		if err = n.Start(); err != nil {
			return err
		}
		if err = n.WaitReady(ctx, timeout); err == nil {
			return nil
		}
		if n.Running() || ctx.Err() != nil {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

// SetClock jumps the node's wall clock (of its expiry decisions) to ours
// plus off and, while it runs, waits until it has jumped. It returns when
// the offset was written and when the node acknowledged it.
func (n *Node) SetClock(ctx context.Context, off time.Duration) (written, applied time.Time, err error) {
	want := off.String()
	written = time.Now()
	if err := os.WriteFile(n.ClockFile, []byte(want+"\n"), 0o644); err != nil {
		return written, written, err
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		b, _ := os.ReadFile(n.ClockFile + ".applied")
		if strings.TrimSpace(string(b)) == want {
			return written, time.Now(), nil
		}
		if !n.Running() {
			return written, time.Now(), nil // applied when it starts
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return written, time.Now(), fmt.Errorf("soak: node did not apply clock offset %s within 10s (log %s)", want, n.LogPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ProcStats are the node process's figures from /proc and /metrics.
type ProcStats struct {
	RSS        int64 // bytes
	Threads    int
	OpenFiles  int
	Goroutines int // -1 when /metrics did not answer
}

// Stats reads /proc/PID/status, /proc/PID/fd and go_goroutines from
// /metrics.
func (n *Node) Stats() (ProcStats, error) {
	pid := n.PID()
	if pid == 0 {
		return ProcStats{}, errors.New("soak: node not running")
	}
	var ps ProcStats
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ps, err
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			kb, _ := strconv.ParseInt(fs[0], 10, 64)
			ps.RSS = kb * 1024
		case "Threads":
			ps.Threads, _ = strconv.Atoi(fs[0])
		}
	}
	f.Close()
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return ps, err
	}
	ps.OpenFiles = len(fds)
	ps.Goroutines = n.goroutines()
	return ps, nil
}

func (n *Node) goroutines() int {
	req, _ := http.NewRequest("GET", "http://"+n.Admin+"/metrics", nil)
	req.SetBasicAuth("admin", n.Password)
	hc := &http.Client{Timeout: 3 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(f)
			}
		}
	}
	return -1
}

// admin sends an admin API request; body may be nil.
func (n *Node) admin(ctx context.Context, method, path, body string) (int, string, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+n.Admin+path, r)
	if err != nil {
		return 0, "", err
	}
	req.SetBasicAuth("admin", n.Password)
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Timeout: 60 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), nil
}

// CreateAddress defines an address in the default tenant; one that exists
// already is fine (the node keeps definitions across restarts).
func (n *Node) CreateAddress(ctx context.Context, jsonBody string) error {
	code, body, err := n.admin(ctx, "POST", "/api/tenants/default/addresses", jsonBody)
	if err != nil {
		return err
	}
	if code != 201 && code != 409 {
		return fmt.Errorf("soak: create address %s: HTTP %d %s", jsonBody, code, body)
	}
	return nil
}
