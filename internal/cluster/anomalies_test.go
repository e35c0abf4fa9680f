package cluster_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// anomalyReport is the answer of the anomaly routes (docs/admin-api.md).
type anomalyReport struct {
	Findings []struct {
		Kind       string         `json:"kind"`
		Tenant     string         `json:"tenant"`
		Connection string         `json:"connection"`
		ClientID   string         `json:"clientId"`
		Device     string         `json:"device"`
		Evidence   map[string]any `json:"evidence"`
	} `json:"findings"`
	TopTalkers []struct {
		Connection        string  `json:"connection"`
		ClientID          string  `json:"clientId"`
		Device            string  `json:"device"`
		MessagesPerSecond float64 `json:"messagesPerSecond"`
		Share             float64 `json:"share"`
	} `json:"topTalkers"`
	Missing []string `json:"missing"`
}

// has reports whether the report has a finding of kind about device.
func (r anomalyReport) has(kind, device string) bool {
	for _, f := range r.Findings {
		if f.Kind == kind && (f.Device == device || f.ClientID == device) {
			return true
		}
	}
	return false
}

// deviceMQTT connects a Hono device (auth-id = id, password "pw-"+id) to
// node nd, retrying until the node knows its credentials.
func deviceMQTT(t *testing.T, nd *node, id string) *paho.Client {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", nd.mqtt, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn, OnClientError: func(error) {}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			Username: id + "@iot", UsernameFlag: true, Password: []byte("pw-" + id), PasswordFlag: true})
		cancel()
		if err == nil && ack.ReasonCode == 0 {
			t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
			return c
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("device %s on %s: %v %+v", id, nd.name, err, ack)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// telemetry publishes QoS 0 telemetry every period until ctx ends or
// stop is closed; sent counts the messages.
func telemetry(ctx context.Context, c *paho.Client, period time.Duration, stop <-chan struct{}, sent *atomic.Int64) {
	tk := time.NewTicker(period)
	defer tk.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-tk.C:
			if _, err := c.Publish(ctx, &paho.Publish{Topic: "telemetry", QoS: 0, Payload: []byte(fmt.Sprint(i))}); err == nil && sent != nil {
				sent.Add(1)
			}
		}
	}
}

// TestAnomaliesAcrossNodes (issue 15): every node's anomaly report is the
// cluster's. Device "mover" publishes on node 1, then moves to node 2 and
// keeps publishing: node 1's tracker alone finds it silent, but no
// node's report lists it (node 2 saw it later). Device "stopper" stops on
// node 1 (its connection open): every node's report lists it silent,
// node 2's and 3's too. Device "flood" floods on node 3: node 1's report
// names it top talker with its share of the tenant's cluster-wide rate.
// The history of node 3's connection is answered through node 1; with
// node 3 stopped its anomalies are bounded and name it missing.
func TestAnomaliesAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes")
	}
	c := newCluster(t, 3)
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	for _, nd := range c.nodes {
		c.start(nd)
	}
	for _, nd := range c.nodes {
		c.listening(nd)
		c.waitReady(nd)
	}
	c.api(n1, "POST", "/v1/tenants/iot", `{}`, nil)
	for _, d := range []string{"mover", "stopper", "flood"} {
		c.api(n1, "POST", "/v1/devices/iot/"+d, `{}`, nil)
		c.api(n1, "PUT", "/v1/credentials/iot/"+d, `[{"type":"hashed-password","auth-id":"`+d+`","secrets":[{"pwd-plain":"pw-`+d+`"}]}]`, nil)
	}
	// Silent after 2 s at least (the devices publish every 200 ms).
	c.api(n1, "PUT", "/api/tenants/iot/anomaly-thresholds", `{"silentFactor":3,"silentMinSeconds":2}`, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var flooded atomic.Int64
	flood := deviceMQTT(t, n3, "flood")
	go telemetry(ctx, flood, 10*time.Millisecond, nil, &flooded)

	mover1 := deviceMQTT(t, n1, "mover")
	stopper := deviceMQTT(t, n1, "stopper")
	moved, stopped := make(chan struct{}), make(chan struct{})
	go telemetry(ctx, mover1, 200*time.Millisecond, moved, nil)
	go telemetry(ctx, stopper, 200*time.Millisecond, stopped, nil)
	time.Sleep(3 * time.Second) // ~15 sightings each: an interval of 200 ms
	close(stopped)
	close(moved)
	_ = mover1.Disconnect(&paho.Disconnect{})
	mover2 := deviceMQTT(t, n2, "mover")
	go telemetry(ctx, mover2, 200*time.Millisecond, nil, nil)
	since := time.Now()

	// Every node's report: stopper silent, mover not, flood top talker
	// (once a 5 s sample has its rate).
	deadline := time.Now().Add(90 * time.Second)
	for _, nd := range []*node{n1, n2, n3} {
		for {
			var r anomalyReport
			c.api(nd, "GET", "/api/tenants/iot/anomalies", "", &r)
			if r.has("silent_device", "mover") {
				t.Fatalf("%s's report: the device that moved to n2 is silent: %+v", nd.name, r.Findings)
			}
			if r.has("silent_device", "stopper") && r.has("top_talker", "flood") && len(r.Missing) == 0 {
				t.Logf("%s's report after %s: %d findings, talkers %+v", nd.name, time.Since(since).Round(time.Millisecond), len(r.Findings), r.TopTalkers)
				if len(r.TopTalkers) == 0 || (r.TopTalkers[0].Device != "flood" && r.TopTalkers[0].ClientID != "flood") || !strings.HasPrefix(r.TopTalkers[0].Connection, "n3-") {
					t.Fatalf("%s's top talkers: %+v", nd.name, r.TopTalkers)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's report after %s: %+v (flood sent %d)", nd.name, time.Since(since), r, flooded.Load())
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	// The moved device stays not silent on n1 once n1's tracker alone
	// has long found it silent (its last sighting on n1 is > 2 s old).
	time.Sleep(time.Until(since.Add(5 * time.Second)))
	var r anomalyReport
	c.api(n1, "GET", "/api/anomalies", "", &r)
	if r.has("silent_device", "mover") || !r.has("silent_device", "stopper") {
		t.Fatalf("n1's report of every tenant: %+v", r.Findings)
	}

	// The flooding connection's history through n1 (it lives on n3), and
	// on the tenant's path.
	var l connList
	c.api(n1, "GET", "/api/connections?clientId=flood", "", &l)
	id, node := l.byClient("flood")
	if node != "n3" {
		t.Fatalf("flood's connection: %+v", l)
	}
	var h struct {
		Series string    `json:"series"`
		Step   int       `json:"step"`
		In     []float64 `json:"messagesInPerSecond"`
	}
	c.api(n1, "GET", "/api/connections/"+id+"/history", "", &h)
	if h.Step != 5 || len(h.In) == 0 || slices.Max(h.In) < 10 {
		t.Fatalf("history of %s through n1: %+v", id, h)
	}
	c.api(n2, "GET", "/api/tenants/iot/connections/"+id+"/history", "", &h)
	if len(h.In) == 0 {
		t.Fatalf("iot's history of %s through n2: %+v", id, h)
	}
	for _, p := range []string{"/api/connections/n3-999999/history", "/api/tenants/other/connections/" + id + "/history"} {
		if st, body := c.apiStatus(n1, "GET", p); st != http.StatusNotFound {
			t.Fatalf("GET %s on n1: %d %s", p, st, body)
		}
	}

	// n3 stopped: the report waits its bound and names it missing.
	if err := n3.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.api(n1, "GET", "/api/tenants/iot/anomalies", "", &r)
	took := time.Since(start)
	st, body := c.apiStatus(n1, "GET", "/api/connections/"+id+"/history")
	_ = n3.cmd.Process.Signal(syscall.SIGCONT)
	t.Logf("report with n3 stopped: %s", took.Round(time.Millisecond))
	// Two rounds of at most peerWait (2 s) each. It took 5 and 10 s while
	// this node's own part read the registry from the stopped node's
	// stream leader (one 5 s read per silent device).
	if !slices.Equal(r.Missing, []string{"n3"}) || took > 5*time.Second || !r.has("silent_device", "stopper") || r.has("top_talker", "flood") {
		t.Fatalf("report with n3 stopped (%s): %+v", took, r)
	}
	if st != http.StatusServiceUnavailable {
		t.Fatalf("history of n3's connection with n3 stopped: %d %s", st, body)
	}
}
