package cluster_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// mosquittoLog collects a mosquitto's log.
type mosquittoLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *mosquittoLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *mosquittoLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startMosquitto runs Debian's mosquitto on a free loopback port (missing:
// a failure under CI=true, a skip otherwise); killed when the test ends.
func startMosquitto(t *testing.T) (addr string, log *mosquittoLog) {
	t.Helper()
	bin := ""
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			bin = path
			break
		}
	}
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("mosquitto not installed (apt-get install -y mosquitto)")
		}
		t.Skip("mosquitto not installed")
	}
	ln := listenFixed(t)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type all\n", port)
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	path := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	log = &mosquittoLog{}
	cmd := exec.Command(bin, "-c", path)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr = "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, log
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type bridgeStatus struct {
	Status struct {
		State string `json:"state"`
		Owner string `json:"owner"`
	} `json:"status"`
}

// bridgeOwner polls the nodes' views of bridge "up" until exactly one of
// them runs it ("connected") and every other one names it as the owner
// ("standby"); it returns that node.
func (c *testCluster) bridgeOwner(nodes []*node, d time.Duration) *node {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var views []string
	for {
		var owner *node
		views = views[:0]
		agree := true
		for _, nd := range nodes {
			var v bridgeStatus
			c.api(nd, "GET", "/api/tenants/acme/bridges/up", "", &v)
			views = append(views, nd.name+": "+v.Status.State+" owner "+v.Status.Owner)
			switch {
			case v.Status.State == "connected" && v.Status.Owner == nd.name && owner == nil:
				owner = nd
			case v.Status.State == "standby" && v.Status.Owner != nd.name:
			default:
				agree = false
			}
		}
		if agree && owner != nil {
			for _, nd := range nodes {
				var v bridgeStatus
				c.api(nd, "GET", "/api/tenants/acme/bridges/up", "", &v)
				if v.Status.Owner != owner.name {
					agree = false
				}
			}
			if agree {
				return owner
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no single owner of the bridge within %s: %s", d, strings.Join(views, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBridgeOwner (issue 17): in a 3-node cluster an MQTT out bridge to
// mosquitto runs on one node only (the others show it "standby" with its
// owner, mosquitto sees one connection under the bridge's client id and
// no takeovers); messages published on another node arrive. With the
// owner killed (-9) another node takes the bridge over within 20 s, and
// every message acknowledged locally, before and after, arrives at
// mosquitto (at least once).
func TestBridgeOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes")
	}
	maddr, mlog := startMosquitto(t)
	c := startAcme(t)
	n1 := c.nodes[0]

	// The receiver at mosquitto.
	got := newTally()
	conn, err := net.DialTimeout("tcp", maddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sub := paho.NewClient(paho.ClientConfig{ClientID: "receiver", Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got.add("mosquitto", string(pr.Packet.Payload))
			return true, nil
		}}})
	if _, err := sub.Connect(ctxT(t, 10*time.Second), &paho.Connect{ClientID: "receiver", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(&paho.Disconnect{})
	if _, err := sub.Subscribe(ctxT(t, 10*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "t/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	c.api(n1, "POST", "/api/tenants/acme/bridges", `{"name":"up","remote":{"url":"mqtt://`+maddr+`"},"direction":"out","mappings":[{"filter":"t/#"}]}`, nil)
	owner := c.bridgeOwner(c.nodes, 60*time.Second)
	t.Logf("owner %s", owner.name)

	// One connection under the bridge's client id, and it stays the only
	// one (without an owner the three nodes took the session over from
	// each other every few seconds).
	const cid = "as throng-acme-up"
	var pubNode *node
	for _, nd := range c.nodes {
		if nd != owner {
			pubNode = nd
			break
		}
	}
	pub := dialMQTT(t, pubNode, "pub", nil)
	before := publishAll(t, pub, "t/x", "before", 200)
	got.waitFor(t, "before the kill", before, 60*time.Second)
	if n := strings.Count(mlog.String(), cid); n != 1 {
		t.Fatalf("mosquitto saw %d connections of the bridge, want 1:\n%s", n, mlog)
	}
	if strings.Contains(mlog.String(), "already connected, closing old connection") {
		t.Fatalf("the bridge's session was taken over:\n%s", mlog)
	}

	// Kill the owner in the middle of the traffic.
	var after []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		after = publishAll(t, pub, "t/x", "after", 300)
	}()
	for {
		if d, _ := got.count([]string{"after-50"}); d == 1 {
			break
		}
		select {
		case <-done:
		case <-time.After(20 * time.Millisecond):
			continue
		}
		break
	}
	killed := time.Now()
	owner.kill()
	var rest []*node
	for _, nd := range c.nodes {
		if nd != owner {
			rest = append(rest, nd)
		}
	}
	next := c.bridgeOwner(rest, 60*time.Second)
	took := time.Since(killed)
	t.Logf("%s killed; %s runs the bridge %s later", owner.name, next.name, took.Round(100*time.Millisecond))
	if took > 20*time.Second {
		t.Fatalf("takeover took %s, want ≤ 20 s", took)
	}
	<-done
	got.waitFor(t, "across the kill", after, 90*time.Second)
	if n := strings.Count(mlog.String(), cid); n != 2 {
		t.Fatalf("mosquitto saw %d connections of the bridge, want 2 (owner, then its successor)", n)
	}
}
