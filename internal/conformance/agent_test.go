package conformance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// debianPython is Debian's interpreter, which has python3-qpid-proton and
// python3-paho-mqtt; the python3 first on PATH may be another one.
const debianPython = "/usr/bin/python3"

// missing fails the test when CI=true and skips it otherwise: a client
// that is not installed must not hide a conformance failure in CI.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (make test-deps installs it)", msg)
	}
	t.Skip(msg)
}

func requirePython(t *testing.T, module, pkg string) {
	t.Helper()
	if err := exec.Command(debianPython, "-c", "import "+module).Run(); err != nil {
		missing(t, "%s is required (apt-get install -y %s): %v", module, pkg, err)
	}
}

func requireProton(t *testing.T) { t.Helper(); requirePython(t, "proton", "python3-qpid-proton") }
func requirePaho(t *testing.T)   { t.Helper(); requirePython(t, "paho.mqtt", "python3-paho-mqtt") }

func requireBin(t *testing.T, path, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		missing(t, "%s is required (apt-get install -y %s)", path, pkg)
	}
	return p
}

// agent is one client process (testdata/*_agent.py): one connection,
// driven by JSON commands on its stdin.
type agent struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	in     io.WriteCloser
	lines  chan []byte
	mu     sync.Mutex
	stderr bytes.Buffer
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func startAgent(t *testing.T, name, script string, args ...string) *agent {
	t.Helper()
	a := &agent{t: t, name: name, lines: make(chan []byte, 16)}
	a.cmd = exec.Command(debianPython, append([]string{filepath.Join("testdata", script)}, args...)...)
	a.cmd.Stderr = lockedWriter{&a.mu, &a.stderr}
	var err error
	if a.in, err = a.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := a.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r := bufio.NewReaderSize(out, 1<<20)
		for {
			l, err := r.ReadBytes('\n')
			if len(l) > 0 {
				a.lines <- l
			}
			if err != nil {
				close(a.lines)
				return
			}
		}
	}()
	t.Cleanup(a.kill)
	return a
}

// result is an agent's answer; each command fills the fields it has.
type result struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	Trace string `json:"trace"`
	// AMQP
	Address        string              `json:"address"`
	MaxMessageSize uint64              `json:"max_message_size"`
	Messages       []amqpMsg           `json:"messages"`
	Credit         int                 `json:"credit"`
	Drained        bool                `json:"drained"`
	Outcomes       json.RawMessage     `json:"outcomes"`
	Unsettled      int                 `json:"unsettled"`
	Served         int                 `json:"served"`
	ReplyCredit    map[string]int      `json:"reply_credit"`
	ReplyTo        string              `json:"reply_to"`
	CorrelationIDs []string            `json:"correlation_ids"`
	PerLink        map[string][]string `json:"per_link"`
	// MQTT
	RC              *int      `json:"rc"`
	Refused         bool      `json:"refused"`
	SessionPresent  bool      `json:"session_present"`
	ServerKeepAlive *int      `json:"server_keep_alive"`
	Granted         []int     `json:"granted"`
	RCs             []*int    `json:"rcs"`
	Msgs            []mqttMsg `json:"msgs"`
	Connected       bool      `json:"connected"`
	DisconnectRC    *int      `json:"disconnect_rc"`
}

type amqpMsg struct {
	Body          any            `json:"body"`
	CorrelationID any            `json:"correlation_id"`
	ReplyTo       string         `json:"reply_to"`
	Properties    map[string]any `json:"properties"`
	DeliveryCount int            `json:"delivery_count"`
	Settled       bool           `json:"settled"`
}

// text is the body of a small text message.
func (m amqpMsg) text() string { s, _ := m.Body.(string); return s }

type mqttMsg struct {
	Topic   string  `json:"topic"`
	Payload string  `json:"payload"`
	QoS     int     `json:"qos"`
	Retain  bool    `json:"retain"`
	SubIDs  []int   `json:"subids"`
	At      float64 `json:"at"`
}

// outcomeList decodes the outcomes of a send or settled command.
func (r result) outcomeList() []string {
	var o []string
	_ = json.Unmarshal(r.Outcomes, &o)
	return o
}

// outcomeCounts decodes the outcomes of a serve command.
func (r result) outcomeCounts() map[string]int {
	o := map[string]int{}
	_ = json.Unmarshal(r.Outcomes, &o)
	return o
}

// try runs one command and returns the agent's answer; an error means the
// agent did not answer in time or died.
func (a *agent) try(op string, args map[string]any) (result, error) {
	cmd := map[string]any{"op": op}
	for k, v := range args {
		cmd[k] = v
	}
	b, _ := json.Marshal(cmd)
	if _, err := a.in.Write(append(b, '\n')); err != nil {
		return result{}, fmt.Errorf("%s: write %s: %v%s", a.name, op, err, a.errOut())
	}
	// Every command bounds its own waits; this only catches a stuck agent.
	limit := 30 * time.Second
	if s, ok := args["timeout"].(int); ok {
		limit += time.Duration(s) * time.Second
	}
	select {
	case l, ok := <-a.lines:
		if !ok {
			_ = a.cmd.Wait()
			return result{}, fmt.Errorf("%s: agent exited during %s (%v)%s", a.name, op, a.cmd.ProcessState, a.errOut())
		}
		var r result
		if err := json.Unmarshal(l, &r); err != nil {
			return result{}, fmt.Errorf("%s: %s: bad answer %q: %v", a.name, op, l, err)
		}
		if !r.OK {
			return r, fmt.Errorf("%s: %s: %s\n%s%s", a.name, op, r.Error, r.Trace, a.errOut())
		}
		return r, nil
	case <-time.After(limit):
		return result{}, fmt.Errorf("%s: no answer to %s within %v%s", a.name, op, limit, a.errOut())
	}
}

// do is try that fails the test on error.
func (a *agent) do(op string, args map[string]any) result {
	a.t.Helper()
	r, err := a.try(op, args)
	if err != nil {
		a.t.Fatal(err)
	}
	return r
}

func (a *agent) errOut() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stderr.Len() == 0 {
		return ""
	}
	return "\nstderr: " + a.stderr.String()
}

// kill ends the process at once (SIGKILL): its connections drop without
// a close or DISCONNECT, as when a client crashes.
func (a *agent) kill() {
	if a.cmd.Process == nil || a.cmd.ProcessState != nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	_ = a.cmd.Wait()
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening polls until addr accepts TCP connections.
func waitListening(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening after %v: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	fmt.Sscan(p, &port)
	return h, port
}

func joinLines(ss ...string) string { return strings.Join(ss, "\n") + "\n" }
