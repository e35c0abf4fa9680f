package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
)

// growQueues is how many queues TestGrowShrink creates once the cluster
// has five nodes: JetStream places each (R3) on three of the five, which
// puts replicas on the new nodes that must move when they leave.
const growQueues = 8

// TestGrowShrink (issue 16): a three-node cluster under steady load
// (load_test.go) grows to five — nodes 4 and 5 start with a peer list
// naming the three and themselves, join, are ready, and their clients
// publish and consume — and shrinks back: each new node in turn is
// stopped cleanly (SIGTERM) and removed from the cluster through the
// admin API (POST /api/cluster/nodes/{node}/remove: JetStream's
// peer-remove, which re-places the node's replicas on the others; node 5
// with `throng cluster remove-node`). The
// queues created while there were five nodes keep every acknowledged
// message and stay writable with only the original three, and nothing
// acknowledged by the load is lost. Removing a node that is online is
// refused (409).
func TestGrowShrink(t *testing.T) {
	if testing.Short() {
		t.Skip("five node processes under load")
	}
	began := time.Now()
	c := newCluster(t, 5)
	all := c.nodes
	defer func() { c.nodes = all }() // the cleanup kills every node
	first := strings.Join(strings.Split(c.peers, ",")[:3], ",")
	c.peers = first
	c.nodes = all[:3]
	c.startAll()
	n1, n3, n4, n5 := all[0], all[2], all[3], all[4]
	t.Logf("three nodes up after %s", time.Since(began).Round(time.Millisecond))
	// The first clients know the three nodes only (their lists are
	// taken when they start), as applications configured before the
	// growth would.
	l := startLoad(t, c, 1, []int{0, 2}, []int{1, 2})
	time.Sleep(2 * time.Second)

	// Grow: nodes 4 and 5 list the three and themselves.
	c.nodes = all
	grown := time.Now()
	for _, nd := range []*node{n4, n5} {
		nd.peers = first + ",127.0.0.1:" + strconv.Itoa(nd.port)
		c.start(nd)
	}
	for _, nd := range []*node{n4, n5} {
		c.listening(nd)
		c.waitReady(nd)
		t.Logf("%s ready %s after the two started", nd.name, time.Since(grown).Round(time.Millisecond))
	}
	for _, nd := range all {
		c.checkStatus(nd, 5)
	}
	// Clients of the new nodes: they know all five.
	for _, nd := range []*node{n4, n5} {
		probe(t, nd, l.mqttIn, "load/probe", "probe-"+nd.name)
	}
	l.mqttPublisher("mpub-n4", 3, "load/n4")
	l.amqpSender("qsnd-n5", 4, "orders")
	l.amqpConsumer("qcon-n4", 3, "orders")
	l.waitFlowing("grow to five", grown, 2*time.Minute)

	// Queues created with five nodes, filled on the new nodes.
	acked := map[string][]string{}
	s4, s5 := dialAMQP(t, n4), dialAMQP(t, n5)
	for i := range growQueues {
		q := "grow-" + strconv.Itoa(i)
		c.api(n4, "POST", "/api/tenants/acme/addresses", `{"name":"`+q+`","type":"queue"}`, nil)
		s := s4
		if i%2 == 1 {
			s = s5
		}
		acked[q], _ = sendAll(t, s, q, q+"-five", 25)
	}
	time.Sleep(2 * time.Second)

	// Shrink: a node that is online cannot be removed.
	if code, body := post(t, n1, "/api/cluster/nodes/n5/remove"); code != http.StatusConflict {
		t.Fatalf("removing n5 while it runs: %d %s, want 409", code, body)
	}
	if code, body := post(t, n1, "/api/cluster/nodes/nope/remove"); code != http.StatusNotFound {
		t.Fatalf("removing an unknown node: %d %s, want 404", code, body)
	}
	var replaced int
	for i, nd := range []*node{n4, n5} {
		asked := all[i] // n1 removes n4, n2 removes n5
		down := time.Now()
		took := nd.shutdown(t, 30*time.Second)
		t.Logf("%s shut down in %s", nd.name, took.Round(time.Millisecond))
		l.waitFlowing(nd.name+" stopped", down, recoverMax)
		c.checkStatus(asked, 5-i-1) // still a member, offline
		var rm struct {
			Node     string   `json:"node"`
			Replaced []string `json:"replaced"`
			Took     string   `json:"took"`
		}
		start := time.Now()
		if nd == n4 {
			c.api(asked, "POST", "/api/cluster/nodes/"+nd.name+"/remove", "", &rm)
		} else {
			// The second through the command line, as an operator would.
			cmd := exec.Command(c.bin, "cluster", "remove-node", nd.name, "--server", "http://"+asked.admin, "-o", "json")
			cmd.Env = append(os.Environ(), "THRONG_PASSWORD="+adminPW)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("throng cluster remove-node %s: %v %s", nd.name, err, out)
			}
			if err := json.Unmarshal(out, &rm); err != nil || rm.Node != nd.name {
				t.Fatalf("throng cluster remove-node %s: %v in %s", nd.name, err, out)
			}
		}
		t.Logf("%s removed (asked on %s) in %s: the streams there that had a replica on it, now placed elsewhere and current: %d %v",
			nd.name, asked.name, time.Since(start).Round(time.Millisecond), len(rm.Replaced), rm.Replaced)
		replaced += len(rm.Replaced)
		for _, o := range all[:3+1-i] {
			if o == nd || o == n4 {
				continue
			}
			c.checkStatus(o, 3+1-i)
			if members := c.members(o); len(members) != 3+1-i || strings.Contains(strings.Join(members, ","), nd.name) {
				t.Fatalf("%s still lists the removed %s: %v", o.name, nd.name, members)
			}
		}
		time.Sleep(2 * time.Second)
	}
	if replaced == 0 {
		t.Errorf("no stream of n1 or n2 had a replica on n4 or n5: the removals moved nothing this test could see")
	}

	// The queues created with five nodes: every acknowledged message is
	// there with the three, and they take new ones.
	s1, s3 := dialAMQP(t, n1), dialAMQP(t, n3)
	got := newTally()
	var want []string
	for i := range growQueues {
		q := "grow-" + strconv.Itoa(i)
		more, _ := sendAll(t, s1, q, q+"-three", 5)
		want = append(want, acked[q]...)
		want = append(want, more...)
		r, err := s3.NewReceiver(ctxT(t, 30*time.Second), q, &goamqp.ReceiverOptions{Credit: 50})
		if err != nil {
			t.Fatalf("receiver on %s at n3: %v", q, err)
		}
		go receive(ctxT(t, 2*time.Minute), r, q, got)
	}
	got.waitFor(t, fmt.Sprintf("%d queues created with five nodes, read with three", growQueues), want, 60*time.Second)

	mq, qq := l.finish(drainMax)
	if n := mq.refused + qq.refused; n > 10 {
		t.Errorf("%d publishes refused (MQTT %d, AMQP %d)", n, mq.refused, qq.refused)
	}
	t.Logf("took %s", time.Since(began).Round(time.Millisecond))
}

// post sends an admin POST without a body and returns the status and body
// (c.api fails the test on any error status).
func post(t *testing.T, nd *node, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+nd.admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("admin", adminPW)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s on %s: %v", path, nd.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// members are the nodes of the meta group as nd sees them.
func (c *testCluster) members(nd *node) []string {
	var st status
	c.api(nd, "GET", "/api/status", "", &st)
	var out []string
	if st.Cluster != nil {
		for _, x := range st.Cluster.Nodes {
			out = append(out, x.Name)
		}
	}
	return out
}
