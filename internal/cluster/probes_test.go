package cluster_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
)

// probe answers the node's probe path: the status code and the error
// code of a JSON error body ("" for none); 0 when nothing answers.
func probeStatus(nd *node, path string) (int, string) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + nd.admin + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body.Error.Code
}

// TestProbesWhileWaiting: a node of a three-node peer list started alone
// waits for the others (a meta leader); meanwhile it answers the
// liveness probe (Kubernetes would otherwise kill a pod of a StatefulSet
// whose peers are not up yet) and its readiness is 503; once the others
// are up both are 200.
func TestProbesWhileWaiting(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes")
	}
	c := newCluster(t, 3)
	n1 := c.nodes[0]
	n1.log = &lineLog{}
	c.start(n1)

	// Alive within a few seconds of the start, and for a while after:
	// the node waits for its peers, which do not come.
	began := time.Now()
	for {
		if code, _ := probeStatus(n1, "/healthz"); code == http.StatusOK {
			break
		}
		select {
		case <-n1.done:
			t.Fatalf("n1 exited: %v", n1.waitErr)
		default:
		}
		if time.Since(began) > startMax {
			t.Fatal("no /healthz 200 while waiting for the cluster")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("/healthz 200 %s after the start", time.Since(began).Round(time.Millisecond))
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); {
		if code, why := probeStatus(n1, "/healthz"); code != http.StatusOK {
			t.Fatalf("/healthz while waiting: %d %s", code, why)
		}
		if code, why := probeStatus(n1, "/readyz"); code != http.StatusServiceUnavailable || why != "not_ready" {
			t.Fatalf("/readyz while waiting: %d %s", code, why)
		}
		if code, _ := probeStatus(n1, "/api/status"); code != http.StatusServiceUnavailable {
			t.Fatalf("/api/status while waiting: %d, want 503", code)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n1.log.find("waiting for the cluster") == "" {
		t.Fatal("n1 is not waiting for the cluster")
	}

	// The others come: both probes 200.
	for _, nd := range c.nodes[1:] {
		c.start(nd)
	}
	d := c.waitReady(n1)
	if code, why := probeStatus(n1, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz once ready: %d %s", code, why)
	}
	t.Logf("n1 ready %s after the others' start", d.Round(time.Millisecond))
	for _, nd := range c.nodes {
		c.waitReady(nd)
		c.checkStatus(nd, 3)
	}
}
