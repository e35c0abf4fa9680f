package cluster_test

import (
	"net/http"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopMax bounds how long a node asked to stop while it waits for its
// peers may take to exit: Kubernetes sends SIGKILL after the pod's grace
// period (30 s by default); a few seconds, generous on a loaded machine.
const stopMax = 15 * time.Second

// waitWaiting waits until the node, started alone with a three-node peer
// list, answers /healthz 200 and /readyz 503 and logs that it waits for
// the cluster.
func waitWaiting(t *testing.T, nd *node) {
	t.Helper()
	began := time.Now()
	for {
		hz, _ := probeStatus(nd, "/healthz")
		rz, _ := probeStatus(nd, "/readyz")
		if hz == http.StatusOK && rz == http.StatusServiceUnavailable && nd.log.find("waiting for the cluster") != "" {
			t.Logf("%s waiting for its peers %s after the start", nd.name, time.Since(began).Round(time.Millisecond))
			return
		}
		select {
		case <-nd.done:
			t.Fatalf("%s exited: %v; its last log lines:\n%s", nd.name, nd.waitErr, &nd.tail)
		default:
		}
		if time.Since(began) > startMax {
			t.Fatalf("%s: not waiting for the cluster within %s (/healthz %d, /readyz %d)", nd.name, startMax, hz, rz)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopNode sends sig and waits at most stopMax for the process to exit
// with status 0; it returns how long that took.
func stopNode(t *testing.T, nd *node, sig syscall.Signal) time.Duration {
	t.Helper()
	began := time.Now()
	if err := nd.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-nd.done:
	case <-time.After(stopMax):
		t.Fatalf("%s still running %s after %v; its last log lines:\n%s", nd.name, stopMax, sig, &nd.tail)
	}
	d := time.Since(began)
	if nd.waitErr != nil {
		t.Fatalf("%s exited after %v with %v, want status 0; its last log lines:\n%s", nd.name, sig, nd.waitErr, &nd.tail)
	}
	return d
}

// TestStopWhileWaiting: a node of a three-node peer list started alone
// waits for peers that never come (a StatefulSet's pod whose peers are
// gone: scale-down, a rolling update); SIGTERM stops it within seconds
// with status 0 (before, the wait ignored it for up to 5 minutes, until
// Kubernetes killed the pod), and a second process then starts on the
// same data directory (the first released the directory's lock), waits
// too, and stops on SIGINT.
func TestStopWhileWaiting(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs node processes")
	}
	c := newCluster(t, 3)
	n1 := c.nodes[0]
	n1.log = &lineLog{}
	c.start(n1)
	waitWaiting(t, n1)
	d := stopNode(t, n1, syscall.SIGTERM)
	t.Logf("n1 exited %s after SIGTERM", d.Round(time.Millisecond))
	for _, want := range []string{"stopped while waiting for the cluster", "stopped during the start", `"msg":"stopped"`} {
		if n1.log.find(want) == "" {
			t.Errorf("n1 did not log %q; its last log lines:\n%s", want, &n1.tail)
		}
	}

	// The same data directory: a node that found it locked would exit
	// at once (status 3) instead of waiting for the cluster.
	n1.log = &lineLog{}
	c.start(n1)
	waitWaiting(t, n1)
	d = stopNode(t, n1, syscall.SIGINT)
	t.Logf("the second process on the same data directory waited for the cluster and exited %s after SIGINT", d.Round(time.Millisecond))
}

// TestGeneratedAdminPasswordCluster: three nodes started together with
// no admin password configured. One of them creates the administrator
// with a generated password and prints it; the others find it made and
// must neither fail nor replace it with a password of their own that
// nobody was shown (they did: a node that lost the race to create it
// went on to "sync" it with its own generated password). The printed
// password logs in on every node.
func TestGeneratedAdminPasswordCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes")
	}
	c := newCluster(t, 3)
	outs := make([]*safeBuf, len(c.nodes))
	for i, nd := range c.nodes {
		outs[i] = &safeBuf{}
		nd.env = []string{"THRONG_ADMIN_PASSWORD="}
		nd.stdout = outs[i]
		c.start(nd)
	}
	for _, nd := range c.nodes {
		c.listening(nd)
		c.waitReady(nd)
	}
	re := regexp.MustCompile(`generated admin password: (\S+)`)
	var pws []string
	for i, o := range outs {
		if m := re.FindStringSubmatch(o.String()); m != nil {
			pws = append(pws, m[1])
			t.Logf("%s generated the password", c.nodes[i].name)
		}
	}
	if len(pws) != 1 {
		t.Fatalf("%d nodes printed a generated password, want 1", len(pws))
	}
	for _, nd := range c.nodes {
		var code int
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			req, _ := http.NewRequest("GET", "http://"+nd.admin+"/api/status", nil)
			req.SetBasicAuth("admin", pws[0])
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			if code == http.StatusOK || time.Now().After(deadline) {
				break
			}
		}
		if code != http.StatusOK {
			t.Fatalf("%s: the printed password is refused (%d)", nd.name, code)
		}
	}
	// Still so a moment later: no node replaced it afterwards.
	time.Sleep(2 * time.Second)
	for _, nd := range c.nodes {
		req, _ := http.NewRequest("GET", "http://"+nd.admin+"/api/status", nil)
		req.SetBasicAuth("admin", pws[0])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: the printed password is refused later (%d)", nd.name, resp.StatusCode)
		}
	}
}

// safeBuf is a process's standard output, read while it is written.
type safeBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *safeBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
