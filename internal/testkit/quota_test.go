package testkit_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/testkit"
)

// Message rate limits (DESIGN.md §6, docs/security.md "Plans and
// quotas") end to end: a tenant at its rate gets each protocol's quota
// error on real clients — AMQP rejected amqp:resource-limit-exceeded on
// a link that stays usable, MQTT 5 PUBACK 0x97, HTTP 429 with a
// Retry-After from the bucket — nothing refused is delivered, nothing
// accepted is lost, and another tenant on the node is unaffected. The
// rates are tiny (one token per 100 s) so that the bucket does not
// refill during the test: no timing assumptions.

type quotaEnv struct {
	*testkit.Platform
	t *testing.T
}

func (e *quotaEnv) admin(method, path, body string) string {
	e.t.Helper()
	resp := e.Do(e.t, method, path, strings.NewReader(body))
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return string(b)
}

func (e *quotaEnv) tenant(name, limits string) {
	e.t.Helper()
	e.admin("POST", "/api/tenants", `{"name":"`+name+`","limits":`+limits+`}`)
	e.admin("POST", "/api/tenants/"+name+"/users", `{"name":"app","password":"app-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`)
	e.admin("POST", "/api/tenants/"+name+"/addresses", `{"name":"q","type":"queue"}`)
}

func (e *quotaEnv) amqpSession(user string) *goamqp.Session {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := goamqp.Dial(ctx, "amqp://"+e.AMQPAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain(user, "app-secret")})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	s, err := conn.NewSession(ctx, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *quotaEnv) mqtt5(user, id string) *paho.Client {
	e.t.Helper()
	nc, err := net.DialTimeout("tcp", e.MQTTAddr, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte("app-secret"), PasswordFlag: true})
	if err != nil || ack.ReasonCode != 0 {
		e.t.Fatalf("mqtt connect %s: %v %+v", user, err, ack)
	}
	e.t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func mqttPublish(t *testing.T, c *paho.Client, topic, body string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(body)})
	if r != nil {
		return r.ReasonCode
	}
	if err != nil {
		t.Fatalf("mqtt publish: %v", err)
	}
	return 0
}

func amqpSend(t *testing.T, s *goamqp.Sender, body string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Send(ctx, goamqp.NewMessage([]byte(body)), nil)
}

// drain receives what q holds: it fails unless exactly want arrive.
func drain(t *testing.T, s *goamqp.Session, want []string) {
	t.Helper()
	ctx := ctx10(t)
	r, err := s.NewReceiver(ctx, "q", &goamqp.ReceiverOptions{Credit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range want {
		m, err := r.Receive(ctx, nil)
		if err != nil {
			t.Fatalf("received %q, then: %v", got, err)
		}
		_ = r.AcceptMessage(ctx, m)
		got = append(got, string(m.GetData()))
	}
	short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if m, err := r.Receive(short, nil); err == nil {
		t.Fatalf("a refused message was delivered: %q", m.GetData())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("received %q, want %q", got, want)
	}
}

func TestQuotaMessageRateIn(t *testing.T) {
	e := &quotaEnv{Platform: testkit.Start(t), t: t}
	// Three messages of burst, then one per 100 s.
	e.tenant("limited", `{"maxMessagesInPerSecond":0.01,"burst":3}`)
	e.tenant("free", `{}`)

	// AMQP: three accepted, then rejected with the condition, twice on
	// the same link (it stays attached).
	as := e.amqpSession("app@limited")
	snd, err := as.NewSender(ctx10(t), "q", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := amqpSend(t, snd, "a"+strconv.Itoa(i)); err != nil {
			t.Fatalf("send %d within the burst: %v", i, err)
		}
	}
	for i := range 2 {
		err := amqpSend(t, snd, "refused")
		var ae *goamqp.Error
		if !errors.As(err, &ae) || ae.Condition != "amqp:resource-limit-exceeded" {
			t.Fatalf("send over the rate (%d): %v, want rejected amqp:resource-limit-exceeded", i, err)
		}
	}

	// MQTT 5, QoS 1: PUBACK 0x97 (quota exceeded), the connection stays.
	mc := e.mqtt5("app@limited", "quota-m1")
	for range 2 {
		if rc := mqttPublish(t, mc, "q", "refused"); rc != 0x97 {
			t.Fatalf("MQTT publish over the rate: PUBACK %#x, want 0x97", rc)
		}
	}

	// HTTP /api/v1: 429, limit_exceeded, Retry-After from the bucket
	// (about 100 s for the next token).
	resp, body := doReq(t, http.DefaultClient, "POST", "http://"+e.HTTPAddr+"/api/v1/addresses/q/messages", "app@limited", "app-secret", nil, "refused")
	wantError(t, resp, body, http.StatusTooManyRequests, "limit_exceeded")
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 50 || ra > 101 {
		t.Fatalf("Retry-After %q, want about 100 s", resp.Header.Get("Retry-After"))
	}

	// Nothing refused was delivered, nothing accepted was lost.
	drain(t, as, []string{"a0", "a1", "a2"})

	// Another tenant on the node: all of its publishes succeed.
	fs := e.amqpSession("app@free")
	fsnd, err := fs.NewSender(ctx10(t), "q", nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 20 {
		b := "f" + strconv.Itoa(i)
		if err := amqpSend(t, fsnd, b); err != nil {
			t.Fatalf("free tenant send %d: %v", i, err)
		}
		want = append(want, b)
	}
	fm := e.mqtt5("app@free", "quota-f1")
	for i := range 5 {
		if rc := mqttPublish(t, fm, "q", "m"+strconv.Itoa(i)); rc != 0 {
			t.Fatalf("free tenant MQTT publish %d: %#x", i, rc)
		}
		want = append(want, "m"+strconv.Itoa(i))
	}
	drain(t, fs, want)

	// Counted per tenant and limit: 2 AMQP + 2 MQTT + 1 HTTP.
	if n := quotaRefused(t, e.Platform, "limited", "messagesIn"); n != 5 {
		t.Fatalf("throng_tenant_quota_refused_total{limited,messagesIn} = %v, want 5", n)
	}
	if n := quotaRefused(t, e.Platform, "free", "messagesIn"); n != 0 {
		t.Fatalf("free tenant refused %v", n)
	}
}

func TestQuotaMessageRateInPerConnection(t *testing.T) {
	e := &quotaEnv{Platform: testkit.Start(t), t: t}
	// One message per connection (burst: one second's worth, at least 1),
	// then one per 100 s.
	e.tenant("perconn", `{"maxMessagesInPerSecondPerConnection":0.01}`)
	c1 := e.mqtt5("app@perconn", "quota-c1")
	c2 := e.mqtt5("app@perconn", "quota-c2")
	if rc := mqttPublish(t, c1, "q", "c1"); rc != 0 {
		t.Fatalf("c1 first: %#x", rc)
	}
	if rc := mqttPublish(t, c1, "q", "refused"); rc != 0x97 {
		t.Fatalf("c1 second: %#x, want 0x97", rc)
	}
	// The other connection has its own bucket.
	if rc := mqttPublish(t, c2, "q", "c2"); rc != 0 {
		t.Fatalf("c2 first: %#x", rc)
	}
	s := e.amqpSession("app@perconn")
	snd, err := s.NewSender(ctx10(t), "q", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := amqpSend(t, snd, "a1"); err != nil {
		t.Fatalf("AMQP first: %v", err)
	}
	var ae *goamqp.Error
	if err := amqpSend(t, snd, "refused"); !errors.As(err, &ae) || ae.Condition != "amqp:resource-limit-exceeded" {
		t.Fatalf("AMQP second: %v", err)
	}
	drain(t, s, []string{"c1", "c2", "a1"})
	if n := quotaRefused(t, e.Platform, "perconn", "messagesInPerConnection"); n != 2 {
		t.Fatalf("refused per connection = %v, want 2", n)
	}
}

func quotaRefused(t *testing.T, p *testkit.Platform, tn, limit string) float64 {
	t.Helper()
	e := &iotEnv{Platform: p, t: t}
	return e.metric("throng_tenant_quota_refused_total", "tenant", tn, "limit", limit)
}

// Usage vs limit in the admin API: an operator reads the tenant with
// ?usage=true while a device (MQTT) is connected and an application
// (AMQP) sends and receives.
func TestQuotaUsage(t *testing.T) {
	e := &quotaEnv{Platform: testkit.Start(t), t: t}
	e.tenant("metered", `{"maxConnections":4,"maxAddresses":5,"maxUsers":3,"maxStoredBytes":1000000,"maxMessagesInPerSecond":1000}`)
	e.mqtt5("app@metered", "usage-m1")
	s := e.amqpSession("app@metered")
	snd, err := s.NewSender(ctx10(t), "q", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Stored bytes: one message left in the queue.
	if err := amqpSend(t, snd, "kept-in-the-queue"); err != nil {
		t.Fatal(err)
	}
	type amount struct{ Used, Limit float64 }
	var got struct {
		Name  string
		Usage struct {
			Connections          amount
			Addresses            amount
			Users                amount
			StoredBytes          amount `json:"storedBytes"`
			MessagesInPerSecond  amount `json:"messagesInPerSecond"`
			MessagesOutPerSecond amount `json:"messagesOutPerSecond"`
		}
	}
	read := func() {
		t.Helper()
		body := e.admin("GET", "/api/tenants/metered?usage=true", "")
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
	}
	read()
	u := got.Usage
	if got.Name != "metered" || u.Connections != (amount{2, 4}) || u.Addresses != (amount{1, 5}) || u.Users != (amount{1, 3}) ||
		u.StoredBytes.Limit != 1000000 || u.StoredBytes.Used <= 0 || u.MessagesInPerSecond.Limit != 1000 {
		t.Fatalf("usage %+v", got)
	}
	// Rates: messages flowing in and out show in the last whole second.
	r, err := s.NewReceiver(ctx10(t), "q", &goamqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for got.Usage.MessagesInPerSecond.Used == 0 || got.Usage.MessagesOutPerSecond.Used == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("rates never shown: %+v", got.Usage)
		}
		if err := amqpSend(t, snd, "flow"); err != nil {
			t.Fatal(err)
		}
		m, err := r.Receive(ctx10(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = r.AcceptMessage(ctx10(t), m)
		read()
	}
	// Without ?usage the body is the tenant as before.
	if body := e.admin("GET", "/api/tenants/metered", ""); strings.Contains(body, "usage") {
		t.Fatalf("usage without asking: %s", body)
	}
}

// status sends an admin request and returns the status and body.
func (e *quotaEnv) status(method, path, body string) (int, string) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	resp := e.Do(e.t, method, path, rd)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// Named plans: the platform administrator defines a plan, tenants name
// it, a tenant's own limits override its fields, and a changed plan
// applies to its tenants' next message.
func TestQuotaPlans(t *testing.T) {
	e := &quotaEnv{Platform: testkit.Start(t), t: t}
	e.admin("POST", "/api/plans", `{"name":"small","limits":{"maxMessagesInPerSecond":0.01,"burst":2,"maxAddresses":3}}`)
	if st, b := e.status("POST", "/api/plans", `{"name":"small"}`); st != http.StatusConflict {
		t.Fatalf("second create: %d %s", st, b)
	}
	if st, b := e.status("POST", "/api/tenants", `{"name":"nope","plan":"missing"}`); st != http.StatusBadRequest || !strings.Contains(b, "missing") {
		t.Fatalf("tenant with an unknown plan: %d %s", st, b)
	}
	e.admin("POST", "/api/tenants", `{"name":"planned","plan":"small"}`)
	e.admin("POST", "/api/tenants/planned/users", `{"name":"app","password":"app-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`)
	e.admin("POST", "/api/tenants/planned/addresses", `{"name":"q","type":"queue"}`)
	// Own limits over the plan's: this tenant's rate is its own.
	e.tenant("own", `{"maxMessagesInPerSecond":1000}`)
	e.admin("PUT", "/api/tenants/own", `{"name":"own","plan":"small","limits":{"maxMessagesInPerSecond":1000}}`)

	if st, b := e.status("DELETE", "/api/plans/small", ""); st != http.StatusConflict {
		t.Fatalf("delete of a plan in use: %d %s", st, b)
	}
	var lst []struct{ Name string }
	if err := json.Unmarshal([]byte(e.admin("GET", "/api/plans", "")), &lst); err != nil || len(lst) != 1 || lst[0].Name != "small" {
		t.Fatalf("plans %+v %v", lst, err)
	}
	// Plans are the platform administrator's: a tenant admin is refused.
	e.admin("POST", "/api/tenants/planned/users", `{"name":"boss","password":"boss-secret","roles":["tenant-admin"]}`)
	req, _ := http.NewRequest("GET", e.AdminURL+"/api/plans", nil)
	req.SetBasicAuth("boss@planned", "boss-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("tenant admin GET /api/plans: %d", resp.StatusCode)
	}
	// Nor may a tenant admin change (or drop) the tenant's plan.
	req, _ = http.NewRequest("PUT", e.AdminURL+"/api/tenants/planned", strings.NewReader(`{"name":"planned"}`))
	req.SetBasicAuth("boss@planned", "boss-secret")
	req.Header.Set("Content-Type", "application/json")
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("tenant admin dropping the plan: %d", resp.StatusCode)
	}

	// The plan's burst of 2, then refused.
	snd, err := e.amqpSession("app@planned").NewSender(ctx10(t), "q", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := amqpSend(t, snd, "p"+strconv.Itoa(i)); err != nil {
			t.Fatalf("send %d within the plan's burst: %v", i, err)
		}
	}
	var ae *goamqp.Error
	if err := amqpSend(t, snd, "refused"); !errors.As(err, &ae) || ae.Condition != "amqp:resource-limit-exceeded" {
		t.Fatalf("over the plan's rate: %v", err)
	}
	// The plan's maxAddresses applies too (the tenant has 1 of 3).
	e.admin("POST", "/api/tenants/planned/addresses", `{"name":"q2","type":"queue"}`)
	e.admin("POST", "/api/tenants/planned/addresses", `{"name":"q3","type":"queue"}`)
	if st, b := e.status("POST", "/api/tenants/planned/addresses", `{"name":"q4","type":"queue"}`); st/100 != 4 {
		t.Fatalf("4th address under the plan's maxAddresses 3: %d %s", st, b)
	}
	// The tenant with its own rate is not held to the plan's.
	osnd, err := e.amqpSession("app@own").NewSender(ctx10(t), "q", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := amqpSend(t, osnd, "o"+strconv.Itoa(i)); err != nil {
			t.Fatalf("own-limit tenant send %d: %v", i, err)
		}
	}
	// A changed plan applies to its tenants' next message, and its
	// maxConnections to the next MQTT connection (CONNACK 0x97): the
	// AMQP connection above and plan-m1 fill 2 (every protocol counts).
	e.admin("PUT", "/api/plans/small", `{"limits":{"maxMessagesInPerSecond":1000,"maxAddresses":3,"maxConnections":2}}`)
	e.mqtt5("app@planned", "plan-m1")
	nc, err := net.DialTimeout("tcp", e.MQTTAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	second := paho.NewClient(paho.ClientConfig{ClientID: "plan-m2", Conn: nc})
	ack, _ := second.Connect(ctx10(t), &paho.Connect{ClientID: "plan-m2", CleanStart: true, KeepAlive: 30,
		Username: "app@planned", UsernameFlag: true, Password: []byte("app-secret"), PasswordFlag: true})
	if ack == nil || ack.ReasonCode != 0x97 {
		t.Fatalf("third connection over the plan's maxConnections 2: %+v", ack)
	}
	for i := range 5 {
		if err := amqpSend(t, snd, "after"+strconv.Itoa(i)); err != nil {
			t.Fatalf("send %d after the plan was raised: %v", i, err)
		}
	}
	// Usage shows the effective limits.
	var got struct {
		Plan  string
		Usage struct {
			MessagesInPerSecond struct{ Limit float64 } `json:"messagesInPerSecond"`
			Addresses           struct{ Used, Limit float64 }
		}
	}
	if err := json.Unmarshal([]byte(e.admin("GET", "/api/tenants/planned?usage=true", "")), &got); err != nil {
		t.Fatal(err)
	}
	if got.Plan != "small" || got.Usage.MessagesInPerSecond.Limit != 1000 || got.Usage.Addresses.Used != 3 || got.Usage.Addresses.Limit != 3 {
		t.Fatalf("usage %+v", got)
	}
	// Nothing refused was delivered, nothing accepted lost (on a third
	// connection: the plan makes room for it).
	e.admin("PUT", "/api/plans/small", `{"limits":{"maxMessagesInPerSecond":1000,"maxAddresses":3,"maxConnections":3}}`)
	drain(t, e.amqpSession("app@planned"), []string{"p0", "p1", "after0", "after1", "after2", "after3", "after4"})
	// A plan no tenant names can be deleted.
	e.admin("PUT", "/api/tenants/own", `{"name":"own","limits":{}}`)
	e.admin("PUT", "/api/tenants/planned", `{"name":"planned"}`)
	if st, b := e.status("DELETE", "/api/plans/small", ""); st != http.StatusNoContent {
		t.Fatalf("delete of an unused plan: %d %s", st, b)
	}
	if st, _ := e.status("GET", "/api/plans/small", ""); st != http.StatusNotFound {
		t.Fatalf("deleted plan: %d", st)
	}
}

// MQTT 3.1.1 has no negative PUBACK: a QoS 1 publish over the rate closes
// the connection (mosquitto_pub fails), and the refused message is not
// delivered.
func TestQuotaMessageRateInMQTT311(t *testing.T) {
	pub := needClient(t, "mosquitto_pub")
	e := &quotaEnv{Platform: testkit.Start(t), t: t}
	e.tenant("v311", `{"maxMessagesInPerSecond":0.01,"burst":1}`)
	host, port, _ := net.SplitHostPort(e.MQTTAddr)
	send := func(id, msg string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return exec.CommandContext(ctx, pub, "-V", "mqttv311", "-h", host, "-p", port, "-i", id,
			"-u", "app@v311", "-P", "app-secret", "-q", "1", "-t", "q", "-m", msg).Run()
	}
	if err := send("v311-a", "first"); err != nil {
		t.Fatalf("first publish: %v", err)
	}
	if err := send("v311-b", "refused"); err == nil {
		t.Fatal("publish over the rate succeeded on MQTT 3.1.1")
	}
	drain(t, e.amqpSession("app@v311"), []string{"first"})
}
