package testkit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
	mqtt311 "github.com/eclipse/paho.mqtt.golang"

	"github.com/throngmq/throng/internal/testkit"
)

// The connections API (issue 15; docs/admin-api.md, "Connections"): each
// client is a real one on its own connection — paho.golang (MQTT 5),
// paho.mqtt.golang (3.1.1), go-amqp — and the administrator lists,
// inspects and closes them through the admin API; each client sees the
// close its protocol has for it.

type connView struct {
	ID       string  `json:"id"`
	Node     string  `json:"node"`
	Tenant   string  `json:"tenant"`
	Protocol string  `json:"protocol"`
	ClientID string  `json:"clientId"`
	User     string  `json:"user"`
	Remote   string  `json:"remoteAddress"`
	TLS      bool    `json:"tls"`
	Since    string  `json:"connectedSince"`
	MsgsIn   uint64  `json:"messagesIn"`
	MsgsOut  uint64  `json:"messagesOut"`
	BytesIn  uint64  `json:"bytesIn"`
	BytesOut uint64  `json:"bytesOut"`
	RateIn   float64 `json:"messagesInPerSecond"`
	Links    int     `json:"links"`
	LinkList []struct {
		Kind    string `json:"kind"`
		Address string `json:"address"`
		QoS     *int   `json:"qos"`
		Credit  *int64 `json:"credit"`
	} `json:"linkList"`
}

type connList struct {
	Connections []connView `json:"connections"`
	Next        string     `json:"next"`
}

func (e *liveEnv) conns(path string) connList {
	e.t.Helper()
	var l connList
	if err := json.Unmarshal(e.api("GET", path, nil, 200), &l); err != nil {
		e.t.Fatal(err)
	}
	return l
}

// byClient finds the connection of a client id in a list.
func byClient(l connList, id string) *connView {
	for i := range l.Connections {
		if l.Connections[i].ClientID == id {
			return &l.Connections[i]
		}
	}
	return nil
}

func TestConnectionsListInspectClose(t *testing.T) {
	e := startLive(t)
	e.user("default", "app1", "pw-app1", "orders/#")
	e.api("POST", "/api/tenants", map[string]any{"name": "acme"}, 201)
	e.api("POST", "/api/tenants/acme/users", map[string]any{"name": "watch", "password": "pw-watch", "roles": []string{"operator"}}, 201)

	c5, rc := e.mqtt5("app1", "pw-app1", "c5")
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	c3, lost3 := e.mqtt311("app1", "pw-app1", "c3")
	if tok := c3.Subscribe("orders/#", 1, func(mqtt311.Client, mqtt311.Message) {}); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	ac, ar := e.amqp("app1", "pw-app1", "orders/amqp")

	all := e.conns("/api/connections")
	if len(all.Connections) != 3 {
		t.Fatalf("%d connections, want 3: %+v", len(all.Connections), all)
	}
	for id, proto := range map[string]string{"c5": "mqtt5", "c3": "mqtt3"} {
		c := byClient(all, id)
		if c == nil || c.Protocol != proto || c.User != "app1" || c.Tenant != "default" || c.TLS ||
			!strings.HasPrefix(c.Remote, "127.0.0.1:") || c.Since == "" || c.Node == "" || !strings.HasPrefix(c.ID, c.Node+"-") {
			t.Fatalf("%s: %+v", id, c)
		}
	}
	var amqpConn *connView
	for i, c := range all.Connections {
		if c.Protocol == "amqp" {
			amqpConn = &all.Connections[i]
		}
	}
	if amqpConn == nil || amqpConn.User != "app1" || amqpConn.ClientID == "" || amqpConn.Links != 1 || byClient(all, "c3").Links != 1 {
		t.Fatalf("amqp: %+v", all)
	}

	// Messages in and out are counted per connection.
	const n = 20
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range n {
		if _, err := c5.Publish(ctx, &paho.Publish{Topic: "orders/a", QoS: 1, Payload: []byte(fmt.Sprintf("order %02d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		l := e.conns("/api/connections")
		p, s := byClient(l, "c5"), byClient(l, "c3")
		return p != nil && s != nil && p.MsgsIn == n && p.BytesIn == n*8 && s.MsgsOut == n && s.BytesOut == n*8
	})

	// Filters and paging.
	if l := e.conns("/api/connections?protocol=mqtt5"); len(l.Connections) != 1 || l.Connections[0].ClientID != "c5" {
		t.Fatalf("protocol=mqtt5: %+v", l)
	}
	if l := e.conns("/api/connections?tenant=acme"); len(l.Connections) != 0 {
		t.Fatalf("tenant=acme: %+v", l)
	}
	if l := e.conns("/api/tenants/default/connections?user=app1"); len(l.Connections) != 3 {
		t.Fatalf("user=app1: %+v", l)
	}
	seen := map[string]bool{}
	after := ""
	for range 3 {
		l := e.conns("/api/connections?limit=1&after=" + after)
		if len(l.Connections) != 1 || seen[l.Connections[0].ID] {
			t.Fatalf("page after %q: %+v", after, l)
		}
		seen[l.Connections[0].ID] = true
		after = l.Next
	}
	if after != "" {
		if l := e.conns("/api/connections?limit=1&after=" + after); len(l.Connections) != 0 || l.Next != "" {
			t.Fatalf("past the last page: %+v", l)
		}
	}
	e.api("GET", "/api/connections?protocol=http", nil, 400)
	e.api("GET", "/api/connections?limit=0", nil, 400)

	// One connection with its links.
	var d connView
	sub := byClient(e.conns("/api/connections"), "c3")
	if err := json.Unmarshal(e.api("GET", "/api/connections/"+sub.ID, nil, 200), &d); err != nil {
		t.Fatal(err)
	}
	if d.Links != 1 || len(d.LinkList) != 1 || d.LinkList[0].Kind != "subscription" || d.LinkList[0].Address != "orders/#" ||
		d.LinkList[0].QoS == nil || *d.LinkList[0].QoS != 1 {
		t.Fatalf("c3: %+v", d)
	}
	if err := json.Unmarshal(e.api("GET", "/api/tenants/default/connections/"+amqpConn.ID, nil, 200), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.LinkList) != 1 || d.LinkList[0].Kind != "sender" || d.LinkList[0].Address != "orders/amqp" || d.LinkList[0].Credit == nil {
		t.Fatalf("amqp: %+v", d)
	}
	e.api("GET", "/api/connections/nosuchnode-1", nil, 404)
	e.api("GET", "/api/connections/garbage", nil, 404)

	// Another tenant's operator sees none of them, not even by id.
	op := &apiUser{base: e.AdminURL, user: "watch@acme", pass: "pw-watch"}
	if st, _ := op.do("GET", "/api/tenants/acme/connections"); st != 200 {
		t.Fatalf("operator: own list %d", st)
	}
	if st, _ := op.do("GET", "/api/tenants/acme/connections/"+sub.ID); st != 404 {
		t.Fatalf("operator: other tenant's connection %d, want 404", st)
	}
	if st, _ := op.do("GET", "/api/connections"); st != 403 {
		t.Fatalf("operator: all connections %d, want 403", st)
	}
	if st, _ := op.do("DELETE", "/api/tenants/acme/connections/"+sub.ID); st != 403 {
		t.Fatalf("operator: close %d, want 403", st)
	}

	// Closing: MQTT 5 gets DISCONNECT 0x98, 3.1.1 is closed, AMQP gets
	// amqp:connection:forced.
	start := time.Now()
	e.api("DELETE", "/api/connections/"+byClient(e.conns("/api/connections"), "c5").ID, nil, 204)
	if rc, _ := c5.disconnected(t, start, 10*time.Second); rc != 0x98 {
		t.Fatalf("MQTT 5: DISCONNECT %#x, want 0x98", rc)
	}
	e.api("DELETE", "/api/tenants/default/connections/"+sub.ID, nil, 204)
	select {
	case <-lost3:
	case <-time.After(10 * time.Second):
		t.Fatal("MQTT 3.1.1: not closed")
	}
	e.api("DELETE", "/api/connections/"+amqpConn.ID, nil, 204)
	if cond, _ := amqpCondition(t, ar, 10*time.Second); cond != goamqp.ErrCondConnectionForced {
		t.Fatalf("AMQP: %s, want amqp:connection:forced", cond)
	}
	_ = ac
	testkit.Eventually(t, 10*time.Second, func() bool { return len(e.conns("/api/connections").Connections) == 0 })
	e.api("DELETE", "/api/connections/"+amqpConn.ID, nil, 404)
}

// apiUser is a bare admin API client with its own credentials.
type apiUser struct {
	base, user, pass string
}

func (c *apiUser) do(method, path string) (int, []byte) {
	req, _ := http.NewRequest(method, c.base+path, nil)
	req.SetBasicAuth(c.user, c.pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
