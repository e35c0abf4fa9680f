package cluster_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// connList is the answer of the connection lists (docs/admin-api.md).
type connList struct {
	Connections []struct {
		ID       string `json:"id"`
		Node     string `json:"node"`
		Tenant   string `json:"tenant"`
		ClientID string `json:"clientId"`
	} `json:"connections"`
	Next    string   `json:"next"`
	Missing []string `json:"missing"`
}

// byClient is the id of the listed connection of client id ("" if none)
// and its node.
func (l connList) byClient(id string) (string, string) {
	for _, c := range l.Connections {
		if c.ClientID == id {
			return c.ID, c.Node
		}
	}
	return "", ""
}

// apiStatus calls the admin API of a node as the platform administrator
// and returns the status, whatever it is (c.api fails the test on an
// error status).
func (c *testCluster) apiStatus(nd *node, method, path string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+nd.admin+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.SetBasicAuth("admin", adminPW)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s on %s: %v", method, path, nd.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestConnectionsAcrossNodes (issue 15): the connections API of node 1
// lists the MQTT clients of nodes 2 and 3 with their node, gets node 3's
// connection by id and closes it (the MQTT 5 client gets DISCONNECT
// 0x98, administrative action); a tenant's path does not show another
// tenant's connection of another node; with node 3 stopped (no answer
// within 2 s) or down the list names it as missing and a get of its id
// is 503.
func TestConnectionsAcrossNodes(t *testing.T) {
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
	c.api(n1, "POST", "/api/tenants", `{"name":"acme"}`, nil)
	c.api(n1, "POST", "/api/tenants", `{"name":"other"}`, nil)
	c.api(n1, "POST", "/api/tenants/acme/users", `{"name":"app","password":"`+appPW+`","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`, nil)

	// Node 2's client; the user replicated to node 2 may take a moment.
	deadline := time.Now().Add(30 * time.Second)
	for tryMQTT(t, n2, "dev-n2", time.Now().After(deadline)) == nil {
		time.Sleep(200 * time.Millisecond)
	}
	// Node 3's client, watching for the server's DISCONNECT.
	disc := make(chan *paho.Disconnect, 1)
	for {
		conn, err := net.DialTimeout("tcp", n3.mqtt, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cl := paho.NewClient(paho.ClientConfig{ClientID: "dev-n3", Conn: conn,
			OnServerDisconnect: func(d *paho.Disconnect) { disc <- d }})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ack, err := cl.Connect(ctx, &paho.Connect{ClientID: "dev-n3", CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: appUser, PasswordFlag: true, Password: []byte(appPW)})
		cancel()
		if err == nil && ack.ReasonCode == 0 {
			t.Cleanup(func() { _ = cl.Disconnect(&paho.Disconnect{}) })
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("mqtt connect to n3: %v %+v", err, ack)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Node 1 lists both, each with its node.
	var l connList
	start := time.Now()
	c.api(n1, "GET", "/api/connections", "", &l)
	t.Logf("list across 3 nodes: %d connections in %s", len(l.Connections), time.Since(start).Round(time.Millisecond))
	id2, node2 := l.byClient("dev-n2")
	id3, node3 := l.byClient("dev-n3")
	if node2 != "n2" || node3 != "n3" || !strings.HasPrefix(id3, "n3-") || len(l.Missing) != 0 {
		t.Fatalf("node 1's list: %+v", l)
	}
	// Paging crosses the nodes in id order: one per page.
	var ids []string
	for after := ""; ; {
		var p connList
		c.api(n1, "GET", "/api/connections?limit=1&after="+after, "", &p)
		for _, x := range p.Connections {
			ids = append(ids, x.ID)
		}
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	if len(ids) != len(l.Connections) || !slices.Contains(ids, id2) || !slices.Contains(ids, id3) {
		t.Fatalf("pages of one: %v, the whole list: %+v", ids, l)
	}
	// The tenant's list on node 2 shows node 3's client; another tenant's not.
	c.api(n2, "GET", "/api/tenants/acme/connections?clientId=dev-n3", "", &l)
	if got, _ := l.byClient("dev-n3"); got != id3 || len(l.Connections) != 1 {
		t.Fatalf("acme's list on n2: %+v", l)
	}
	c.api(n1, "GET", "/api/tenants/other/connections", "", &l)
	if len(l.Connections) != 0 {
		t.Fatalf("other's list: %+v", l)
	}
	if st, body := c.apiStatus(n1, "GET", "/api/tenants/other/connections/"+id3); st != http.StatusNotFound {
		t.Fatalf("another tenant's connection on n3 through n1: %d %s", st, body)
	}

	// Node 1 gets node 3's connection by id.
	var one struct {
		ID       string `json:"id"`
		Node     string `json:"node"`
		ClientID string `json:"clientId"`
	}
	c.api(n1, "GET", "/api/connections/"+id3, "", &one)
	if one.ID != id3 || one.Node != "n3" || one.ClientID != "dev-n3" {
		t.Fatalf("GET %s on n1: %+v", id3, one)
	}
	if st, body := c.apiStatus(n1, "GET", "/api/connections/n3-999999"); st != http.StatusNotFound {
		t.Fatalf("an unknown id of n3 through n1: %d %s", st, body)
	}
	if st, body := c.apiStatus(n1, "GET", "/api/connections/n9-1"); st != http.StatusNotFound {
		t.Fatalf("an id of no node: %d %s", st, body)
	}

	// Node 1 closes it: the client gets DISCONNECT 0x98 and the
	// connection leaves the list.
	if st := c.api(n1, "DELETE", "/api/connections/"+id3, "", nil); st != http.StatusNoContent {
		t.Fatalf("DELETE: %d", st)
	}
	select {
	case d := <-disc:
		if d.ReasonCode != 0x98 {
			t.Fatalf("DISCONNECT 0x%02x, want 0x98", d.ReasonCode)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no DISCONNECT within 30 s of the close")
	}
	for {
		c.api(n1, "GET", "/api/connections", "", &l)
		if got, _ := l.byClient("dev-n3"); got == "" {
			break
		}
		if time.Now().After(deadline.Add(time.Minute)) {
			t.Fatalf("closed connection still listed: %+v", l)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Node 3 stopped (SIGSTOP: routes up, no answer): the list waits
	// its 2 s for it and names it; a get of its ids is 503.
	if err := n3.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	c.api(n1, "GET", "/api/connections", "", &l)
	took := time.Since(start)
	t.Logf("list with n3 stopped: %s", took.Round(time.Millisecond))
	if got, _ := l.byClient("dev-n2"); got != id2 || !slices.Equal(l.Missing, []string{"n3"}) || took > 10*time.Second {
		t.Fatalf("list with n3 stopped (%s): %+v", took, l)
	}
	if st, body := c.apiStatus(n1, "GET", "/api/connections/n3-1"); st != http.StatusServiceUnavailable {
		t.Fatalf("GET of n3's id with n3 stopped: %d %s", st, body)
	}
	_ = n3.cmd.Process.Signal(syscall.SIGCONT)

	// Node 3 down: named missing, the others still listed; its ids 503.
	n3.kill()
	start = time.Now()
	c.api(n1, "GET", "/api/connections", "", &l)
	t.Logf("list with n3 down: %s", time.Since(start).Round(time.Millisecond))
	if got, _ := l.byClient("dev-n2"); got != id2 || !slices.Equal(l.Missing, []string{"n3"}) {
		t.Fatalf("list with n3 down: %+v", l)
	}
	if st, body := c.apiStatus(n1, "GET", "/api/connections/"+id3); st != http.StatusServiceUnavailable {
		t.Fatalf("GET of n3's id with n3 down: %d %s", st, body)
	}
}
