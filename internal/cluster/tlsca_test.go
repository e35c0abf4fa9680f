package cluster_test

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mark is the number of lines logged so far; findSince looks only at
// the lines logged after a mark.
func (l *lineLog) mark() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.lines) }

func (l *lineLog) findSince(mark int, parts ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, s := range l.lines[mark:] {
		for _, p := range parts {
			if !strings.Contains(s, p) {
				continue next
			}
		}
		return s
	}
	return ""
}

// waitLog waits until the node logs a line with every one of parts
// after the mark.
func waitLog(t *testing.T, nd *node, mark int, d time.Duration, parts ...string) string {
	t.Helper()
	for deadline := time.Now().Add(d); ; {
		if s := nd.log.findSince(mark, parts...); s != "" {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %s; its last log lines:\n%s", nd.name, parts, d, &nd.tail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeBundle writes the CAs' certificates, one PEM bundle, to file with
// a new modification time.
func writeBundle(t *testing.T, file string, cas ...*testCA) {
	t.Helper()
	var b []byte
	for _, ca := range cas {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil { // as a Secret's volume, at once
		t.Fatal(err)
	}
}

// routesOf is the nodes the node has routes to.
func (c *testCluster) routesOf(nd *node) []string {
	var st status
	c.api(nd, "GET", "/api/status", "", &st)
	var out []string
	if st.Cluster != nil {
		for _, r := range st.Cluster.Routes {
			out = append(out, r.Node)
		}
	}
	slices.Sort(out)
	return out
}

// waitRoutes waits until the node has routes to exactly the others.
func (c *testCluster) waitRoutes(nd *node, others ...string) {
	c.t.Helper()
	slices.Sort(others)
	for deadline := time.Now().Add(60 * time.Second); ; {
		got := c.routesOf(nd)
		if slices.Equal(got, others) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s has routes to %v, want %v; its last log lines:\n%s", nd.name, got, others, &nd.tail)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestRouteCARotation: the routes' CA is rotated on a running cluster
// without restarting the nodes for it, as an operator does (docs/
// cluster.md, "Route TLS"): three nodes with certificates of CA 1 and
// CA 1 as their CA; (1) every node's CA file becomes the bundle CA 1 +
// CA 2, read on SIGHUP (n1, n3) or by the file watcher at the next
// handshake (n2, no signal); (2) n3 gets a certificate of CA 2 and
// restarts: n1 and n2, which started trusting CA 1 alone, take its
// routes (both ways: each node solicits and accepts); a node with a
// certificate of a CA 3 outside the bundle stays out; (3) n1, n2 get
// certificates of CA 2 and the CA files become CA 2 alone (SIGHUP on n1
// and n3, the watcher on n2): a node with a certificate of CA 1 is now
// refused by all three, and n1, restarted, rejoins n2 and n3 with CA 2
// alone. Without the CA reload, (2) fails: n1 and n2 refuse n3.
func TestRouteCARotation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs four nodes")
	}
	dir := t.TempDir()
	ca1, ca2, ca3 := newCA(t, dir, "ca1"), newCA(t, dir, "ca2"), newCA(t, dir, "ca3")
	c := newCluster(t, 4)
	n1, n2, n3, intruder := c.nodes[0], c.nodes[1], c.nodes[2], c.nodes[3]
	members := []*node{n1, n2, n3}
	c.peers = strings.Join(strings.Split(c.peers, ",")[:3], ",")
	caFile := func(nd *node) string { return filepath.Join(dir, nd.name+"-ca.pem") }
	// issue gives the node a certificate of signer (same files every
	// time) and its own CA file.
	issue := func(nd *node, signer *testCA) {
		flags := signer.issue(t, dir, nd.name, signer)
		flags[len(flags)-1] = caFile(nd)
		nd.args = flags
	}
	for _, nd := range members {
		issue(nd, ca1)
		writeBundle(t, caFile(nd), ca1)
		nd.noSecret, nd.log = true, &lineLog{}
		c.start(nd)
	}
	for _, nd := range members {
		c.listening(nd)
		c.waitReady(nd)
	}
	for _, nd := range members {
		c.checkStatus(nd, 3)
	}

	// (1) The bundle everywhere.
	marks := map[*node]int{}
	for _, nd := range members {
		marks[nd] = nd.log.mark()
		writeBundle(t, caFile(nd), ca1, ca2)
	}
	for _, nd := range []*node{n1, n3} {
		if err := nd.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", nd.name, waitLog(t, nd, marks[nd], 30*time.Second, "reload: cluster.tls.ca loaded", `"certificates":2`))
	}

	// (2) n3 on a certificate of CA 2.
	issue(n3, ca2)
	began := time.Now()
	stopNode(t, n3, syscall.SIGTERM)
	c.restart(n3, 3)
	for _, nd := range members {
		var others []string
		for _, o := range members {
			if o != nd {
				others = append(others, o.name)
			}
		}
		c.waitRoutes(nd, others...)
		c.checkStatus(nd, 3)
	}
	t.Logf("n3 with a certificate of CA 2 back in the cluster %s after its restart", time.Since(began).Round(time.Millisecond))
	t.Logf("n2 (file watcher): %s", waitLog(t, n2, marks[n2], time.Second, "cluster.tls.ca changed: loaded", `"certificates":2`))

	// A node with a certificate of CA 3 (it trusts the bundle, so that
	// only the members' check keeps it out) stays out.
	for _, nd := range members {
		marks[nd] = nd.log.mark()
	}
	intruder.args, intruder.noSecret, intruder.log = ca3.issue(t, dir, intruder.name, ca3), true, &lineLog{}
	intruder.args[len(intruder.args)-1] = caFile(intruder)
	writeBundle(t, caFile(intruder), ca1, ca2)
	intruder.peers = c.peers + ",127.0.0.1:" + strconv.Itoa(intruder.port)
	c.start(intruder)
	for _, nd := range members {
		t.Logf("%s on the CA 3 node: %s", nd.name, waitLog(t, nd, marks[nd], 45*time.Second, "TLS route handshake error", "certificate signed by unknown authority", "CN="+intruder.name))
	}
	c.checkOut(intruder, members)
	stopNode(t, intruder, syscall.SIGTERM)

	// (3) n1 and n2 on certificates of CA 2, then CA 2 alone (n2 by the
	// watcher again).
	issue(n1, ca2)
	issue(n2, ca2)
	for _, nd := range members {
		marks[nd] = nd.log.mark()
		writeBundle(t, caFile(nd), ca2)
	}
	for _, nd := range []*node{n1, n3} {
		if err := nd.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", nd.name, waitLog(t, nd, marks[nd], 30*time.Second, "reload: cluster.tls.ca loaded", `"certificates":1`))
	}
	// The intruder again, with a certificate of CA 1, trusted until now.
	intruder.args = ca1.issue(t, dir, intruder.name, ca1)
	intruder.args[len(intruder.args)-1] = caFile(intruder)
	c.start(intruder)
	for _, nd := range members {
		t.Logf("%s on the CA 1 node: %s", nd.name, waitLog(t, nd, marks[nd], 45*time.Second, "TLS route handshake error", "certificate signed by unknown authority", "CN="+intruder.name))
	}
	c.checkOut(intruder, members)
	stopNode(t, intruder, syscall.SIGTERM)
	t.Logf("n2 (file watcher): %s", waitLog(t, n2, marks[n2], time.Second, "cluster.tls.ca changed: loaded", `"certificates":1`))

	// n1 restarted trusts CA 2 alone: n2 and n3 must present their new
	// certificates, and take its.
	began = time.Now()
	stopNode(t, n1, syscall.SIGTERM)
	c.restart(n1, 3)
	for _, nd := range members {
		var others []string
		for _, o := range members {
			if o != nd {
				others = append(others, o.name)
			}
		}
		c.waitRoutes(nd, others...)
		c.checkStatus(nd, 3)
	}
	t.Logf("n1 with CA 2 alone back in the cluster %s after its restart", time.Since(began).Round(time.Millisecond))
	// nats-server warns that solicited routes' certificates are not
	// verified (InsecureSkipVerify): throng verifies them itself, and
	// keeps the warning out of the operator's log.
	for _, nd := range members {
		if s := nd.log.find(`"level":"WARN"`, "will not be verified"); s != "" {
			t.Errorf("%s: %s", nd.name, s)
		}
	}
}

// checkOut checks that the node did not join: after a few seconds (a
// refused route is tried again every second) no member has a route to
// it or lists it, and it never joined.
func (c *testCluster) checkOut(nd *node, members []*node) {
	c.t.Helper()
	time.Sleep(5 * time.Second)
	for _, m := range members {
		var st status
		c.api(m, "GET", "/api/status", "", &st)
		for _, r := range st.Cluster.Routes {
			if r.Node == nd.name {
				c.t.Fatalf("%s has a route to %s", m.name, nd.name)
			}
		}
		for _, x := range st.Cluster.Nodes {
			if x.Name == nd.name {
				c.t.Fatalf("%s lists %s as a node", m.name, nd.name)
			}
		}
	}
	if nd.log.find("joined the cluster") != "" {
		c.t.Fatalf("%s joined", nd.name)
	}
}
