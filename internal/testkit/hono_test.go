package testkit_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
)

// Hono's telemetry, event and command & control APIs end to end (issue
// 13, first slice): MQTT devices (paho.golang MQTT 5, mosquitto 3.1.1)
// and AMQP applications (go-amqp, Qpid Proton), each on its own
// connection, on a tenant and devices registered through /v1.

// honoEnv is the platform with tenant "iot" (devices dev1, gw, dev2 via
// gw, dev3) and tenant "other" (IoT-enabled too, with a user app@other).
type honoEnv struct {
	*iotEnv
}

func startHono(t *testing.T) *honoEnv {
	e, _ := startIoT(t, false)
	e.v1("POST", "/v1/tenants/iot", map[string]any{}, 201)
	e.v1("POST", "/v1/tenants/other", map[string]any{}, 201)
	pw := func(dev, authID, secret string) {
		e.v1("PUT", "/v1/credentials/iot/"+dev, []any{map[string]any{"type": "hashed-password", "auth-id": authID,
			"secrets": []any{map[string]any{"pwd-plain": secret}}}}, 204)
	}
	e.v1("POST", "/v1/devices/iot/dev1", map[string]any{}, 201)
	pw("dev1", "sensor1", "secret1")
	e.v1("POST", "/v1/devices/iot/gw", map[string]any{}, 201)
	pw("gw", "gw", "gw-secret")
	e.v1("POST", "/v1/devices/iot/dev2", map[string]any{"via": []string{"gw"}}, 201)
	e.v1("POST", "/v1/devices/iot/dev3", map[string]any{}, 201)
	pw("dev3", "sensor3", "secret3")
	resp := e.Do(t, "POST", "/api/tenants/other/users", strings.NewReader(
		`{"name":"app","password":"app-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`))
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create user: %d", resp.StatusCode)
	}
	return &honoEnv{e}
}

// app opens an AMQP connection as an application (the platform admin
// unless user is given).
func (e *honoEnv) app(user, pass string) *goamqp.Conn {
	e.t.Helper()
	if user == "" {
		user, pass = e.AdminUser, e.AdminPassword
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := goamqp.Dial(ctx, "amqp://"+e.AMQPAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain(user, pass)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *honoEnv) receiver(c *goamqp.Conn, addr string, credit int32) (*goamqp.Receiver, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return s.NewReceiver(ctx, addr, &goamqp.ReceiverOptions{Credit: credit})
}

func (e *honoEnv) sender(c *goamqp.Conn, addr string) *goamqp.Sender {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	snd, err := s.NewSender(ctx, addr, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return snd
}

// device connects an MQTT 5 device whose received PUBLISHes go to the
// returned channel.
func (e *honoEnv) device(user, pass string) (*paho.Client, chan *paho.Publish) {
	e.t.Helper()
	c, rc := e.pahoConnect(user, pass, nil)
	if rc != 0 {
		e.t.Fatalf("%s: CONNACK %#x", user, rc)
	}
	ch := make(chan *paho.Publish, 16)
	c.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		ch <- pr.Packet
		return true, nil
	})
	return c, ch
}

func publish(t *testing.T, c *paho.Client, topic string, qos byte, payload string) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if err != nil && pr == nil && qos > 0 {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return pr
}

func subscribe(t *testing.T, c *paho.Client, filter string, qos byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if sa == nil || len(sa.Reasons) != 1 {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return sa.Reasons[0]
}

func receive(t *testing.T, r *goamqp.Receiver) *goamqp.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := r.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func wantProps(t *testing.T, m *goamqp.Message, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got := m.ApplicationProperties[k]; got != v {
			t.Errorf("application property %s = %#v (%T), want %#v (%T); all: %v", k, got, got, v, v, m.ApplicationProperties)
		}
	}
}

// mosqPub runs mosquitto_pub -d (MQTT 3.1.1) against the plain listener.
func (e *honoEnv) mosqPub(args ...string) string {
	e.t.Helper()
	bin := needClient(e.t, "mosquitto_pub")
	host, port, _ := net.SplitHostPort(e.MQTTAddr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := []string{"-d", "-V", "mqttv311", "-h", host, "-p", port, "-i", "mosq-hono"}
	out, _ := exec.CommandContext(ctx, bin, append(base, args...)...).CombinedOutput()
	return string(out)
}

// proton starts testdata/hono_app.py; lines comes with its output lines,
// done with its exit error once it ended.
func (e *honoEnv) protonApp(args ...string) (lines chan string, done chan error) {
	e.t.Helper()
	needClient(e.t, protonPython, "-c", "import proton")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, protonPython, append([]string{filepath.Join("testdata", "hono_app.py"),
		"amqp://" + e.AdminUser + ":" + e.AdminPassword + "@" + e.AMQPAddr}, args...)...)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		cancel()
		e.t.Fatal(err)
	}
	lines, done = make(chan string, 64), make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
		cancel()
	}()
	return lines, done
}

// expectLine waits for an output line with the prefix and returns the rest.
func expectLine(t *testing.T, lines chan string, prefix string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("no %q line; output:\n%s", prefix, strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				return strings.TrimSpace(rest)
			}
		case <-timeout:
			t.Fatalf("no %q line in time; output:\n%s", prefix, strings.Join(seen, "\n"))
		}
	}
}

type protonMsg struct {
	Body          string         `json:"body"`
	ContentType   *string        `json:"content_type"`
	CorrelationID *string        `json:"correlation_id"`
	TTL           *float64       `json:"ttl"`
	Props         map[string]any `json:"props"`
}

func TestHono(t *testing.T) {
	e := startHono(t)
	admin := e.app("", "")

	t.Run("telemetry qos1 no consumer", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		// MQTT 5: PUBACK 0x10 (no matching subscribers).
		c, _ := e.device("sensor1@iot", "secret1")
		if pr := publish(t, c, "telemetry", 1, "x"); pr == nil || pr.ReasonCode != 0x10 {
			t.Fatalf("PUBACK %+v", pr)
		}
		// MQTT 3.1.1: Hono closes the connection (no error subscription),
		// no PUBACK.
		out := e.mosqPub("-u", "sensor3@iot", "-P", "secret3", "-q", "1", "-t", "telemetry", "-m", "x")
		if strings.Contains(out, "received PUBACK") || !strings.Contains(out, "sending PUBLISH") {
			t.Fatalf("mosquitto_pub:\n%s", out)
		}
		// QoS 0 without a consumer is dropped silently: the connection stays.
		publish(t, c, "t", 0, "dropped")
		if pr := publish(t, c, "t", 1, "x"); pr == nil || pr.ReasonCode != 0x10 {
			t.Fatalf("PUBACK after QoS 0 %+v", pr)
		}
	})

	t.Run("telemetry to application", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		r, err := e.receiver(admin, "telemetry/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		c, _ := e.device("sensor1@iot", "secret1")
		// QoS 1: PUBACK only once the application accepted.
		acked := make(chan *paho.PublishResponse, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pr, _ := c.Publish(ctx, &paho.Publish{Topic: "telemetry/?content-type=application%2Fjson&seq=7", QoS: 1, Payload: []byte(`{"temp":5}`)})
			acked <- pr
		}()
		m := receive(t, r)
		select {
		case pr := <-acked:
			t.Fatalf("PUBACK %+v before the application settled", pr)
		case <-time.After(300 * time.Millisecond):
		}
		if err := r.AcceptMessage(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		if pr := <-acked; pr == nil || pr.ReasonCode != 0 {
			t.Fatalf("PUBACK %+v", pr)
		}
		if string(m.GetData()) != `{"temp":5}` || m.Properties == nil || m.Properties.ContentType == nil || *m.Properties.ContentType != "application/json" {
			t.Fatalf("message %+v %s", m.Properties, m.GetData())
		}
		if m.Properties.CreationTime == nil || time.Since(*m.Properties.CreationTime) > time.Minute {
			t.Errorf("creation-time %v", m.Properties.CreationTime)
		}
		wantProps(t, m, map[string]any{"device_id": "dev1", "tenant_id": "iot", "orig_adapter": "hono-mqtt",
			"orig_address": "telemetry/?content-type=application%2Fjson&seq=7", "qos": int32(1), "seq": "7"})
		// QoS 0 from mosquitto_pub (3.1.1): application/octet-stream.
		e.mosqPub("-u", "sensor3@iot", "-P", "secret3", "-q", "0", "-t", "t", "-m", "m0")
		m = receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		if string(m.GetData()) != "m0" || *m.Properties.ContentType != "application/octet-stream" {
			t.Fatalf("QoS 0 message %+v %q", m.Properties, m.GetData())
		}
		wantProps(t, m, map[string]any{"device_id": "dev3", "qos": int32(0), "orig_address": "t"})
	})

	t.Run("telemetry to proton", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		lines, done := e.protonApp("receive", "telemetry/iot", "1", "30")
		expectLine(t, lines, "READY")
		c, _ := e.device("sensor1@iot", "secret1")
		var pm protonMsg
		if pr := publish(t, c, "t", 1, "from-paho"); pr == nil || pr.ReasonCode != 0 {
			t.Fatalf("PUBACK %+v", pr)
		}
		if err := json.Unmarshal([]byte(expectLine(t, lines, "MSG")), &pm); err != nil {
			t.Fatal(err)
		}
		if pm.Body != "from-paho" || pm.Props["device_id"] != "dev1" || pm.Props["orig_adapter"] != "hono-mqtt" {
			t.Fatalf("proton got %+v", pm)
		}
		expectLine(t, lines, "OK receive")
		<-done
	})

	t.Run("event to late consumer", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		out := e.mosqPub("-u", "sensor3@iot", "-P", "secret3", "-q", "1",
			"-t", "event/?hono-ttl=60&content-type=text%2Fplain", "-m", "alarm")
		if !strings.Contains(out, "received PUBACK") {
			t.Fatalf("event not acknowledged:\n%s", out)
		}
		// Events QoS 0 are refused (Hono: QoS 1 only): the connection closes.
		c, _ := e.device("sensor1@iot", "secret1")
		publish(t, c, "e", 0, "no")
		// The application attaches later (Proton) and gets the stored event.
		lines, done := e.protonApp("receive", "event/iot", "1", "30")
		var pm protonMsg
		if err := json.Unmarshal([]byte(expectLine(t, lines, "MSG")), &pm); err != nil {
			t.Fatal(err)
		}
		if pm.Body != "alarm" || pm.Props["device_id"] != "dev3" || pm.ContentType == nil || *pm.ContentType != "text/plain" ||
			pm.TTL == nil || *pm.TTL <= 0 || *pm.TTL > 60 /* Proton: seconds */ {
			t.Fatalf("event %+v", pm)
		}
		expectLine(t, lines, "OK receive")
		<-done
	})

	t.Run("gateway", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		r, err := e.receiver(admin, "telemetry/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		gw, _ := e.device("gw@iot", "gw-secret")
		for _, topic := range []string{"telemetry/iot/dev2", "t//dev2"} {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				_, _ = gw.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("for-dev2")})
			}()
			m := receive(t, r)
			_ = r.AcceptMessage(context.Background(), m)
			wantProps(t, m, map[string]any{"device_id": "dev2", "gateway_id": "gw", "tenant_id": "iot", "orig_address": topic})
		}
		// dev3 does not name gw in via; dev1 (not a gateway) cannot act for dev2.
		if pr := publish(t, gw, "telemetry//dev3", 1, "x"); pr == nil || pr.ReasonCode != 0x87 {
			t.Fatalf("gateway for dev3: %+v", pr)
		}
		if pr := publish(t, gw, "telemetry/other/dev2", 1, "x"); pr == nil || pr.ReasonCode != 0x87 {
			t.Fatalf("gateway in another tenant: %+v", pr)
		}
		d1, _ := e.device("sensor1@iot", "secret1")
		if pr := publish(t, d1, "e//dev2", 1, "x"); pr == nil || pr.ReasonCode != 0x87 {
			t.Fatalf("dev1 for dev2: %+v", pr)
		}
		if pr := publish(t, d1, "nonsense/topic", 1, "x"); pr == nil || pr.ReasonCode != 0x90 {
			t.Fatalf("bad topic: %+v", pr)
		}
		if rc := subscribe(t, d1, "command//dev2/req/#", 1); rc != 0x87 {
			t.Fatalf("dev1 subscribing for dev2: %#x", rc)
		}
		if rc := subscribe(t, d1, "#", 1); rc != 0x87 {
			t.Fatalf("dev1 subscribing to #: %#x", rc)
		}
	})

	t.Run("commands", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		notes, err := e.receiver(admin, "event/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer notes.Close(context.Background())
		dev, got := e.device("sensor1@iot", "secret1")
		if rc := subscribe(t, dev, "command///req/#", 1); rc != 1 {
			t.Fatalf("SUBACK %#x", rc)
		}
		// Hono's empty notification, ttd -1.
		n := receive(t, notes)
		_ = notes.AcceptMessage(context.Background(), n)
		if n.Properties == nil || n.Properties.ContentType == nil || *n.Properties.ContentType != "application/vnd.eclipse-hono-empty-notification" {
			t.Fatalf("notification %+v", n.Properties)
		}
		wantProps(t, n, map[string]any{"device_id": "dev1"})
		if ttd := n.ApplicationProperties["ttd"]; ttd != int32(-1) && ttd != int64(-1) {
			t.Fatalf("ttd %#v", ttd)
		}

		responses, err := e.receiver(admin, "command_response/iot/app-1", 10)
		if err != nil {
			t.Fatal(err)
		}
		cmd := e.sender(admin, "command/iot")
		send := func(to, name, replyTo string, corr any, body string) goamqp.DeliveryState {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m := goamqp.NewMessage([]byte(body))
			m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name}
			if replyTo != "" {
				m.Properties.ReplyTo = &replyTo
				m.Properties.CorrelationID = corr
			}
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
		// Request/response.
		stc := make(chan goamqp.DeliveryState, 1)
		go func() {
			stc <- send("command/iot/dev1", "setBrightness", "command_response/iot/app-1", "corr-1", `{"brightness":79}`)
		}()
		var p *paho.Publish
		select {
		case p = <-got:
		case <-time.After(30 * time.Second):
			t.Fatal("no command")
		}
		pre := "command///req/"
		if !strings.HasPrefix(p.Topic, pre) || !strings.HasSuffix(p.Topic, "/setBrightness") || string(p.Payload) != `{"brightness":79}` {
			t.Fatalf("command %q %q", p.Topic, p.Payload)
		}
		reqID := strings.TrimSuffix(strings.TrimPrefix(p.Topic, pre), "/setBrightness")
		if st := <-stc; st == nil {
			t.Fatal("no outcome")
		} else if _, ok := st.(*goamqp.StateAccepted); !ok {
			t.Fatalf("command outcome %T", st)
		}
		// The response's PUBACK follows the application's acceptance.
		acked := make(chan *paho.PublishResponse, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pr, _ := dev.Publish(ctx, &paho.Publish{Topic: "command///res/" + reqID + "/200", QoS: 1, Payload: []byte(`{"lumen":200}`)})
			acked <- pr
		}()
		resp := receive(t, responses)
		_ = responses.AcceptMessage(context.Background(), resp)
		if pr := <-acked; pr == nil || pr.ReasonCode != 0 {
			t.Fatalf("response PUBACK %+v", pr)
		}
		if resp.Properties == nil || resp.Properties.CorrelationID != "corr-1" || string(resp.GetData()) != `{"lumen":200}` {
			t.Fatalf("response %+v %q", resp.Properties, resp.GetData())
		}
		wantProps(t, resp, map[string]any{"device_id": "dev1", "tenant_id": "iot", "status": int32(200)})

		// One-way.
		go func() { stc <- send("command/iot/dev1", "reboot", "", nil, "now") }()
		select {
		case p = <-got:
		case <-time.After(30 * time.Second):
			t.Fatal("no one-way command")
		}
		if p.Topic != "command///req//reboot" || string(p.Payload) != "now" {
			t.Fatalf("one-way command %q %q", p.Topic, p.Payload)
		}
		<-stc

		// A device without a consumer: released at once.
		start := time.Now()
		if st := send("command/iot/dev3", "reboot", "", nil, "x"); st == nil {
			t.Fatal("no outcome")
		} else if _, ok := st.(*goamqp.StateReleased); !ok {
			t.Fatalf("offline device: %T", st)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("released after %v", d)
		}
		// Malformed commands are rejected.
		for _, c := range [][3]string{{"command/other/dev1", "x", ""}, {"command/iot/dev1", "", ""}, {"command/iot/dev1", "x", "elsewhere"}} {
			if st := send(c[0], c[1], c[2], "c", "x"); st == nil {
				t.Fatal("no outcome")
			} else if _, ok := st.(*goamqp.StateRejected); !ok {
				t.Fatalf("%v: %T", c, st)
			}
		}

		// Unsubscribing sends ttd 0.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := dev.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"command///req/#"}}); err != nil {
			t.Fatal(err)
		}
		n = receive(t, notes)
		_ = notes.AcceptMessage(context.Background(), n)
		wantProps(t, n, map[string]any{"device_id": "dev1"})
		if ttd := n.ApplicationProperties["ttd"]; ttd != int32(0) && ttd != int64(0) {
			t.Fatalf("ttd %#v", ttd)
		}
	})

	t.Run("commands proton and mosquitto", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		// mosquitto_sub (3.1.1) as the device, Proton as the application.
		bin := needClient(t, "mosquitto_sub")
		host, port, _ := net.SplitHostPort(e.MQTTAddr)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		sub := exec.CommandContext(ctx, bin, "-V", "mqttv311", "-h", host, "-p", port, "-u", "sensor3@iot", "-P", "secret3",
			"-i", "mosq-cmd", "-q", "1", "-t", "c///q/#", "-C", "1", "-v")
		outc := make(chan string, 1)
		go func() { out, _ := sub.CombinedOutput(); outc <- string(out) }()
		// The subscription is in place once the device consumes its address.
		var lines chan string
		var done chan error
		for i := 0; ; i++ {
			lines, done = e.protonApp("command", "iot", "dev3", "setMode", "eco", "-")
			if o := expectLine(t, lines, "OUTCOME"); o == "accepted" {
				break
			} else if i > 50 {
				t.Fatalf("command outcome %s", o)
			}
			<-done
			time.Sleep(100 * time.Millisecond)
		}
		expectLine(t, lines, "OK command")
		<-done
		if out := <-outc; strings.TrimSpace(out) != "c///q//setMode eco" {
			t.Fatalf("mosquitto_sub: %q", out)
		}

		// Request/response from Proton to paho.
		dev, got := e.device("sensor1@iot", "secret1")
		if rc := subscribe(t, dev, "command///req/#", 0); rc != 0 {
			t.Fatalf("SUBACK %#x", rc)
		}
		lines, done = e.protonApp("command", "iot", "dev1", "getState", "?", "py-reply")
		var p *paho.Publish
		select {
		case p = <-got:
		case <-time.After(60 * time.Second):
			t.Fatal("no command")
		}
		reqID := strings.TrimSuffix(strings.TrimPrefix(p.Topic, "command///req/"), "/getState")
		if pr := publish(t, dev, "command///res/"+reqID+"/201", 1, "state"); pr == nil || pr.ReasonCode != 0 {
			t.Fatalf("response PUBACK %+v", pr)
		}
		if o := expectLine(t, lines, "OUTCOME"); o != "accepted" {
			t.Fatalf("outcome %s", o)
		}
		var pm protonMsg
		if err := json.Unmarshal([]byte(expectLine(t, lines, "RESPONSE")), &pm); err != nil {
			t.Fatal(err)
		}
		if pm.Body != "state" || pm.CorrelationID == nil || *pm.CorrelationID != "corr-py" ||
			pm.Props["status"] != float64(201) || pm.Props["device_id"] != "dev1" || pm.Props["tenant_id"] != "iot" {
			t.Fatalf("response %+v", pm)
		}
		expectLine(t, lines, "OK command")
		<-done
	})

	t.Run("gateway commands", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		gw, got := e.device("gw@iot", "gw-secret")
		if rc := subscribe(t, gw, "command//+/req/#", 1); rc != 1 {
			t.Fatalf("SUBACK %#x", rc)
		}
		cmd := e.sender(admin, "command/iot")
		to, name := "command/iot/dev2", "open"
		m := goamqp.NewMessage([]byte("door"))
		m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- cmd.Send(ctx, m, nil) }()
		select {
		case p := <-got:
			if p.Topic != "command//dev2/req//open" {
				t.Fatalf("gateway command topic %q", p.Topic)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no command at the gateway")
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("error topic", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		// With an error subscription, a failed publish is reported there
		// and acknowledged (Hono's on-error "default").
		dev, got := e.device("sensor1@iot", "secret1")
		if rc := subscribe(t, dev, "error///#", 1); rc != 0 {
			t.Fatalf("SUBACK %#x", rc)
		}
		expectError := func(prefix, suffix string, code float64) {
			t.Helper()
			select {
			case p := <-got:
				var body map[string]any
				if !strings.HasPrefix(p.Topic, prefix) || !strings.HasSuffix(p.Topic, suffix) ||
					json.Unmarshal(p.Payload, &body) != nil || body["code"] != code || body["timestamp"] == nil {
					t.Fatalf("error message %q %s", p.Topic, p.Payload)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no error message %s…%s", prefix, suffix)
			}
		}
		if pr := publish(t, dev, "telemetry", 1, "x"); pr == nil || pr.ReasonCode != 0 {
			t.Fatalf("PUBACK %+v", pr)
		}
		expectError("error///telemetry/", "/503", 503)
		publish(t, dev, "t/?correlation-id=abc", 0, "x")
		expectError("error///telemetry/abc/503", "", 503)
		// dev1 is no gateway of dev2, and the error is about dev2, which
		// "error///#" does not cover: refused as without an error
		// subscription.
		if pr := publish(t, dev, "e//dev2", 1, "x"); pr == nil || pr.ReasonCode != 0x87 {
			t.Fatalf("PUBACK %+v", pr)
		}
		if pr := publish(t, dev, "nonsense", 1, "x"); pr == nil || pr.ReasonCode != 0 {
			t.Fatalf("PUBACK %+v", pr)
		}
		expectError("error///telemetry/", "/400", 400)
		// The short form and a gateway's "+".
		gw, ggot := e.device("gw@iot", "gw-secret")
		if rc := subscribe(t, gw, "e//+/#", 0); rc != 0 {
			t.Fatalf("SUBACK %#x", rc)
		}
		if pr := publish(t, gw, "e//dev3/?correlation-id=7", 1, "x"); pr == nil || pr.ReasonCode != 0 {
			t.Fatalf("PUBACK %+v", pr)
		}
		got = ggot
		expectError("e//dev3/e/7/403", "", 403)
	})

	t.Run("tenant isolation", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		other := e.app("app@other", "app-secret")
		for _, addr := range []string{"telemetry/iot", "event/iot", "command_response/iot/x", "telemetry/nosuch"} {
			_, err := e.receiver(other, addr, 1)
			var ae *goamqp.Error
			if !errors.As(err, &ae) || ae.Condition != goamqp.ErrCondUnauthorizedAccess {
				t.Fatalf("app@other receiving %s: %v", addr, err)
			}
		}
		s, err := other.NewSession(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.NewSender(context.Background(), "command/iot", nil); err == nil {
			t.Fatal("app@other may command iot's devices")
		}
		// Its own tenant's addresses work.
		r, err := e.receiver(other, "telemetry/other", 1)
		if err != nil {
			t.Fatal(err)
		}
		r.Close(context.Background())
		// The admin naming a tenant that is not IoT-enabled (or none).
		if _, err := e.receiver(admin, "telemetry/nosuch", 1); err == nil {
			t.Fatal("telemetry/nosuch attached")
		}
	})
}
