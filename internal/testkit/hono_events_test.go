package testkit_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
)

// Connection events, gateways through viaGroups for "+" command
// subscriptions, tenant/device defaults and max-ttl (issue 13): MQTT
// devices (mosquitto_sub 3.1.1, paho.golang MQTT 5) and HTTP devices
// (net/http), a go-amqp application on event/T, telemetry/T and
// command/T, each on its own connection. Each subtest has a tenant of
// its own: event/T is a queue, what one subtest leaves there must not
// reach another.

// honoTenant creates an IoT tenant with the Hono settings given and a
// device "dev" (auth-id dev@T, password dev-secret) with devBody.
func (e *honoEnv) honoTenant(name string, settings, devBody map[string]any) {
	e.t.Helper()
	e.v1("POST", "/v1/tenants/"+name, settings, 201)
	e.v1("POST", "/v1/devices/"+name+"/dev", devBody, 201)
	e.password(name, "dev", "dev", "dev-secret")
}

func (e *honoEnv) password(tn, dev, authID, secret string) {
	e.t.Helper()
	e.v1("PUT", "/v1/credentials/"+tn+"/"+dev, []any{map[string]any{"type": "hashed-password", "auth-id": authID,
		"secrets": []any{map[string]any{"pwd-plain": secret}}}}, 204)
}

// receiveAccept receives a message and accepts it.
func receiveAccept(t *testing.T, r *goamqp.Receiver) *goamqp.Message {
	t.Helper()
	m := receive(t, r)
	if err := r.AcceptMessage(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

// nothingOn fails if a message arrives on r within d.
func nothingOn(t *testing.T, r *goamqp.Receiver, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if m, err := r.Receive(ctx, nil); err == nil {
		t.Fatalf("unexpected message: %+v %v %s", m.Properties, m.ApplicationProperties, m.GetData())
	}
}

func contentType(m *goamqp.Message) string {
	if m.Properties == nil || m.Properties.ContentType == nil {
		return ""
	}
	return *m.Properties.ContentType
}

// wantConnectionEvent checks a connection event exactly: Hono's content
// type and payload, throng's event properties.
func wantConnectionEvent(t *testing.T, m *goamqp.Message, tn, dev, cause, remote, adapter string) {
	t.Helper()
	if ct := contentType(m); ct != "application/vnd.eclipse-hono-dc-notification+json" {
		t.Fatalf("content-type %q (%v %s)", ct, m.ApplicationProperties, m.GetData())
	}
	var body map[string]any
	if err := json.Unmarshal(m.GetData(), &body); err != nil {
		t.Fatalf("payload %q: %v", m.GetData(), err)
	}
	want := map[string]any{"cause": cause, "remote-id": remote, "source": adapter}
	if len(body) != len(want) {
		t.Errorf("payload %s", m.GetData())
	}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("payload %s = %#v, want %#v (%s)", k, body[k], v, m.GetData())
		}
	}
	wantProps(t, m, map[string]any{"device_id": dev, "tenant_id": tn, "orig_adapter": adapter, "qos": int32(1)})
	if m.Header == nil || !m.Header.Durable {
		t.Errorf("not durable: %+v", m.Header)
	}
	if m.Properties.To == nil || *m.Properties.To != "event/"+tn {
		t.Errorf("to %v", m.Properties.To)
	}
	if m.Properties.CreationTime == nil || time.Since(*m.Properties.CreationTime) > time.Minute {
		t.Errorf("creation-time %v", m.Properties.CreationTime)
	}
}

func wantTTD(t *testing.T, m *goamqp.Message, ttd int32) {
	t.Helper()
	if ct := contentType(m); ct != "application/vnd.eclipse-hono-empty-notification" {
		t.Fatalf("content-type %q, want the empty notification (%v %s)", ct, m.ApplicationProperties, m.GetData())
	}
	wantProps(t, m, map[string]any{"ttd": ttd})
}

// mosqSub starts mosquitto_sub (MQTT 3.1.1) as a device; stop ends it
// with SIGINT (a clean DISCONNECT), else after 5 s with SIGKILL.
func (e *honoEnv) mosqSub(clientID, user, pass string, filters ...string) (lines chan string, stop func()) {
	e.t.Helper()
	bin := needClient(e.t, "mosquitto_sub")
	host, port, _ := net.SplitHostPort(e.MQTTAddr)
	args := []string{"-V", "mqttv311", "-h", host, "-p", port, "-i", clientID, "-u", user, "-P", pass, "-v", "-q", "1"}
	for _, f := range filters {
		args = append(args, "-t", f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, bin, args...)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		cancel()
		e.t.Fatal(err)
	}
	lines = make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 4096)
		var acc string
		for {
			n, err := out.Read(b)
			acc += string(b[:n])
			for {
				i := strings.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				select {
				case lines <- acc[:i]:
				default: // nobody reads: dropped
				}
				acc = acc[i+1:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			// mosquitto_sub now and then sits out a SIGINT (seen once:
			// until the context's end); the socket's close ends the
			// device's connection the same way for the server.
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
		cancel()
	}
	e.t.Cleanup(stop)
	return lines, stop
}

func TestHonoEvents(t *testing.T) {
	e := startHono(t)
	admin := e.app("", "")

	t.Run("connection events", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		e.honoTenant("ce", map[string]any{"ext": map[string]any{"connection-events": "events"}}, map[string]any{})
		r, err := e.receiver(admin, "event/ce", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())

		// mosquitto_sub subscribing for commands: connected, ttd -1;
		// after its DISCONNECT: ttd 0, disconnected.
		_, stop := e.mosqSub("mosq-ce-1", "dev@ce", "dev-secret", "command///req/#")
		wantConnectionEvent(t, receiveAccept(t, r), "ce", "dev", "connected", "mosq-ce-1", "hono-mqtt")
		wantTTD(t, receiveAccept(t, r), -1)
		stop()
		wantTTD(t, receiveAccept(t, r), 0)
		wantConnectionEvent(t, receiveAccept(t, r), "ce", "dev", "disconnected", "mosq-ce-1", "hono-mqtt")

		// paho (MQTT 5), no command subscription.
		c, _ := e.device("dev@ce", "dev-secret")
		wantConnectionEvent(t, receiveAccept(t, r), "ce", "dev", "connected", "dev-dev@ce", "hono-mqtt")
		if pr := publish(t, c, "e", 1, "between"); pr == nil || pr.ReasonCode != 0 {
			t.Fatalf("event PUBACK %+v", pr)
		}
		if m := receiveAccept(t, r); string(m.GetData()) != "between" {
			t.Fatalf("event %q %v", m.GetData(), m.ApplicationProperties)
		}
		_ = c.Disconnect(&paho.Disconnect{})
		wantConnectionEvent(t, receiveAccept(t, r), "ce", "dev", "disconnected", "dev-dev@ce", "hono-mqtt")
		nothingOn(t, r, 300*time.Millisecond)
	})

	t.Run("connection events off", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		// Off: no setting; "none"; and on for the tenant but off for the
		// MQTT adapter.
		e.honoTenant("ceoff", map[string]any{}, map[string]any{})
		e.honoTenant("ceoff2", map[string]any{"ext": map[string]any{"connection-events": "none"}}, map[string]any{})
		e.honoTenant("ceoff3", map[string]any{
			"ext": map[string]any{"connection-events": "events"},
			"adapters": []any{
				map[string]any{"type": "hono-mqtt", "enabled": true, "ext": map[string]any{"connection-events": "none"}},
				map[string]any{"type": "hono-http", "enabled": true},
			},
		}, map[string]any{})
		for _, tn := range []string{"ceoff", "ceoff2", "ceoff3"} {
			r, err := e.receiver(admin, "event/"+tn, 10)
			if err != nil {
				t.Fatal(err)
			}
			_, stop := e.mosqSub("mosq-"+tn, "dev@"+tn, "dev-secret", "command///req/#")
			wantTTD(t, receiveAccept(t, r), -1) // the first message is the notification
			stop()
			wantTTD(t, receiveAccept(t, r), 0)
			c, _ := e.device("dev@"+tn, "dev-secret")
			publish(t, c, "e", 1, "marker")
			if m := receiveAccept(t, r); string(m.GetData()) != "marker" {
				t.Fatalf("%s: %q %v", tn, m.GetData(), m.ApplicationProperties)
			}
			_ = c.Disconnect(&paho.Disconnect{})
			nothingOn(t, r, 500*time.Millisecond)
			r.Close(context.Background())
		}
	})

	t.Run("gateway via group", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		e.honoTenant("grp", map[string]any{}, map[string]any{"viaGroups": []string{"north"}})
		e.v1("POST", "/v1/devices/grp/gw", map[string]any{"memberOf": []string{"north"}}, 201)
		e.password("grp", "gw", "gw", "gw-secret")
		e.v1("POST", "/v1/devices/grp/outside", map[string]any{}, 201)
		e.v1("POST", "/v1/devices/grp/south", map[string]any{"viaGroups": []string{"south"}}, 201)

		gw, got := e.device("gw@grp", "gw-secret")
		if rc := subscribe(t, gw, "command//+/req/#", 1); rc != 1 {
			t.Fatalf("SUBACK %#x", rc)
		}
		cmd := e.sender(admin, "command/grp")
		send := func(dev string) goamqp.DeliveryState {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			to, name := "command/grp/"+dev, "switch"
			m := goamqp.NewMessage([]byte("on"))
			m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name}
			rc, err := cmd.SendWithReceipt(ctx, m, nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := rc.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		// dev names group north, gw is a member: through gw's "+".
		if st := send("dev"); st == nil {
			t.Fatal("no outcome")
		} else if _, ok := st.(*goamqp.StateAccepted); !ok {
			t.Fatalf("command for dev: %T %+v", st, st)
		}
		select {
		case p := <-got:
			if p.Topic != "command//dev/req//switch" || string(p.Payload) != "on" {
				t.Fatalf("gateway got %s %q", p.Topic, p.Payload)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the gateway got no command")
		}
		// Devices that do not name a group of gw: released, gw gets nothing.
		for _, dev := range []string{"outside", "south"} {
			if st, ok := send(dev).(*goamqp.StateReleased); !ok {
				t.Fatalf("command for %s: %T %+v", dev, st, st)
			}
		}
		select {
		case p := <-got:
			t.Fatalf("the gateway got %s", p.Topic)
		case <-time.After(300 * time.Millisecond):
		}
		// gw may act for dev on its own subscription too (viaGroups),
		// and not for outside.
		if rc := subscribe(t, gw, "command//dev/req/#", 1); rc != 1 {
			t.Fatalf("SUBACK for dev %#x", rc)
		}
		if rc := subscribe(t, gw, "command//outside/req/#", 1); rc != 0x87 {
			t.Fatalf("SUBACK for outside %#x", rc)
		}
	})

	t.Run("ttl and defaults", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		e.honoTenant("ttl", map[string]any{
			"defaults":        map[string]any{"ttl": 10, "content-type": "application/json", "site": "north", "level": 3},
			"resource-limits": map[string]any{"max-ttl": 30},
		}, map[string]any{"defaults": map[string]any{"site": "south", "unit": "C"}})
		e.v1("POST", "/v1/devices/ttl/plain", map[string]any{}, 201)
		e.password("ttl", "plain", "plain", "plain-secret")
		events, err := e.receiver(admin, "event/ttl", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer events.Close(context.Background())
		ttlOf := func(m *goamqp.Message) time.Duration {
			if m.Header == nil {
				return 0
			}
			return m.Header.TTL
		}

		// mosquitto_pub (3.1.1): hono-ttl 600 above max-ttl 30: capped.
		out := e.mosqPub("-u", "dev@ttl", "-P", "dev-secret", "-q", "1", "-t", "event/?hono-ttl=600", "-m", `{"a":1}`)
		if !strings.Contains(out, "received PUBACK") {
			t.Fatalf("event not acknowledged:\n%s", out)
		}
		m := receiveAccept(t, events)
		if d := ttlOf(m); d <= 20*time.Second || d > 30*time.Second {
			t.Fatalf("capped ttl %v", d)
		}
		// Defaults: the device's site wins over the tenant's; the
		// tenant's content type and level; unit from the device.
		if ct := contentType(m); ct != "application/json" {
			t.Errorf("content-type %q", ct)
		}
		wantProps(t, m, map[string]any{"site": "south", "unit": "C", "level": int32(3), "device_id": "dev", "orig_address": "event/?hono-ttl=600"})
		for _, k := range []string{"ttl", "content-type"} {
			if _, ok := m.ApplicationProperties[k]; ok {
				t.Errorf("default %q became an application property", k)
			}
		}

		// Below max-ttl the device's own; without one the "ttl" default.
		c, _ := e.device("dev@ttl", "dev-secret")
		publish(t, c, "e/?hono-ttl=25&content-type=text%2Fplain&site=bag", 1, "x")
		m = receiveAccept(t, events)
		if d := ttlOf(m); d <= 15*time.Second || d > 25*time.Second || contentType(m) != "text/plain" || m.ApplicationProperties["site"] != "bag" {
			t.Fatalf("own ttl %v, content-type %q, site %v", d, contentType(m), m.ApplicationProperties["site"])
		}
		publish(t, c, "e", 1, "y")
		if d := ttlOf(receiveAccept(t, events)); d <= 0 || d > 10*time.Second {
			t.Fatalf("default ttl %v", d)
		}

		// A device without defaults: the tenant's.
		p, _ := e.device("plain@ttl", "plain-secret")
		publish(t, p, "e", 1, "z")
		m = receiveAccept(t, events)
		wantProps(t, m, map[string]any{"site": "north", "level": int32(3), "device_id": "plain"})

		// Telemetry too (the "ttl" default; no telemetry limit set).
		tel, err := e.receiver(admin, "telemetry/ttl", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer tel.Close(context.Background())
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = c.Publish(ctx, &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("7")})
		}()
		m = receiveAccept(t, tel)
		if d := ttlOf(m); d <= 0 || d > 10*time.Second || contentType(m) != "application/json" || m.ApplicationProperties["unit"] != "C" {
			t.Fatalf("telemetry: ttl %v %q %v", d, contentType(m), m.ApplicationProperties)
		}

		// HTTP: hono-ttl header above max-ttl, capped the same way.
		resp, body := doReq(t, http.DefaultClient, "POST", "http://"+e.HTTPAddr+"/event", "dev@ttl", "dev-secret",
			map[string]string{"Content-Type": "text/plain", "hono-ttl": "600"}, "from-http")
		if resp.StatusCode != 202 {
			t.Fatalf("http event: %d %s", resp.StatusCode, body)
		}
		m = receiveAccept(t, events)
		if d := ttlOf(m); string(m.GetData()) != "from-http" || d <= 20*time.Second || d > 30*time.Second {
			t.Fatalf("http event %q ttl %v", m.GetData(), d)
		}
		wantProps(t, m, map[string]any{"site": "south", "orig_adapter": "hono-http"})
	})
}
