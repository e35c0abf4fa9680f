package testkit_test

import (
	"bufio"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/testkit"
)

// Hono's unauthenticated AMQP devices (docs/hono.md, "Unauthenticated
// devices (AMQP)"): a tenant whose hono-amqp adapter entry has
// "device-authentication-required": false; its devices connect with
// SASL ANONYMOUS (Qpid Proton, go-amqp) or without SASL (go-amqp), and
// name the tenant and device in every address.

// anonDevice starts testdata/hono_device.py without credentials (SASL
// ANONYMOUS).
func (e *honoEnv) anonDevice() *protonDevice {
	e.t.Helper()
	needClient(e.t, protonPython, "-c", "import proton")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, protonPython, filepath.Join("testdata", "hono_device.py"), "amqp://"+e.AMQPAddr)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		cancel()
		e.t.Fatal(err)
	}
	d := &protonDevice{t: e.t, in: in, lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		close(d.lines)
	}()
	e.t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
		cancel()
	})
	d.container = d.next("READY")
	return d
}

// anonGoDevice connects go-amqp without credentials: SASL ANONYMOUS, or
// no SASL layer at all (sasl false).
func (e *honoEnv) anonGoDevice(sasl bool) (*goamqp.Conn, *goamqp.Session) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var opts *goamqp.ConnOptions
	if sasl {
		opts = &goamqp.ConnOptions{SASLType: goamqp.SASLTypeAnonymous()}
	}
	c, err := goamqp.Dial(ctx, "amqp://"+e.AMQPAddr, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return c, s
}

// sendTo sends body to the address (anonymous terminus) unsettled and
// returns the outcome's name (stateName; "error: …" if the send failed).
func sendTo(snd *goamqp.Sender, to, body string, props map[string]any, corr any) string {
	m := goamqp.NewMessage([]byte(body))
	m.Properties = &goamqp.MessageProperties{To: &to, CorrelationID: corr}
	m.ApplicationProperties = props
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rc, err := snd.SendWithReceipt(ctx, m, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	st, err := rc.Wait(ctx)
	if err != nil {
		return "error: " + err.Error()
	}
	return stateName(st)
}

func TestHonoUnauthenticatedAMQP(t *testing.T) {
	e := startHono(t)
	e.v1("POST", "/v1/tenants/open", map[string]any{
		"adapters": []any{map[string]any{"type": "hono-amqp", "enabled": true, "device-authentication-required": false}},
		"ext":      map[string]any{"connection-events": "events"}}, 201)
	e.v1("POST", "/v1/devices/open/open1", map[string]any{}, 201)
	e.v1("POST", "/v1/devices/open/open2", map[string]any{}, 201)
	e.v1("POST", "/v1/devices/open/off", map[string]any{"enabled": false}, 201)
	admin := e.app("", "")
	tel, err := e.receiver(admin, "telemetry/open", 10)
	if err != nil {
		t.Fatal(err)
	}
	events, err := e.receiver(admin, "event/open", 20)
	if err != nil {
		t.Fatal(err)
	}
	accept := func(r *goamqp.Receiver) *goamqp.Message {
		t.Helper()
		m := receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		return m
	}
	contentType := func(m *goamqp.Message) string {
		if m.Properties == nil || m.Properties.ContentType == nil {
			return ""
		}
		return *m.Properties.ContentType
	}

	// go-amqp with SASL ANONYMOUS, a connection per attempt until the
	// AMQP server has seen the new tenant through the store's watch
	// (until then the connection is the default tenant's anonymous one,
	// and the message goes elsewhere).
	var snd *goamqp.Sender
	var s *goamqp.Session
	for i := 0; ; i++ {
		_, s = e.anonGoDevice(true)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		snd, err = s.NewSender(ctx, "", nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		out := make(chan string, 1)
		go func() { out <- sendTo(snd, "telemetry/open/open1", `{"temp":5}`, nil, nil) }()
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
		m, _ := tel.Receive(ctx, nil)
		cancel()
		if m != nil {
			if err := tel.AcceptMessage(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			if o := <-out; o != "accepted" {
				t.Fatalf("outcome %s", o)
			}
			if string(m.GetData()) != `{"temp":5}` || contentType(m) != "application/octet-stream" || *m.Properties.To != "telemetry/open" {
				t.Fatalf("telemetry %+v %q", m.Properties, m.GetData())
			}
			wantProps(t, m, map[string]any{"device_id": "open1", "tenant_id": "open", "orig_adapter": "hono-amqp",
				"orig_address": "telemetry/open/open1", "qos": int32(1)})
			if _, ok := m.ApplicationProperties["gateway_id"]; ok {
				t.Fatalf("gateway_id on an unauthenticated device's message: %v", m.ApplicationProperties)
			}
			break
		}
		if i == 30 {
			t.Fatalf("no telemetry from an unauthenticated go-amqp device (last outcome %s)", <-out)
		}
	}

	// Another device on the same connection (each message names its
	// device), an event with its ttl; refusals on a link that goes on.
	two := make(chan string, 1)
	go func() { two <- sendTo(snd, "t/open/open2", "two", nil, nil) }()
	if m := accept(tel); string(m.GetData()) != "two" {
		t.Fatalf("telemetry %q", m.GetData())
	} else {
		wantProps(t, m, map[string]any{"device_id": "open2", "orig_address": "t/open/open2"})
	}
	if o := <-two; o != "accepted" {
		t.Fatalf("second device: %s", o)
	}
	for _, tc := range []struct{ to, want string }{
		{"telemetry", "rejected hono:bad-request"},        // no tenant and device
		{"event", "rejected hono:bad-request"},            // no tenant and device
		{"telemetry//open1", "rejected hono:bad-request"}, // no tenant
		{"t/open/nobody", "rejected amqp:unauthorized-access"},
		{"t/open/off", "rejected amqp:unauthorized-access"},
		{"t/iot/dev1", "rejected amqp:unauthorized-access"}, // a tenant that requires authentication
		{"orders", "rejected amqp:not-found"},
	} {
		if o := sendTo(snd, tc.to, "x", nil, nil); o != tc.want {
			t.Fatalf("to %s: %s, want %s", tc.to, o, tc.want)
		}
	}
	ev := goamqp.NewMessage([]byte("alarm"))
	to := "e/open/open1"
	ev.Properties = &goamqp.MessageProperties{To: &to}
	ev.Header = &goamqp.MessageHeader{TTL: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = snd.Send(ctx, ev, nil)
	cancel()
	if err != nil {
		t.Fatalf("event: %v", err)
	}
	// No connection event for an unauthenticated device, although the
	// tenant wants them (Hono: the device is not known at connect).
	m := accept(events)
	if string(m.GetData()) != "alarm" || m.Header == nil || m.Header.TTL <= 0 || m.Header.TTL > 30*time.Second || !m.Header.Durable {
		t.Fatalf("event %q %+v %+v (content type %q)", m.GetData(), m.Header, m.Properties, contentType(m))
	}
	wantProps(t, m, map[string]any{"device_id": "open1", "tenant_id": "open", "orig_adapter": "hono-amqp", "qos": int32(1)})

	// Command links: command/T/<device> only.
	for _, src := range []string{"command", "command//open1", "command/iot/dev1", "command/open/nobody"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r, err := s.NewReceiver(ctx, src, nil)
		cancel()
		var ae *goamqp.Error
		if err == nil || !errors.As(err, &ae) {
			t.Fatalf("command link %s: %v %v", src, r, err)
		}
		want := goamqp.ErrCond("hono:bad-request")
		if strings.Count(src, "/") == 2 && !strings.Contains(src, "//") {
			want = goamqp.ErrCondUnauthorizedAccess
		}
		if ae.Condition != want {
			t.Fatalf("command link %s: %v, want %s", src, ae, want)
		}
	}

	// Without SASL at all (go-amqp's default without credentials).
	_, plain := e.anonGoDevice(false)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	psnd, err := plain.NewSender(ctx, "", nil)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() { out <- sendTo(psnd, "telemetry/open/open2", "no sasl", nil, nil) }()
	if m := accept(tel); string(m.GetData()) != "no sasl" {
		t.Fatalf("telemetry %q", m.GetData())
	} else {
		wantProps(t, m, map[string]any{"device_id": "open2", "orig_adapter": "hono-amqp"})
	}
	if o := <-out; o != "accepted" {
		t.Fatalf("no sasl: %s", o)
	}

	// Qpid Proton, SASL ANONYMOUS: a request/response command on
	// command/open/open1 with its ttd notifications, the response, and
	// telemetry.
	dev := e.anonDevice()
	if a := dev.do(map[string]any{"op": "receiver", "source": "command", "credit": 10}); !strings.HasPrefix(a, "REFUSED") {
		t.Fatalf("command without tenant and device: %s", a)
	}
	if a := dev.do(map[string]any{"op": "receiver", "source": "command/open/open1", "credit": 10}); a != "ATTACHED" {
		t.Fatalf("command link: %s", a)
	}
	n := accept(events)
	if contentType(n) != "application/vnd.eclipse-hono-empty-notification" {
		t.Fatalf("notification %+v %q", n.Properties, n.GetData())
	}
	wantProps(t, n, map[string]any{"device_id": "open1", "tenant_id": "open", "ttd": int32(-1), "orig_adapter": "hono-amqp"})
	responses, err := e.receiver(admin, "command_response/open/app-1", 10)
	if err != nil {
		t.Fatal(err)
	}
	cmds := e.sender(admin, "command/open")
	stc := sendCommand(t, cmds, "command/open/open1", "setBrightness", "command_response/open/app-1", "corr-1", `{"brightness":79}`)
	c := dev.command("command/open/open1")
	if c.To != "command/open/open1" || c.Subject != "setBrightness" || c.Body != `{"brightness":79}` || c.CorrelationID == nil ||
		*c.CorrelationID != "corr-1" || c.ReplyTo == nil || !strings.HasPrefix(*c.ReplyTo, "command_response/open/open1/") {
		t.Fatalf("command %+v", c)
	}
	if a := dev.do(map[string]any{"op": "settle", "source": "command/open/open1", "outcome": "accept"}); a != "SETTLED" {
		t.Fatal(a)
	}
	if st := waitState(t, stc); st != "accepted" {
		t.Fatalf("command outcome %s", st)
	}
	dev.request(map[string]any{"op": "send", "to": *c.ReplyTo, "body": `{"ok":true}`, "content_type": "application/json",
		"correlation_id": "corr-1", "status": 200})
	r := accept(responses)
	if o := dev.next("OUTCOME"); o != "accepted" {
		t.Fatalf("response outcome %s", o)
	}
	if string(r.GetData()) != `{"ok":true}` || r.Properties == nil || r.Properties.CorrelationID != "corr-1" {
		t.Fatalf("response %+v %q", r.Properties, r.GetData())
	}
	wantProps(t, r, map[string]any{"device_id": "open1", "tenant_id": "open", "status": int32(200)})
	dev.request(map[string]any{"op": "send", "to": "telemetry/open/open1", "body": "proton", "settled": true})
	if o := dev.next("OUTCOME"); o != "settled" {
		t.Fatal(o)
	}
	if m := accept(tel); string(m.GetData()) != "proton" {
		t.Fatalf("telemetry %q", m.GetData())
	} else {
		wantProps(t, m, map[string]any{"device_id": "open1", "qos": int32(0), "orig_address": "telemetry/open/open1"})
	}
	dev.request(map[string]any{"op": "quit"})
	dev.next("BYE")
	n = accept(events)
	if contentType(n) != "application/vnd.eclipse-hono-empty-notification" {
		t.Fatalf("after quit: %+v %q (no disconnected event for an unauthenticated device)", n.Properties, n.GetData())
	}
	wantProps(t, n, map[string]any{"device_id": "open1", "ttd": int32(0)})

	// The tenant requires authentication again: the next message of an
	// open unauthenticated connection is refused (nobody consumes
	// telemetry now: released until the change arrives).
	_ = tel.Close(context.Background())
	if o := sendTo(snd, "telemetry/open/open1", "nobody", nil, nil); o != "released" {
		t.Fatalf("no consumer: %s", o)
	}
	e.v1("PUT", "/v1/tenants/open", map[string]any{
		"adapters": []any{map[string]any{"type": "hono-amqp", "enabled": true}}}, 204)
	testkit.Eventually(t, 30*time.Second, func() bool {
		return sendTo(snd, "telemetry/open/open1", "late", nil, nil) == "rejected amqp:unauthorized-access"
	})
}
