package testkit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
	mqtt311 "github.com/eclipse/paho.mqtt.golang"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/testkit"
)

// Changes take effect on live connections (issue 14 items 3, 4, 5, 11;
// docs/security.md, "Changes on live connections"). Every client is a
// real one on its own connection: paho.golang (MQTT 5), paho.mqtt.golang
// (MQTT 3.1.1), go-amqp (AMQP 1.0); the changes go through the admin API.

// liveBound is the documented bound: a connection whose access a change
// took away is closed within it after the change is stored (the admin
// call returned).
const liveBound = time.Second

type liveEnv struct {
	*testkit.Platform
	t *testing.T
}

func startLive(t *testing.T) *liveEnv {
	return &liveEnv{Platform: testkit.Start(t), t: t}
}

// api sends an admin request and checks its status.
func (e *liveEnv) api(method, path string, body any, status int) []byte {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	resp := e.Do(e.t, method, path, r)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, status, b)
	}
	return b
}

func (e *liveEnv) user(tenantName, name, pw string, perms ...string) {
	e.t.Helper()
	var ps []map[string]any
	for _, p := range perms {
		ps = append(ps, map[string]any{"pattern": p, "actions": []string{"send", "receive"}})
	}
	e.api("POST", "/api/tenants/"+tenantName+"/users", map[string]any{"name": name, "password": pw, "roles": []string{"app"}, "permissions": ps}, 201)
}

// live5 is an MQTT 5 client that records the server's DISCONNECT.
type live5 struct {
	*paho.Client
	disc   chan byte // the DISCONNECT reason code
	lost   chan struct{}
	closed atomic.Bool
}

// mqtt5 connects an MQTT 5 client; it returns the CONNACK code too.
func (e *liveEnv) mqtt5(user, pass, id string) (*live5, byte) {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.MQTTAddr)
	if err != nil {
		e.t.Fatal(err)
	}
	c := &live5{disc: make(chan byte, 1), lost: make(chan struct{})}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: nc,
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.disc <- d.ReasonCode:
			default:
			}
		},
		OnClientError: func(error) {
			if c.closed.CompareAndSwap(false, true) {
				close(c.lost)
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true})
	if ack == nil {
		e.t.Fatalf("connect %s: no CONNACK: %v", user, err)
	}
	if ack.ReasonCode == 0 {
		e.t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ack.ReasonCode
}

// disconnected waits for the server's DISCONNECT and returns its code
// and how long it took from since.
func (c *live5) disconnected(t *testing.T, since time.Time, within time.Duration) (byte, time.Duration) {
	t.Helper()
	select {
	case rc := <-c.disc:
		return rc, time.Since(since)
	case <-time.After(within):
		t.Fatalf("no DISCONNECT within %v", within)
		return 0, 0
	}
}

// mqtt311 connects an MQTT 3.1.1 client (paho.mqtt.golang); lost is
// closed when the server ends the connection.
func (e *liveEnv) mqtt311(user, pass, id string) (mqtt311.Client, chan struct{}) {
	e.t.Helper()
	lost := make(chan struct{})
	o := mqtt311.NewClientOptions().AddBroker("tcp://" + e.MQTTAddr).SetClientID(id).
		SetUsername(user).SetPassword(pass).SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectRetry(false).SetCleanSession(true).
		SetConnectionLostHandler(func(mqtt311.Client, error) { close(lost) })
	c := mqtt311.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		e.t.Fatalf("3.1.1 connect %s: %v", user, tok.Error())
	}
	e.t.Cleanup(func() { c.Disconnect(0) })
	return c, lost
}

// amqp connects with SASL PLAIN and opens a receiver on addr.
func (e *liveEnv) amqp(user, pass, addr string) (*goamqp.Conn, *goamqp.Receiver) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := goamqp.Dial(ctx, "amqp://"+e.AMQPAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain(user, pass)})
	if err != nil {
		e.t.Fatalf("amqp %s: %v", user, err)
	}
	e.t.Cleanup(func() { c.Close() })
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	r, err := s.NewReceiver(ctx, addr, nil)
	if err != nil {
		e.t.Fatalf("receiver %s: %v", addr, err)
	}
	return c, r
}

// amqpCondition waits (within) for the receiver to fail and returns the
// condition the server sent.
func amqpCondition(t *testing.T, r *goamqp.Receiver, within time.Duration) (goamqp.ErrCond, time.Duration) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var err error
	for err == nil {
		// Messages still on their way come first.
		var m *goamqp.Message
		if m, err = r.Receive(ctx, nil); err == nil {
			_ = r.AcceptMessage(ctx, m)
		}
	}
	var ce *goamqp.ConnError
	var le *goamqp.LinkError
	switch {
	case errors.As(err, &ce) && ce.RemoteErr != nil:
		return ce.RemoteErr.Condition, time.Since(start)
	case errors.As(err, &le) && le.RemoteErr != nil:
		return le.RemoteErr.Condition, time.Since(start)
	}
	t.Fatalf("receiver: %v, want an error from the server within %v", err, within)
	return "", 0
}

// TestLiveUserDeleted: a deleted user's MQTT 5 client, busy publishing,
// gets DISCONNECT 0x87 within the bound; its MQTT 3.1.1 client is
// closed; its AMQP connection is closed with amqp:unauthorized-access.
func TestLiveUserDeleted(t *testing.T) {
	e := startLive(t)
	e.user("default", "app1", "pw-app1", "orders/#")
	e.user("default", "other", "pw-other", "orders/#")
	c5, rc := e.mqtt5("app1", "pw-app1", "c5")
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	c3, lost3 := e.mqtt311("app1", "pw-app1", "c3")
	// (A receiver of the published name that does not read would hold
	// the publisher's PUBACKs: back-pressure.)
	_, r := e.amqp("app1", "pw-app1", "orders/in")
	bystander, _ := e.mqtt5("other", "pw-other", "bystander")

	// The client publishes QoS 1 all along.
	var acked atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			pr, err := c5.Publish(ctx, &paho.Publish{Topic: "orders/eu", QoS: 1, Payload: []byte("x")})
			cancel()
			if err != nil {
				t.Logf("publish: %v", err)
				return
			}
			if pr.ReasonCode < 0x80 {
				acked.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer close(stop)
	testkit.Eventually(t, 30*time.Second, func() bool { return acked.Load() > 3 })

	e.api("DELETE", "/api/tenants/default/users/app1", nil, 204)
	deleted := time.Now()
	code, took := c5.disconnected(t, deleted, liveBound)
	if code != 0x87 {
		t.Fatalf("DISCONNECT %#x, want 0x87", code)
	}
	t.Logf("MQTT 5 DISCONNECT 0x87 %v after the delete", took)
	select {
	case <-lost3:
		t.Logf("MQTT 3.1.1 connection closed %v after the delete", time.Since(deleted))
	case <-time.After(liveBound):
		t.Fatalf("MQTT 3.1.1 connection still open after %v", liveBound)
	}
	if c3.IsConnectionOpen() {
		t.Fatal("3.1.1 client still connected")
	}
	cond, _ := amqpCondition(t, r, liveBound)
	if cond != "amqp:unauthorized-access" {
		t.Fatalf("AMQP condition %q, want amqp:unauthorized-access", cond)
	}
	t.Logf("AMQP closed with %s %v after the delete", cond, time.Since(deleted))
	// Nothing is acknowledged any more, and the user cannot come back.
	n := acked.Load()
	time.Sleep(50 * time.Millisecond)
	if acked.Load() != n {
		t.Fatal("publishes acknowledged after the DISCONNECT")
	}
	if _, rc := e.mqtt5("app1", "pw-app1", "again"); rc != 0x86 {
		t.Fatalf("reconnect CONNACK %#x, want 0x86", rc)
	}
	// Another user of the tenant is not touched.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if pr, err := bystander.Publish(ctx, &paho.Publish{Topic: "orders/eu", QoS: 1, Payload: []byte("y")}); err != nil || pr.ReasonCode >= 0x80 {
		t.Fatalf("bystander: %v %+v", err, pr)
	}
}

// TestLiveTenantDeleted: the connections of a deleted tenant's users are
// closed (MQTT 5 0x87, AMQP amqp:unauthorized-access).
func TestLiveTenantDeleted(t *testing.T) {
	e := startLive(t)
	e.api("POST", "/api/tenants", map[string]any{"name": "acme"}, 201)
	e.user("acme", "sub", "pw-sub", "#")
	c5, rc := e.mqtt5("sub@acme", "pw-sub", "acme-sub")
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c5.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "a/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	_, r := e.amqp("sub@acme", "pw-sub", "b")
	e.api("DELETE", "/api/tenants/acme", nil, 204)
	deleted := time.Now()
	if code, took := c5.disconnected(t, deleted, liveBound); code != 0x87 {
		t.Fatalf("DISCONNECT %#x, want 0x87", code)
	} else {
		t.Logf("MQTT 5 DISCONNECT 0x87 %v after the tenant delete", took)
	}
	if cond, _ := amqpCondition(t, r, liveBound); cond != "amqp:unauthorized-access" {
		t.Fatalf("AMQP condition %q", cond)
	}
}

// TestLiveUserChanged: a changed password or permission closes the
// user's connections; the old password is refused at the next login,
// the revoked permission at the next publish and subscribe.
func TestLiveUserChanged(t *testing.T) {
	e := startLive(t)
	e.user("default", "app1", "old-pw", "orders/#", "stock/#")

	t.Run("permission", func(t *testing.T) {
		e := &liveEnv{Platform: e.Platform, t: t}
		c5, rc := e.mqtt5("app1", "old-pw", "perm")
		if rc != 0 {
			t.Fatalf("CONNACK %#x", rc)
		}
		_, r := e.amqp("app1", "old-pw", "orders/eu")
		body := e.api("PUT", "/api/tenants/default/users/app1", map[string]any{
			"permissions": []map[string]any{{"pattern": "stock/#", "actions": []string{"send", "receive"}}}}, 200)
		if !strings.Contains(string(body), "stock/#") || strings.Contains(string(body), "orders/#") {
			t.Fatalf("PUT answered %s", body)
		}
		changed := time.Now()
		if code, _ := c5.disconnected(t, changed, liveBound); code != 0x87 {
			t.Fatalf("DISCONNECT %#x", code)
		}
		if cond, _ := amqpCondition(t, r, liveBound); cond != "amqp:unauthorized-access" {
			t.Fatalf("AMQP condition %q", cond)
		}
		// The next connection has the new permissions only.
		c5, rc = e.mqtt5("app1", "old-pw", "perm2")
		if rc != 0 {
			t.Fatalf("CONNACK %#x", rc)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pr, err := c5.Publish(ctx, &paho.Publish{Topic: "orders/eu", QoS: 1, Payload: []byte("x")})
		if pr == nil || pr.ReasonCode != 0x87 {
			t.Fatalf("publish to a revoked name: %v %+v", err, pr)
		}
		sa, err := c5.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "orders/#", QoS: 1}, {Topic: "stock/#", QoS: 1}}})
		if sa == nil || len(sa.Reasons) != 2 || sa.Reasons[0] != 0x87 || sa.Reasons[1] != 1 {
			t.Fatalf("SUBACK %v %v", err, sa)
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), time.Minute)
		defer cancel2()
		conn, err := goamqp.Dial(ctx2, "amqp://"+e.AMQPAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("app1", "old-pw")})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		s, err := conn.NewSession(ctx2, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.NewReceiver(ctx2, "orders/eu", nil); err == nil || !strings.Contains(err.Error(), "unauthorized-access") {
			t.Fatalf("attach to a revoked name: %v", err)
		}
	})

	t.Run("password", func(t *testing.T) {
		e := &liveEnv{Platform: e.Platform, t: t}
		c5, rc := e.mqtt5("app1", "old-pw", "pw")
		if rc != 0 {
			t.Fatalf("CONNACK %#x", rc)
		}
		e.api("PUT", "/api/tenants/default/users/app1", map[string]any{"password": "new-pw"}, 200)
		if code, _ := c5.disconnected(t, time.Now(), liveBound); code != 0x87 {
			t.Fatalf("DISCONNECT %#x", code)
		}
		if _, rc := e.mqtt5("app1", "old-pw", "pw-old"); rc != 0x86 {
			t.Fatalf("old password: CONNACK %#x, want 0x86", rc)
		}
		if _, rc := e.mqtt5("app1", "new-pw", "pw-new"); rc != 0 {
			t.Fatalf("new password: CONNACK %#x", rc)
		}
		// Roles and permissions were kept.
		body := e.api("GET", "/api/tenants/default/users/app1", nil, 200)
		if !strings.Contains(string(body), `"stock/#"`) || !strings.Contains(string(body), `"app"`) {
			t.Fatalf("user after a password change: %s", body)
		}
	})

	t.Run("refused", func(t *testing.T) {
		e := &liveEnv{Platform: e.Platform, t: t}
		e.api("PUT", "/api/tenants/default/users/app1", map[string]any{"name": "other"}, 400)
		e.api("PUT", "/api/tenants/default/users/app1", map[string]any{"password": ""}, 400)
		e.api("PUT", "/api/tenants/default/users/app1", map[string]any{"roles": []string{}}, 400)
		e.api("PUT", "/api/tenants/default/users/app1", map[string]any{"bogus": 1}, 400)
		e.api("PUT", "/api/tenants/default/users/nobody", map[string]any{}, 404)
	})
}

// TestLiveDevice: a device disabled or deleted in the registry (/v1) has
// its MQTT connection closed (0x87).
func TestLiveDevice(t *testing.T) {
	e := startLive(t)
	e.api("POST", "/v1/tenants/iot", map[string]any{}, 201)
	for _, d := range []string{"dev1", "dev2"} {
		e.api("POST", "/v1/devices/iot/"+d, map[string]any{}, 201)
		e.api("PUT", "/v1/credentials/iot/"+d, []any{map[string]any{"type": "hashed-password", "auth-id": "auth-" + d,
			"secrets": []any{map[string]any{"pwd-plain": "secret"}}}}, 204)
	}
	c1, rc := e.mqtt5("auth-dev1@iot", "secret", "d1")
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	c2, rc := e.mqtt5("auth-dev2@iot", "secret", "d2")
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	_, lost3 := e.mqtt311("auth-dev2@iot", "secret", "d2-311")

	e.api("PUT", "/v1/devices/iot/dev1", map[string]any{"enabled": false}, 204)
	if code, took := c1.disconnected(t, time.Now(), liveBound); code != 0x87 {
		t.Fatalf("disabled device: DISCONNECT %#x", code)
	} else {
		t.Logf("disabled device: DISCONNECT 0x87 after %v", took)
	}
	select {
	case <-c2.disc:
		t.Fatal("another device was disconnected")
	case <-time.After(100 * time.Millisecond):
	}
	e.api("DELETE", "/v1/devices/iot/dev2", nil, 204)
	if code, _ := c2.disconnected(t, time.Now(), liveBound); code != 0x87 {
		t.Fatalf("deleted device: DISCONNECT %#x", code)
	}
	select {
	case <-lost3:
	case <-time.After(liveBound):
		t.Fatal("deleted device's 3.1.1 connection still open")
	}
}

// TestLiveAddressDelete: deleting an address with consumers is refused
// (409 in_use, with their number) unless forced; forced, AMQP receivers
// are detached with amqp:resource-deleted, MQTT subscribers get
// DISCONNECT 0x8F, and later publishes through links resolved to it are
// refused, never acknowledged.
func TestLiveAddressDelete(t *testing.T) {
	e := startLive(t)
	e.api("POST", "/api/tenants", map[string]any{"name": "acme", "strict": true}, 201)
	e.api("POST", "/api/tenants/acme/addresses", map[string]any{"name": "jobs", "type": "queue"}, 201)
	e.user("acme", "app", "pw", "#")
	conn, r := e.amqp("app@acme", "pw", "jobs")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	snd, err := s.NewSender(ctx, "jobs", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctx, goamqp.NewMessage([]byte("before")), nil); err != nil {
		t.Fatal(err)
	}
	if m, err := r.Receive(ctx, nil); err != nil || string(m.GetData()) != "before" {
		t.Fatalf("receive: %v", err)
	} else {
		_ = r.AcceptMessage(ctx, m)
	}
	sub, rc := e.mqtt5("app@acme", "pw", "sub")
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	if sa, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "jobs", QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("subscribe: %v %v", err, sa)
	}
	pub, rc := e.mqtt5("app@acme", "pw", "pub")
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	if pr, err := pub.Publish(ctx, &paho.Publish{Topic: "jobs", QoS: 1, Payload: []byte("m")}); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish: %v %+v", err, pr)
	}

	body := e.api("DELETE", "/api/tenants/acme/addresses/jobs", nil, 409)
	var eb struct {
		Error struct {
			Code      string `json:"code"`
			Consumers int    `json:"consumers"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Code != "in_use" || eb.Error.Consumers != 2 {
		t.Fatalf("409 body %s", body)
	}
	e.api("DELETE", "/api/tenants/acme/addresses/jobs?force=maybe", nil, 400)
	e.api("DELETE", "/api/tenants/acme/addresses/jobs?force=true", nil, 204)
	deleted := time.Now()
	if cond, took := amqpCondition(t, r, liveBound); cond != "amqp:resource-deleted" {
		t.Fatalf("AMQP receiver: %q", cond)
	} else {
		t.Logf("AMQP receiver detached with %s after %v", cond, took)
	}
	if code, _ := sub.disconnected(t, deleted, liveBound); code != 0x8F {
		t.Fatalf("MQTT subscriber: DISCONNECT %#x, want 0x8F", code)
	}
	// The sender's link was resolved to the deleted queue: refused.
	err = snd.Send(ctx, goamqp.NewMessage([]byte("after")), nil)
	var re *goamqp.Error
	if !errors.As(err, &re) || re.Condition != "amqp:not-found" {
		t.Fatalf("send after the delete: %v, want rejected amqp:not-found", err)
	}
	// MQTT resolves the name again: the strict tenant no longer has it.
	if pr, err := pub.Publish(ctx, &paho.Publish{Topic: "jobs", QoS: 1, Payload: []byte("m")}); pr == nil || pr.ReasonCode != 0x90 {
		t.Fatalf("MQTT publish after the delete: %v %+v, want PUBACK 0x90", err, pr)
	}
	e.api("GET", "/api/tenants/acme/addresses/jobs", nil, 404)
}

// TestLiveAddressUpdate: PUT of an address changes its limits and keeps
// its stored messages; limits below what it holds are refused (409).
func TestLiveAddressUpdate(t *testing.T) {
	e := startLive(t)
	e.api("POST", "/api/tenants/default/addresses", map[string]any{"name": "work", "type": "queue", "limits": map[string]any{"maxMessages": 5}}, 201)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 3 {
		m := fmt.Appendf(nil, "m%d", i)
		if _, err := e.Router.Publish(ctx, "default", "work", &message.Message{Body: m, Durable: true}); err != nil {
			t.Fatal(err)
		}
	}
	body := e.api("PUT", "/api/tenants/default/addresses/work", map[string]any{"limits": map[string]any{"maxMessages": 100, "maxAge": "1h"}, "deadLetter": ""}, 200)
	if !strings.Contains(string(body), `"maxMessages": 100`) {
		t.Fatalf("PUT answered %s", body)
	}
	var a struct {
		Limits struct {
			MaxMessages int64 `json:"maxMessages"`
		} `json:"limits"`
		Stats struct {
			Backlog int64 `json:"backlog"`
		} `json:"stats"`
	}
	_ = json.Unmarshal(e.api("GET", "/api/tenants/default/addresses/work", nil, 200), &a)
	if a.Limits.MaxMessages != 100 || a.Stats.Backlog != 3 {
		t.Fatalf("after the update: %+v", a)
	}
	e.api("PUT", "/api/tenants/default/addresses/work", map[string]any{"limits": map[string]any{"maxMessages": 2}}, 409)
	e.api("PUT", "/api/tenants/default/addresses/work", map[string]any{"type": "topic"}, 400)
	e.api("PUT", "/api/tenants/default/addresses/work", map[string]any{"name": "other"}, 400)
	e.api("PUT", "/api/tenants/default/addresses/nope", map[string]any{}, 404)
	// The messages are all there, in order.
	_, r := e.amqp(e.AdminUser, e.AdminPassword, "work")
	for i := range 3 {
		m, err := r.Receive(ctx, nil)
		if err != nil || string(m.GetData()) != fmt.Sprintf("m%d", i) {
			t.Fatalf("message %d: %v", i, err)
		}
		_ = r.AcceptMessage(ctx, m)
	}
}

// TestLiveCountersReset: an address defined again under the name of a
// deleted one starts with its counters at zero.
func TestLiveCountersReset(t *testing.T) {
	e := startLive(t)
	create := func() {
		e.api("POST", "/api/tenants/default/addresses", map[string]any{"name": "cnt", "type": "queue"}, 201)
	}
	create()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, rc := e.mqtt5(e.AdminUser, e.AdminPassword, "cnt-pub")
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	for range 2 {
		if pr, err := pub.Publish(ctx, &paho.Publish{Topic: "cnt", QoS: 1, Payload: []byte("x")}); err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish: %v %+v", err, pr)
		}
	}
	stats := func() (in, out uint64) {
		var a struct {
			Stats struct {
				In  uint64 `json:"messagesIn"`
				Out uint64 `json:"messagesOut"`
			} `json:"stats"`
		}
		_ = json.Unmarshal(e.api("GET", "/api/tenants/default/addresses/cnt", nil, 200), &a)
		return a.Stats.In, a.Stats.Out
	}
	if in, _ := stats(); in != 2 {
		t.Fatalf("messagesIn %d, want 2", in)
	}
	e.api("DELETE", "/api/tenants/default/addresses/cnt", nil, 204)
	create()
	if in, out := stats(); in != 0 || out != 0 {
		t.Fatalf("a new address has messagesIn %d, messagesOut %d", in, out)
	}
	// The MQTT client's cached producer of the old address resolves the
	// name again and counts into the new one.
	if pr, err := pub.Publish(ctx, &paho.Publish{Topic: "cnt", QoS: 1, Payload: []byte("x")}); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish: %v %+v", err, pr)
	}
	if in, _ := stats(); in != 1 {
		t.Fatalf("messagesIn %d after one publish to the new address", in)
	}
}
