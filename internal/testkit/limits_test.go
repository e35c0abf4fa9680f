package testkit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/testkit"
)

// The tenant limits on counts (docs/security.md "Plans and quotas"):
// maxConnections over every protocol, each refused with its protocol's
// error on real clients, each role on its own connection.

// amqpDial opens an AMQP connection and a session as user; the error is
// the open's or, when the server opened and closed at once, the
// session's.
func amqpDial(addr, user, pass string) (*goamqp.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := goamqp.Dial(ctx, "amqp://"+addr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain(user, pass)})
	if err != nil {
		return nil, err
	}
	if _, err := c.NewSession(ctx, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// connCondition is the condition an AMQP connection was closed with.
func connCondition(err error) string {
	var ce *goamqp.ConnError
	if errors.As(err, &ce) && ce.RemoteErr != nil {
		return string(ce.RemoteErr.Condition)
	}
	return ""
}

// getJSON reads an admin API resource as the platform administrator.
func getJSON(t *testing.T, e *quotaEnv, path string, v any) {
	t.Helper()
	body := e.admin("GET", path, "")
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("%s: %v: %s", path, err, body)
	}
}

// mqttConnect connects an MQTT 5 client and returns it and the CONNACK
// reason code (the client is disconnected at the end of the test).
func mqttConnect(t *testing.T, addr, user, pass, id string, clean bool, expiry uint32) (*paho.Client, byte) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	ack, err := c.Connect(ctx, cp)
	if ack == nil {
		t.Fatalf("mqtt connect %s: no CONNACK: %v", user, err)
	}
	if ack.ReasonCode == 0 {
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ack.ReasonCode
}

// httpStatus sends a request with basic credentials and returns the
// status, the Retry-After and the body.
func httpStatus(t *testing.T, method, url, user, pass, body string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.SetBasicAuth(user, pass)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

// TestQuotaConnections: maxConnections 2 counts the tenant's
// connections of every protocol together — an AMQP application and a
// Hono AMQP device fill it; then a Hono MQTT device gets CONNACK 0x97,
// AMQP applications and devices an open closed with
// amqp:resource-limit-exceeded, HTTP requests (Hono's adapter and
// /api/v1) 429; a long-polling HTTP request holds a place while it
// waits; another tenant is unaffected; a closed connection frees its
// place.
func TestQuotaConnections(t *testing.T) {
	p := testkit.Start(t)
	e := &quotaEnv{Platform: p, t: t}
	ie := &iotEnv{Platform: p, t: t}
	ie.v1("POST", "/v1/tenants/capped", map[string]any{}, 201)
	ie.v1("POST", "/v1/devices/capped/dev1", map[string]any{}, 201)
	ie.v1("PUT", "/v1/credentials/capped/dev1", []any{map[string]any{"type": "hashed-password", "auth-id": "sensor1",
		"secrets": []any{map[string]any{"pwd-plain": "secret1"}}}}, 204)
	e.admin("PUT", "/api/tenants/capped", `{"limits":{"maxConnections":2}}`)
	e.admin("POST", "/api/tenants/capped/users", `{"name":"app","password":"app-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`)
	e.admin("POST", "/api/tenants/capped/addresses", `{"name":"q","type":"queue"}`)
	e.tenant("free", `{}`)

	app, err := amqpDial(p.AMQPAddr, "app@capped", "app-secret")
	if err != nil {
		t.Fatalf("first connection (AMQP application): %v", err)
	}
	dev, err := amqpDial(p.AMQPAddr, "sensor1@capped", "secret1")
	if err != nil {
		t.Fatalf("second connection (AMQP device): %v", err)
	}

	// Full: every protocol is refused with its error.
	if _, rc := mqttConnect(t, p.MQTTAddr, "sensor1@capped", "secret1", "dev1", true, 0); rc != 0x97 {
		t.Fatalf("MQTT device over the limit: CONNACK %#x, want 0x97", rc)
	}
	for _, user := range []string{"app@capped", "sensor1@capped"} {
		_, err := amqpDial(p.AMQPAddr, user, map[string]string{"app@capped": "app-secret", "sensor1@capped": "secret1"}[user])
		if cond := connCondition(err); cond != "amqp:resource-limit-exceeded" {
			t.Fatalf("AMQP %s over the limit: %v, want amqp:resource-limit-exceeded", user, err)
		}
	}
	base := "http://" + p.HTTPAddr
	if st, ra, body := httpStatus(t, "POST", base+"/telemetry", "sensor1@capped", "secret1", "t"); st != 429 || ra == "" {
		t.Fatalf("Hono HTTP device over the limit: %d (Retry-After %q) %s, want 429 with Retry-After", st, ra, body)
	}
	if st, _, body := httpStatus(t, "POST", base+"/api/v1/addresses/q/messages", "app@capped", "app-secret", "m"); st != 429 ||
		!strings.Contains(body, `"limit_exceeded"`) {
		t.Fatalf("/api/v1 publish over the limit: %d %s, want 429 limit_exceeded", st, body)
	}
	var u struct {
		Usage struct{ Connections struct{ Used, Limit float64 } }
	}
	getJSON(t, e, "/api/tenants/capped?usage=true", &u)
	if u.Usage.Connections.Used != 2 || u.Usage.Connections.Limit != 2 {
		t.Fatalf("usage connections %+v, want 2 of 2", u.Usage.Connections)
	}
	if got := quotaRefused(t, p, "capped", "connections"); got != 5 {
		t.Fatalf("throng_tenant_quota_refused_total{limit=connections} = %v, want 5", got)
	}

	// Another tenant is unaffected.
	if _, rc := mqttConnect(t, p.MQTTAddr, "app@free", "app-secret", "free1", true, 0); rc != 0 {
		t.Fatalf("other tenant: CONNACK %#x", rc)
	}
	if c, err := amqpDial(p.AMQPAddr, "app@free", "app-secret"); err != nil {
		t.Fatalf("other tenant AMQP: %v", err)
	} else {
		c.Close()
	}

	// A closed connection frees its place: the device comes back over
	// MQTT.
	connsUsed := func() float64 {
		getJSON(t, e, "/api/tenants/capped?usage=true", &u)
		return u.Usage.Connections.Used
	}
	dev.Close()
	testkit.Eventually(t, 10*time.Second, func() bool { return connsUsed() == 1 })
	mdev, rc := mqttConnect(t, p.MQTTAddr, "sensor1@capped", "secret1", "dev1", true, 0)
	if rc != 0 {
		t.Fatalf("MQTT device after the AMQP device left: CONNACK %#x", rc)
	}
	_ = mdev.Disconnect(&paho.Disconnect{})

	// An HTTP request in progress holds a place while it waits: with the
	// application's connection and a long poll, the device is refused.
	testkit.Eventually(t, 10*time.Second, func() bool { return connsUsed() == 1 })
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/api/v1/addresses/q/messages/receive?wait=15", nil)
		req.SetBasicAuth("app@capped", "app-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	testkit.Eventually(t, 10*time.Second, func() bool { return connsUsed() == 2 })
	if _, rc := mqttConnect(t, p.MQTTAddr, "sensor1@capped", "secret1", "dev1", true, 0); rc != 0x97 {
		t.Fatalf("MQTT device while a long poll holds the last place: CONNACK %#x, want 0x97", rc)
	}
	// The message it waits for ends the request; the place is free again.
	snd := amqpSender(t, app, "q")
	if err := amqpSend(t, snd, "for-the-poll"); err != nil {
		t.Fatal(err)
	}
	if st := <-done; st != 200 {
		t.Fatalf("long poll: %d, want 200", st)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return connsUsed() == 1 })
	if c, rc := mqttConnect(t, p.MQTTAddr, "sensor1@capped", "secret1", "dev1", true, 0); rc != 0 {
		t.Fatalf("MQTT device after the long poll: CONNACK %#x", rc)
	} else {
		_ = c.Disconnect(&paho.Disconnect{})
	}
}

func amqpSender(t *testing.T, c *goamqp.Conn, addr string) *goamqp.Sender {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	snd, err := s.NewSender(ctx, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	return snd
}

// mqttRetain publishes a retained QoS 1 message and returns the PUBACK
// reason code.
func mqttRetain(t *testing.T, c *paho.Client, topic, body string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(body)})
	if r != nil {
		if r.ReasonCode != 0 && r.Properties != nil {
			t.Logf("retain %s: PUBACK %#x %q", topic, r.ReasonCode, r.Properties.ReasonString)
		}
		return r.ReasonCode
	}
	if err != nil {
		t.Fatalf("mqtt publish: %v", err)
	}
	return 0
}

// TestQuotaSessionsAndRetained: maxSessions 2 bounds the tenant's
// persistent MQTT sessions (a third: CONNACK 0x97 on MQTT 5, 0x03 on
// 3.1.1 with mosquitto_sub; a stored one resumes; a dropped one frees its
// place) and maxRetained 2 its retained messages (a third: PUBACK 0x97
// on MQTT 5, the connection closed on 3.1.1 with mosquitto_pub;
// replacing and clearing always work). A new subscriber gets exactly the
// retained messages that were accepted.
func TestQuotaSessionsAndRetained(t *testing.T) {
	p := testkit.Start(t)
	e := &quotaEnv{Platform: p, t: t}
	e.tenant("sess", `{"maxSessions":2,"maxRetained":2}`)
	const user, pass = "app@sess", "app-secret"
	conn := func(id string, clean bool, expiry uint32) (*paho.Client, byte) {
		return mqttConnect(t, p.MQTTAddr, user, pass, id, clean, expiry)
	}

	// Sessions.
	s1, rc := conn("s1", true, 3600)
	if rc != 0 {
		t.Fatalf("session 1: CONNACK %#x", rc)
	}
	if _, rc := conn("s2", true, 3600); rc != 0 {
		t.Fatalf("session 2: CONNACK %#x", rc)
	}
	if _, rc := conn("s3", true, 3600); rc != 0x97 {
		t.Fatalf("third persistent session: CONNACK %#x, want 0x97", rc)
	}
	// A clean session needs no place.
	if _, rc := conn("clean1", true, 0); rc != 0 {
		t.Fatalf("clean session at the session limit: CONNACK %#x", rc)
	}
	// A stored session resumes, connected or not.
	_ = s1.Disconnect(&paho.Disconnect{})
	if _, rc := conn("s1", false, 3600); rc != 0 {
		t.Fatalf("resuming session 1: CONNACK %#x", rc)
	}
	host, port, _ := net.SplitHostPort(p.MQTTAddr)
	if sub, err := exec.LookPath("mosquitto_sub"); err == nil || os.Getenv("CI") == "true" {
		sub = needClient(t, "mosquitto_sub")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, sub, "-V", "mqttv311", "-h", host, "-p", port, "-i", "s311", "-c",
			"-u", user, "-P", pass, "-t", "x", "-C", "1", "-W", "5").CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(strings.ToLower(string(out)), "unavailable") {
			t.Fatalf("MQTT 3.1.1 persistent session over the limit: %v %s, want refused 0x03 (server unavailable)", err, out)
		}
	}
	var u struct {
		Usage struct{ Sessions, Retained struct{ Used, Limit float64 } }
	}
	getJSON(t, e, "/api/tenants/sess?usage=true", &u)
	if u.Usage.Sessions.Used != 2 || u.Usage.Sessions.Limit != 2 {
		t.Fatalf("usage sessions %+v, want 2 of 2", u.Usage.Sessions)
	}
	// Session 2 ended (a clean start with expiry 0 drops it): s3 gets
	// its place.
	s2, rc := conn("s2", true, 0)
	if rc != 0 {
		t.Fatalf("dropping session 2: CONNACK %#x", rc)
	}
	_ = s2.Disconnect(&paho.Disconnect{})
	testkit.Eventually(t, 10*time.Second, func() bool {
		c, rc := conn("s3", true, 3600)
		if rc == 0 {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		return rc == 0
	})

	// Retained messages.
	pub, rc := conn("retainer", true, 0)
	if rc != 0 {
		t.Fatalf("publisher: CONNACK %#x", rc)
	}
	for _, topic := range []string{"r/a", "r/b"} {
		if rc := mqttRetain(t, pub, topic, topic+"-1"); rc != 0 {
			t.Fatalf("retain %s: PUBACK %#x", topic, rc)
		}
	}
	if rc := mqttRetain(t, pub, "r/c", "refused"); rc != 0x97 {
		t.Fatalf("third retained message: PUBACK %#x, want 0x97", rc)
	}
	if rc := mqttRetain(t, pub, "r/a", "r/a-2"); rc != 0 {
		t.Fatalf("replacing a retained message at the limit: PUBACK %#x", rc)
	}
	if pubc, err := exec.LookPath("mosquitto_pub"); err == nil || os.Getenv("CI") == "true" {
		pubc = needClient(t, "mosquitto_pub")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := exec.CommandContext(ctx, pubc, "-V", "mqttv311", "-h", host, "-p", port, "-i", "r311",
			"-u", user, "-P", pass, "-q", "1", "-r", "-t", "r/d", "-m", "refused").Run()
		cancel()
		if err == nil {
			t.Fatal("MQTT 3.1.1 retained publish over the limit succeeded")
		}
	}
	getJSON(t, e, "/api/tenants/sess?usage=true", &u)
	if u.Usage.Retained.Used != 2 || u.Usage.Retained.Limit != 2 {
		t.Fatalf("usage retained %+v, want 2 of 2", u.Usage.Retained)
	}
	if rc := mqttRetain(t, pub, "r/b", ""); rc != 0 {
		t.Fatalf("clearing a retained message: PUBACK %#x", rc)
	}
	if rc := mqttRetain(t, pub, "r/c", "r/c-1"); rc != 0 {
		t.Fatalf("retain after one was cleared: PUBACK %#x", rc)
	}
	// A new subscriber gets what was accepted, and only that.
	sub, rc := conn("reader", true, 0)
	if rc != 0 {
		t.Fatalf("reader: CONNACK %#x", rc)
	}
	got := make(chan string, 10)
	sub.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		got <- pr.Packet.Topic + "=" + string(pr.Packet.Payload)
		return true, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "r/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"r/a=r/a-2": true, "r/c=r/c-1": true}
	for range want {
		select {
		case m := <-got:
			if !want[m] {
				t.Fatalf("retained %s, want %v", m, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("retained messages missing, want %v", want)
		}
	}
	select {
	case m := <-got:
		t.Fatalf("extra retained message %s", m)
	case <-time.After(300 * time.Millisecond):
	}
	if got := quotaRefused(t, p, "sess", "retained"); got < 2 {
		t.Fatalf("throng_tenant_quota_refused_total{limit=retained} = %v, want at least 2", got)
	}
}

// TestQuotaStoredBytes: maxStoredBytes bounds what a tenant stores. An
// AMQP application sends 1000-byte messages until one is rejected with
// amqp:resource-limit-exceeded; then an MQTT 5 client (connecting only
// now: the front-ends' state still has room) gets PUBACK 0x97 and
// /api/v1 429; another tenant stores on. Every accepted message is
// received, none refused; once the queue is drained the tenant stores
// again.
func TestQuotaStoredBytes(t *testing.T) {
	p := testkit.Start(t)
	e := &quotaEnv{Platform: p, t: t}
	e.tenant("tiny", `{"maxStoredBytes":20000}`)
	e.tenant("roomy", `{}`)
	body := func(i int) string { return fmt.Sprintf("m-%03d-%s", i, strings.Repeat("x", 994)) }

	snd, err := e.amqpSession("app@tiny").NewSender(ctx10(t), "q", nil)
	if err != nil {
		t.Fatal(err)
	}
	var accepted []string
	for i := 0; ; i++ {
		if i == 100 {
			t.Fatal("100 messages of 1000 bytes stored under a limit of 20000 bytes")
		}
		err := amqpSend(t, snd, body(i))
		if err == nil {
			accepted = append(accepted, body(i))
			continue
		}
		var ae *goamqp.Error
		if !errors.As(err, &ae) || ae.Condition != "amqp:resource-limit-exceeded" {
			t.Fatalf("send %d: %v, want rejected amqp:resource-limit-exceeded", i, err)
		}
		break
	}
	if len(accepted) < 10 {
		t.Fatalf("only %d messages of 1000 bytes stored under 20000 bytes", len(accepted))
	}
	mq, rc := mqttConnect(t, p.MQTTAddr, "app@tiny", "app-secret", "tiny-pub", true, 0)
	if rc != 0 {
		t.Fatalf("MQTT connect at the store limit: CONNACK %#x", rc)
	}
	if rc := mqttPublish(t, mq, "q", "refused-mqtt"); rc != 0x97 {
		t.Fatalf("MQTT publish at the store limit: PUBACK %#x, want 0x97", rc)
	}
	base := "http://" + p.HTTPAddr
	if st, _, b := httpStatus(t, "POST", base+"/api/v1/addresses/q/messages", "app@tiny", "app-secret", "refused-http"); st != 429 ||
		!strings.Contains(b, `"limit_exceeded"`) {
		t.Fatalf("/api/v1 publish at the store limit: %d %s, want 429 limit_exceeded", st, b)
	}
	var u struct {
		Usage struct{ StoredBytes struct{ Used, Limit float64 } }
	}
	getJSON(t, e, "/api/tenants/tiny?usage=true", &u)
	if u.Usage.StoredBytes.Limit != 20000 || u.Usage.StoredBytes.Used < float64(len(accepted)*1000) {
		t.Fatalf("usage storedBytes %+v with %d messages stored", u.Usage.StoredBytes, len(accepted))
	}
	if got := quotaRefused(t, p, "tiny", "storedBytes"); got < 3 {
		t.Fatalf("throng_tenant_quota_refused_total{limit=storedBytes} = %v, want at least 3", got)
	}

	// Another tenant is unaffected.
	other, err := e.amqpSession("app@roomy").NewSender(ctx10(t), "q", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if err := amqpSend(t, other, body(i)); err != nil {
			t.Fatalf("other tenant, send %d: %v", i, err)
		}
	}

	// Nothing accepted is lost, nothing refused stored.
	drain(t, e.amqpSession("app@tiny"), accepted)
	testkit.Eventually(t, 10*time.Second, func() bool { return amqpSend(t, snd, "after-drain") == nil })
}

// TestQuotaRateOut: maxMessagesOutPerSecond 5. Live QoS 0 messages to
// an MQTT subscriber beyond the rate are dropped and counted
// (reason="rate_out"); a queue's stored messages are slowed down to the
// rate — all of them arrive, in order, none dropped.
func TestQuotaRateOut(t *testing.T) {
	p := testkit.Start(t)
	e := &quotaEnv{Platform: p, t: t}
	e.tenant("slow", `{"maxMessagesOutPerSecond":5}`)
	ie := &iotEnv{Platform: p, t: t}

	// Live, at most once: dropped beyond the rate.
	sub, rc := mqttConnect(t, p.MQTTAddr, "app@slow", "app-secret", "live-sub", true, 0)
	if rc != 0 {
		t.Fatalf("subscriber: CONNACK %#x", rc)
	}
	got := make(chan string, 100)
	sub.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		got <- string(pr.Packet.Payload)
		return true, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "live/x", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	pub, rc := mqttConnect(t, p.MQTTAddr, "app@slow", "app-secret", "live-pub", true, 0)
	if rc != 0 {
		t.Fatalf("publisher: CONNACK %#x", rc)
	}
	const sent = 30
	start := time.Now()
	for i := range sent {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "live/x", QoS: 0, Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	dropped := func() float64 {
		return ie.metric("throng_router_messages_dropped_total", "tenant", "slow", "reason", "rate_out")
	}
	received := 0
	testkit.Eventually(t, 10*time.Second, func() bool {
		for {
			select {
			case <-got:
				received++
				continue
			default:
			}
			break
		}
		return received+int(dropped()) == sent
	})
	if limit := 5 + int(time.Since(start).Seconds()*5) + 1; received == 0 || received > limit {
		t.Fatalf("live QoS 0: %d of %d delivered within %s at 5/s (at most %d)", received, sent, time.Since(start), limit)
	}

	// Stored: slowed down, all delivered in order.
	s := e.amqpSession("app@slow")
	snd, err := s.NewSender(ctx10(t), "q", nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 15 {
		want = append(want, "stored-"+strconv.Itoa(i))
		if err := amqpSend(t, snd, want[i]); err != nil {
			t.Fatal(err)
		}
	}
	before := dropped()
	start = time.Now()
	drain(t, s, want)
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Fatalf("15 stored messages delivered in %s at 5/s (burst 5): not slowed down", took)
	}
	if after := dropped(); after != before {
		t.Fatalf("stored deliveries dropped: %v", after-before)
	}
}
