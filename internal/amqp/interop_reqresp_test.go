package amqp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
)

// protonProc is one role of interop/proton_reqresp.py in its own process.
type protonProc struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  bytes.Buffer // everything it printed
	mu   sync.Mutex
	rdy  chan string // the READY line
	done chan error
}

func startProton(t *testing.T, ctx context.Context, name string, args ...string) *protonProc {
	t.Helper()
	script := filepath.Join("interop", "proton_reqresp.py")
	p := &protonProc{name: name, rdy: make(chan string, 1), done: make(chan error, 1)}
	p.cmd = exec.CommandContext(ctx, protonPython, append([]string{script}, args...)...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &lockedWriter{p: p}
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			p.mu.Unlock()
			if strings.HasPrefix(line, "READY") {
				select {
				case p.rdy <- strings.TrimSpace(strings.TrimPrefix(line, "READY")):
				default:
				}
			}
		}
		p.done <- p.cmd.Wait()
	}()
	return p
}

type lockedWriter struct{ p *protonProc }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func (p *protonProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// ready waits for the READY line and returns what follows it.
func (p *protonProc) ready(t *testing.T) string {
	t.Helper()
	select {
	case s := <-p.rdy:
		return s
	case err := <-p.done:
		t.Fatalf("%s exited before it was ready: %v\n%s", p.name, err, p.output())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready in 20s\n%s", p.name, p.output())
	}
	return ""
}

// proceed lets a client that waits on stdin go on.
func (p *protonProc) proceed(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(p.in, "go\n"); err != nil {
		t.Fatalf("%s: %v\n%s", p.name, err, p.output())
	}
}

// wait waits for the process and reports whether it printed its OK line;
// a failure is reported with what it printed.
func (p *protonProc) wait(t *testing.T) bool {
	t.Helper()
	var err error
	select {
	case err = <-p.done:
	case <-time.After(60 * time.Second):
		t.Errorf("%s still running after 60s\n%s", p.name, p.output())
		return false
	}
	out := p.output()
	if err != nil || !strings.Contains(out, "OK ") {
		t.Errorf("%s: %v\n%s", p.name, err, out)
		return false
	}
	t.Logf("%s: %s", p.name, strings.TrimSpace(out[strings.LastIndex(out, "OK "):]))
	return true
}

// Request/response with real Qpid Proton, each role its own process and
// connection (issue 10 item 4): clients with dynamic reply addresses (and
// named ones), 20 requests outstanding per client, a service replying on
// a sender attached to the reply-to address or through the anonymous
// relay, unsettled (each reply must settle accepted when the requester
// accepts it, with credit left for the next) or pre-settled. The clients
// use BlockingConnection's default receiver (no prefetch: one credit per
// receive()) and are busy for a second before they ask for the first
// reply, so replies wait for credit; before the fix such a reply was
// released after ~250 ms and the service's blocking send failed.
func TestProtonRequestResponse(t *testing.T) {
	requireProton(t)
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "rr/replies-queue", Type: address.Queue})
	e.addrDef(t, "default", &address.Address{Name: "rr/replies-anycast", Type: address.Anycast})
	const n = 20
	cases := []struct {
		name, mode, settle string
		replies            []string // one client per entry
		credit             string   // the clients' reply receivers: "none" or "prefetch"
	}{
		{"dynamic/link/unsettled", "link", "unsettled", []string{"dynamic"}, "none"},
		{"dynamic/link/unsettled/prefetch", "link", "unsettled", []string{"dynamic"}, "prefetch"},
		{"dynamic/link/presettled", "link", "presettled", []string{"dynamic"}, "none"},
		{"dynamic/relay/unsettled", "relay", "unsettled", []string{"dynamic"}, "none"},
		{"dynamic/relay/presettled", "relay", "presettled", []string{"dynamic"}, "none"},
		{"two-clients/link/unsettled", "link", "unsettled", []string{"dynamic", "dynamic"}, "none"},
		{"two-clients/relay/unsettled", "relay", "unsettled", []string{"dynamic", "dynamic"}, "none"},
		{"named-queue/link/unsettled", "link", "unsettled", []string{"rr/replies-queue"}, "none"},
		{"named-anycast/link/unsettled", "link", "unsettled", []string{"rr/replies-anycast"}, "none"},
		{"named-anycast/relay/unsettled", "relay", "unsettled", []string{"rr/replies-anycast"}, "none"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			url := e.url()
			// A queue of its own: a failed case leaves requests behind.
			requests := fmt.Sprintf("rr/requests/%d", i)
			e.addrDef(t, "default", &address.Address{Name: requests, Type: address.Queue})
			var clients []*protonProc
			for i, reply := range tc.replies {
				c := startProton(t, ctx, fmt.Sprintf("client%d", i), "client", url, requests, fmt.Sprint(n), reply, fmt.Sprintf("c%d", i), "0.6", tc.credit)
				c.ready(t)
				clients = append(clients, c)
			}
			svc := startProton(t, ctx, "service", "service", url, requests, fmt.Sprint(n*len(tc.replies)), tc.mode, tc.settle)
			svc.ready(t)
			for _, c := range clients {
				c.proceed(t)
			}
			for _, c := range clients {
				c.wait(t)
			}
			svc.wait(t) // its output too when a client failed
		})
	}
}
