package testkit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
	mqtt311 "github.com/eclipse/paho.mqtt.golang"
)

// Hono's MQTT adapter details beyond the first slice (issue 13): the
// on-error property bag parameter, the retain flag's x-opt-retain
// annotation and unauthenticated devices. Devices are paho.golang (MQTT
// 5), paho.mqtt.golang (3.1.1) and mosquitto_pub; applications go-amqp.

// device311 connects an MQTT 3.1.1 device (paho.mqtt.golang); got has
// the PUBLISHes it receives, lost is closed when the server ends the
// connection.
func (e *honoEnv) device311(user, pass, id string) (c mqtt311.Client, got chan mqtt311.Message, lost chan struct{}) {
	e.t.Helper()
	lost = make(chan struct{})
	got = make(chan mqtt311.Message, 16)
	o := mqtt311.NewClientOptions().AddBroker("tcp://" + e.MQTTAddr).SetClientID(id).
		SetUsername(user).SetPassword(pass).SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectRetry(false).SetCleanSession(true).
		SetDefaultPublishHandler(func(_ mqtt311.Client, m mqtt311.Message) { got <- m }).
		SetConnectionLostHandler(func(mqtt311.Client, error) { close(lost) })
	c = mqtt311.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		e.t.Fatalf("3.1.1 connect %s: %v", user, tok.Error())
	}
	e.t.Cleanup(func() { c.Disconnect(0) })
	return c, got, lost
}

// acked publishes with QoS 1 and reports whether the PUBACK came within
// d (paho.mqtt.golang completes the token on PUBACK only).
func acked311(t *testing.T, c mqtt311.Client, topic string, d time.Duration) bool {
	t.Helper()
	tok := c.Publish(topic, 1, false, "x")
	if !tok.WaitTimeout(d) {
		return false
	}
	return tok.Error() == nil
}

// closed waits for a connection to end.
func closed(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the connection was not closed", what)
	}
}

// open checks that a connection is still up a moment later.
func open(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
		t.Fatalf("%s: the connection was closed", what)
	case <-time.After(300 * time.Millisecond):
	}
}

// publishWithin publishes with QoS 1 and returns the PUBACK, nil if none
// came within d.
func publishWithin(t *testing.T, c *paho.Client, topic string, d time.Duration) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("x")})
	if err != nil && pr != nil && pr.ReasonCode == 0 {
		t.Fatalf("publish %s: %v", topic, err)
	}
	if err != nil && pr == nil {
		return nil
	}
	return pr
}

func expectErrorMessage(t *testing.T, got chan *paho.Publish, topic string, code float64) {
	t.Helper()
	select {
	case p := <-got:
		var body map[string]any
		if p.Topic != topic || json.Unmarshal(p.Payload, &body) != nil || body["code"] != code {
			t.Fatalf("error message %q %s, want %s", p.Topic, p.Payload, topic)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no error message %s", topic)
	}
}

// TestHonoOnError checks Hono's on-error parameter (MQTT adapter user
// guide, "Error Handling"): default, disconnect, ignore and skip-ack,
// with and without an error subscription, for telemetry nobody consumes
// (a failure the router reports), a gateway's event it may not send and
// a malformed command response (failures found before routing), QoS 0
// and 1, MQTT 5 and 3.1.1.
func TestHonoOnError(t *testing.T) {
	e := startHono(t)
	// Nobody consumes telemetry/iot: QoS 1 telemetry fails with 503
	// (MQTT 5: 0x10); dev1 is no gateway of dev2: 403 (0x87); a req-id
	// that does not decode: 400 (0x90).

	t.Run("mqtt5 without error subscription", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		c, _ := e.device("sensor1@iot", "secret1")
		for _, tc := range []struct {
			topic string
			rc    byte
		}{
			{"t", 0x10},                     // default: the PUBACK says why
			{"t/?on-error=default", 0x10},   // the same
			{"t/?on-error=whatever", 0x10},  // an unknown value is the default (Hono)
			{"t/?on-error=ignore", 0x00},    // ignored: PUBACK success
			{"e//dev2/?on-error=ignore", 0}, // refused before routing, alike
			{"c///s/%%%/200/?on-error=ignore", 0},
			{"e//dev2", 0x87},
		} {
			if pr := publish(t, c, tc.topic, 1, "x"); pr == nil || pr.ReasonCode != tc.rc {
				t.Fatalf("%s: PUBACK %+v, want %#x", tc.topic, pr, tc.rc)
			}
		}
		// skip-ack: no PUBACK, the connection goes on and later
		// acknowledgements are not held up.
		for _, topic := range []string{"t/?on-error=skip-ack", "e//dev2/?on-error=skip-ack"} {
			if pr := publishWithin(t, c, topic, 2*time.Second); pr != nil {
				t.Fatalf("%s: PUBACK %+v, want none", topic, pr)
			}
			if pr := publish(t, c, "t/?on-error=ignore", 1, "x"); pr == nil || pr.ReasonCode != 0 {
				t.Fatalf("after %s: PUBACK %+v", topic, pr)
			}
		}
		// QoS 0 telemetry nobody consumes is dropped (default, ignore,
		// skip-ack)...
		for _, topic := range []string{"t", "t/?on-error=ignore", "t/?on-error=skip-ack"} {
			publish(t, c, topic, 0, "x")
		}
		open(t, c.Done(), "QoS 0 dropped")
		if pr := publish(t, c, "t/?on-error=ignore", 1, "x"); pr == nil || pr.ReasonCode != 0 {
			t.Fatalf("PUBACK %+v", pr)
		}
		// ... and closes the connection with disconnect.
		publish(t, c, "t/?on-error=disconnect", 0, "x")
		closed(t, c.Done(), "QoS 0 disconnect")

		for _, topic := range []string{"t/?on-error=disconnect", "e//dev2/?on-error=disconnect", "c///s/%%%/200/?on-error=disconnect"} {
			c, _ := e.device("sensor1@iot", "secret1")
			if pr := publishWithin(t, c, topic, 5*time.Second); pr != nil {
				t.Fatalf("%s: PUBACK %+v, want none", topic, pr)
			}
			closed(t, c.Done(), topic)
		}
	})

	t.Run("mqtt5 with error subscription", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		c, got := e.device("sensor1@iot", "secret1")
		if rc := subscribe(t, c, "error///#", 0); rc != 0 {
			t.Fatalf("SUBACK %#x", rc)
		}
		// default and ignore: reported, then acknowledged.
		for _, topic := range []string{"t/?correlation-id=d", "t/?on-error=ignore&correlation-id=d"} {
			if pr := publish(t, c, topic, 1, "x"); pr == nil || pr.ReasonCode != 0 {
				t.Fatalf("%s: PUBACK %+v", topic, pr)
			}
			expectErrorMessage(t, got, "error///telemetry/d/503", 503)
		}
		// skip-ack: reported, not acknowledged.
		if pr := publishWithin(t, c, "t/?on-error=skip-ack&correlation-id=s", 2*time.Second); pr != nil {
			t.Fatalf("skip-ack: PUBACK %+v", pr)
		}
		expectErrorMessage(t, got, "error///telemetry/s/503", 503)
		if pr := publishWithin(t, c, "c///s/%%%/200/?on-error=skip-ack&correlation-id=r", 2*time.Second); pr != nil {
			t.Fatalf("skip-ack: PUBACK %+v", pr)
		}
		expectErrorMessage(t, got, "error///command-response/r/400", 400)
		// disconnect: reported, then closed.
		publish(t, c, "t/?on-error=disconnect&correlation-id=x", 0, "x")
		expectErrorMessage(t, got, "error///telemetry/x/503", 503)
		closed(t, c.Done(), "disconnect")
	})

	t.Run("mqtt 3.1.1", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		c, _, lost := e.device311("sensor1@iot", "secret1", "dev1-311")
		if !acked311(t, c, "t/?on-error=ignore", 30*time.Second) {
			t.Fatal("ignore: no PUBACK")
		}
		if !acked311(t, c, "e//dev2/?on-error=ignore", 30*time.Second) {
			t.Fatal("ignore (gateway refused): no PUBACK")
		}
		if acked311(t, c, "t/?on-error=skip-ack", 2*time.Second) {
			t.Fatal("skip-ack: PUBACK")
		}
		open(t, lost, "skip-ack")
		if !acked311(t, c, "t/?on-error=ignore", 30*time.Second) {
			t.Fatal("after skip-ack: no PUBACK")
		}
		// The default without an error subscription closes the
		// connection (MQTT 3.1.1 has no negative PUBACK).
		if acked311(t, c, "t", 5*time.Second) {
			t.Fatal("default: PUBACK")
		}
		closed(t, lost, "default")

		// With an error subscription: reported; disconnect closes.
		c, got, lost := e.device311("sensor1@iot", "secret1", "dev1-311")
		if tok := c.Subscribe("e///#", 0, nil); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		if !acked311(t, c, "t/?correlation-id=1", 30*time.Second) {
			t.Fatal("default with an error subscription: no PUBACK")
		}
		select {
		case m := <-got:
			if m.Topic() != "e///t/1/503" {
				t.Fatalf("error message on %s", m.Topic())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no error message")
		}
		if acked311(t, c, "t/?on-error=disconnect", 5*time.Second) {
			t.Fatal("disconnect: PUBACK")
		}
		closed(t, lost, "disconnect")

		// mosquitto_pub (one connection, no error subscription).
		if out := e.mosqPub("-u", "sensor1@iot", "-P", "secret1", "-q", "1", "-t", "t/?on-error=ignore", "-m", "x"); !strings.Contains(out, "received PUBACK") {
			t.Fatalf("mosquitto_pub ignore:\n%s", out)
		}
		if out := e.mosqPub("-u", "sensor1@iot", "-P", "secret1", "-q", "1", "-t", "t", "-m", "x"); strings.Contains(out, "received PUBACK") {
			t.Fatalf("mosquitto_pub default:\n%s", out)
		}
	})
}

// TestHonoRetain checks that a device's telemetry and events published
// with the retain flag reach the application with the message
// annotation x-opt-retain = true (Hono's MQTT adapter, "Downstream Meta
// Data"), and without it otherwise; nothing is retained.
func TestHonoRetain(t *testing.T) {
	e := startHono(t)
	admin := e.app("", "")
	tel, err := e.receiver(admin, "telemetry/iot", 10)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := e.receiver(admin, "event/iot", 10)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := e.device("sensor1@iot", "secret1")
	// QoS 1 telemetry is acknowledged once the application accepted
	// it: the publish goes on while check reads it; done waits for it.
	var acked chan error
	pub := func(topic string, retain bool, payload string) {
		acked = make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: []byte(payload),
				Properties: &paho.PublishProperties{ContentType: "text/plain"}})
			if err == nil && (pr == nil || pr.ReasonCode != 0) {
				err = fmt.Errorf("PUBACK %+v", pr)
			}
			acked <- err
		}()
	}
	check := func(r *goamqp.Receiver, payload string, retain bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m, err := r.Receive(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = r.AcceptMessage(ctx, m)
		if string(m.GetData()) != payload {
			t.Fatalf("body %q, want %q", m.GetData(), payload)
		}
		v, ok := m.Annotations["x-opt-retain"]
		if retain && v != true || !retain && ok {
			t.Fatalf("%s: annotations %v, want x-opt-retain %v", payload, m.Annotations, retain)
		}
		if m.Properties == nil || m.Properties.ContentType == nil || *m.Properties.ContentType != "text/plain" {
			t.Fatalf("%s: properties %+v", payload, m.Properties)
		}
		wantProps(t, m, map[string]any{"device_id": "dev1", "tenant_id": "iot", "orig_adapter": "hono-mqtt", "qos": int32(1)})
		if err := <-acked; err != nil {
			t.Fatalf("publish %s: %v", payload, err)
		}
	}
	pub("telemetry", true, "t-retained")
	check(tel, "t-retained", true)
	pub("telemetry/?k=v", false, "t-plain")
	check(tel, "t-plain", false)
	pub("event", true, "e-retained") // stored, then delivered
	check(ev, "e-retained", true)
	pub("e", false, "e-plain")
	check(ev, "e-plain", false)

	// MQTT 3.1.1: mosquitto_pub -r.
	out := make(chan string, 1)
	go func() {
		out <- e.mosqPub("-u", "sensor1@iot", "-P", "secret1", "-q", "1", "-r", "-t", "t", "-m", "mosq-retained")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := tel.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = tel.AcceptMessage(ctx, m)
	if o := <-out; !strings.Contains(o, "received PUBACK") {
		t.Fatalf("mosquitto_pub -r:\n%s", o)
	}
	if string(m.GetData()) != "mosq-retained" || m.Annotations["x-opt-retain"] != true {
		t.Fatalf("mosquitto_pub -r: %q %v", m.GetData(), m.Annotations)
	}

	// Nothing was retained: a device subscribing for commands gets no
	// retained message, a later application only the events.
	d, got := e.device("sensor3@iot", "secret3")
	if rc := subscribe(t, d, "command///req/#", 1); rc > 1 {
		t.Fatalf("SUBACK %#x", rc)
	}
	select {
	case p := <-got:
		t.Fatalf("a retained message %q reached a device", p.Topic)
	case <-time.After(300 * time.Millisecond):
	}
}

// pahoAnonymous connects an MQTT 5 device without credentials.
func (e *honoEnv) pahoAnonymous(id string) (*paho.Client, chan *paho.Publish, byte) {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.MQTTAddr)
	if err != nil {
		e.t.Fatal(err)
	}
	ch := make(chan *paho.Publish, 16)
	c := paho.NewClient(paho.ClientConfig{Conn: nc, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { ch <- pr.Packet; return true, nil }}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if ack == nil {
		e.t.Fatalf("connect: no CONNACK: %v", err)
	}
	if ack.ReasonCode == 0 {
		e.t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ch, ack.ReasonCode
}

// TestHonoUnauthenticatedMQTT checks Hono's unauthenticated MQTT
// devices: a tenant whose hono-mqtt adapter entry says
// "device-authentication-required": false lets devices connect without
// credentials and publish, subscribe and answer commands on topics that
// name the tenant and the device (Hono's MQTT adapter user guide,
// "(unauthenticated Device)" sections), each checked against the
// registry; mosquitto_pub and paho.golang as devices, go-amqp as the
// application.
func TestHonoUnauthenticatedMQTT(t *testing.T) {
	e := startHono(t)
	e.v1("POST", "/v1/tenants/open", map[string]any{
		"adapters": []any{map[string]any{"type": "hono-mqtt", "enabled": true, "device-authentication-required": false}},
		"ext":      map[string]any{"connection-events": "events"}}, 201)
	e.v1("POST", "/v1/devices/open/open1", map[string]any{}, 201)
	e.v1("POST", "/v1/devices/open/off", map[string]any{"enabled": false}, 201)
	admin := e.app("", "")
	tel, err := e.receiver(admin, "telemetry/open", 10)
	if err != nil {
		t.Fatal(err)
	}
	events, err := e.receiver(admin, "event/open", 10)
	if err != nil {
		t.Fatal(err)
	}
	accept := func(r *goamqp.Receiver) *goamqp.Message {
		t.Helper()
		m := receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		return m
	}

	// Hono's examples: mosquitto_pub -t t/DEFAULT_TENANT/4711 (QoS 0),
	// and an event with its TTL. (The MQTT server sees the new tenant
	// once the tenant store's watch delivered it: until then the
	// connection is anonymous, in the default tenant's topic space.)
	var m *goamqp.Message
	for i := 0; m == nil; i++ {
		out := e.mosqPub("-t", "t/open/open1", "-m", `{"temp": 5}`)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		m, _ = tel.Receive(ctx, nil)
		cancel()
		if i == 30 {
			t.Fatalf("no telemetry from mosquitto_pub:\n%s", out)
		}
	}
	_ = tel.AcceptMessage(context.Background(), m)
	if string(m.GetData()) != `{"temp": 5}` {
		t.Fatalf("telemetry %q", m.GetData())
	}
	wantProps(t, m, map[string]any{"device_id": "open1", "tenant_id": "open", "orig_adapter": "hono-mqtt",
		"orig_address": "t/open/open1", "qos": int32(0)})
	if _, ok := m.ApplicationProperties["gateway_id"]; ok {
		t.Fatalf("gateway_id on an unauthenticated device's message: %v", m.ApplicationProperties)
	}
	if out := e.mosqPub("-q", "1", "-t", "e/open/open1/?hono-ttl=15", "-m", `{"alarm": 1}`); !strings.Contains(out, "received PUBACK") {
		t.Fatalf("mosquitto_pub event:\n%s", out)
	}
	// No connection event for an unauthenticated device (Hono sends
	// them for authenticated devices only), although the tenant wants
	// them: the event is the first message.
	m = accept(events)
	if string(m.GetData()) != `{"alarm": 1}` || m.Header == nil || m.Header.TTL > 15*time.Second || m.Header.TTL < 5*time.Second {
		t.Fatalf("event %q header %+v %+v", m.GetData(), m.Header, m.Properties)
	}
	wantProps(t, m, map[string]any{"device_id": "open1", "tenant_id": "open"})

	// MQTT 5 (paho.golang): refusals, each on a connection that goes on.
	dev, got, rc := e.pahoAnonymous("anon-1")
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	for _, tc := range []struct {
		topic string
		rc    byte
	}{
		{"t", 0x90}, // no tenant and device: malformed
		{"telemetry//open1", 0x90},
		{"t/open/nobody", 0x87}, // unknown
		{"t/open/off", 0x87},    // disabled
		{"t/iot/dev1", 0x87},    // a tenant that requires authentication
	} {
		if pr := publish(t, dev, tc.topic, 1, "x"); pr == nil || pr.ReasonCode != tc.rc {
			t.Fatalf("%s: PUBACK %+v, want %#x", tc.topic, pr, tc.rc)
		}
	}
	publish(t, dev, "telemetry/open/open1", 0, "paho")
	if m := accept(tel); string(m.GetData()) != "paho" {
		t.Fatalf("telemetry %q", m.GetData())
	}
	for _, f := range []string{"command///req/#", "command/open//req/#", "command/open/+/req/#", "command/iot/dev1/req/#", "error///#"} {
		if rc := subscribe(t, dev, f, 1); rc < 0x80 {
			t.Fatalf("SUBSCRIBE %s: %#x, want a refusal", f, rc)
		}
	}

	// Commands: command/T/<device>/req/#, ttd -1 for that device, the
	// response on command/T/<device>/res/<req-id>/<status>.
	if rc := subscribe(t, dev, "command/open/open1/req/#", 1); rc != 1 {
		t.Fatalf("SUBACK %#x", rc)
	}
	n := accept(events)
	if n.Properties == nil || n.Properties.ContentType == nil || *n.Properties.ContentType != "application/vnd.eclipse-hono-empty-notification" {
		t.Fatalf("notification %+v", n.Properties)
	}
	wantProps(t, n, map[string]any{"device_id": "open1", "tenant_id": "open", "ttd": int32(-1)})
	responses, err := e.receiver(admin, "command_response/open/app-1", 10)
	if err != nil {
		t.Fatal(err)
	}
	cmd := e.sender(admin, "command/open")
	stc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		to, name, reply := "command/open/open1", "setBrightness", "command_response/open/app-1"
		m := goamqp.NewMessage([]byte(`{"brightness":79}`))
		m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name, ReplyTo: &reply, CorrelationID: "corr-1"}
		stc <- cmd.Send(ctx, m, nil)
	}()
	var p *paho.Publish
	select {
	case p = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no command")
	}
	pre := "command/open/open1/req/"
	if !strings.HasPrefix(p.Topic, pre) || !strings.HasSuffix(p.Topic, "/setBrightness") {
		t.Fatalf("command on %q", p.Topic)
	}
	if err := <-stc; err != nil {
		t.Fatalf("command: %v", err)
	}
	reqID := strings.TrimSuffix(strings.TrimPrefix(p.Topic, pre), "/setBrightness")
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = dev.Publish(ctx, &paho.Publish{Topic: "command/open/open1/res/" + reqID + "/200", QoS: 1, Payload: []byte(`{"lumen":200}`)})
	}()
	resp := accept(responses)
	if resp.Properties == nil || resp.Properties.CorrelationID != "corr-1" || string(resp.GetData()) != `{"lumen":200}` {
		t.Fatalf("response %+v %q", resp.Properties, resp.GetData())
	}
	wantProps(t, resp, map[string]any{"device_id": "open1", "tenant_id": "open", "status": int32(200)})

	// The error topic error/T/<device>/#.
	if rc := subscribe(t, dev, "error/open/open1/#", 0); rc != 0 {
		t.Fatalf("SUBACK %#x", rc)
	}
	if pr := publish(t, dev, "command/open/open1/res/%%%/200/?correlation-id=z", 1, "x"); pr == nil || pr.ReasonCode != 0 {
		t.Fatalf("PUBACK %+v", pr)
	}
	expectErrorMessage(t, got, "error/open/open1/command-response/z/400", 400)

	// The connection ends: ttd 0 for open1, no connection event.
	_ = dev.Disconnect(&paho.Disconnect{})
	n = accept(events)
	wantProps(t, n, map[string]any{"device_id": "open1", "ttd": int32(0)})
	if n.Properties == nil || n.Properties.ContentType == nil || *n.Properties.ContentType != "application/vnd.eclipse-hono-empty-notification" {
		t.Fatalf("after the disconnect: %+v", n.Properties)
	}

	// A second tenant waiving authentication: a connection without
	// credentials could not be told which one it belongs to, so it is
	// what it was before: anonymous in the default tenant's topic space
	// (the platform allows anonymous loopback clients), refused where
	// anonymous access is off. Its "t/open/open1" is a topic there.
	e.v1("POST", "/v1/tenants/open2", map[string]any{
		"adapters": []any{map[string]any{"type": "hono-mqtt", "enabled": true, "device-authentication-required": false}}}, 201)
	for i := 0; ; i++ {
		c, _, rc := e.pahoAnonymous("anon-2")
		if rc != 0 {
			t.Fatalf("CONNACK %#x", rc)
		}
		publish(t, c, "t/open/open1", 0, "probe")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		m, err := tel.Receive(ctx, nil)
		cancel()
		_ = c.Disconnect(&paho.Disconnect{})
		if err != nil {
			break // not a device's telemetry
		}
		_ = tel.AcceptMessage(context.Background(), m)
		if i == 20 {
			t.Fatal("with two tenants waiving authentication, a connection without credentials is still a device")
		}
	}
}
