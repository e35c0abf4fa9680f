package testkit_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
)

// Hono's AMQP device adapter end to end (issue 13): Qpid Proton devices
// (testdata/hono_device.py, each its own process and connection) on the
// platform's AMQP listener, go-amqp applications on their own
// connections consuming telemetry/T and event/T and sending commands,
// paho.golang as an MQTT device beside them; tenant, devices and
// credentials registered through /v1 (startHono).

// protonDevice is a running hono_device.py.
type protonDevice struct {
	t         *testing.T
	in        io.WriteCloser
	lines     chan string
	container string // its AMQP container-id
}

// amqpDevice starts a Proton device authenticated as user (auth-id@tenant).
func (e *honoEnv) amqpDevice(user, pass string) *protonDevice {
	e.t.Helper()
	needClient(e.t, protonPython, "-c", "import proton")
	ctx, cancel := context.WithCancel(context.Background())
	u := "amqp://" + url.UserPassword(user, pass).String() + "@" + e.AMQPAddr
	cmd := exec.CommandContext(ctx, protonPython, filepath.Join("testdata", "hono_device.py"), u)
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

// next returns the device's next output line, which must start with
// prefix, without the prefix.
func (d *protonDevice) next(prefix string) string {
	d.t.Helper()
	select {
	case l, ok := <-d.lines:
		if !ok {
			d.t.Fatalf("device ended, want %q", prefix)
		}
		rest, found := strings.CutPrefix(l, prefix)
		if !found {
			more := []string{l}
			for l := range d.lines { // a traceback: the process ends
				more = append(more, l)
			}
			d.t.Fatalf("device said:\n%s\nwant %q", strings.Join(more, "\n"), prefix)
		}
		return strings.TrimSpace(rest)
	case <-time.After(90 * time.Second):
		d.t.Fatalf("device silent, want %q", prefix)
	}
	return ""
}

// request sends one request line; its answer is read with next.
func (d *protonDevice) request(req map[string]any) {
	d.t.Helper()
	b, _ := json.Marshal(req)
	if _, err := d.in.Write(append(b, '\n')); err != nil {
		d.t.Fatal(err)
	}
}

// do sends a request and returns its answer line.
func (d *protonDevice) do(req map[string]any) string {
	d.t.Helper()
	d.request(req)
	return d.next("")
}

// quiet asserts that the device says nothing for a while (it waits for
// an outcome).
func (d *protonDevice) quiet(wait time.Duration) {
	d.t.Helper()
	select {
	case l := <-d.lines:
		d.t.Fatalf("device said %q early", l)
	case <-time.After(wait):
	}
}

type deviceCmd struct {
	To            string         `json:"to"`
	Subject       string         `json:"subject"`
	CorrelationID *string        `json:"correlation_id"`
	ReplyTo       *string        `json:"reply_to"`
	ContentType   *string        `json:"content_type"`
	Body          string         `json:"body"`
	Props         map[string]any `json:"props"`
}

func (d *protonDevice) command(source string) deviceCmd {
	d.t.Helper()
	d.request(map[string]any{"op": "recv", "source": source, "timeout": 60})
	var c deviceCmd
	if err := json.Unmarshal([]byte(d.next("CMD")), &c); err != nil {
		d.t.Fatal(err)
	}
	return c
}

// sendCommand sends a command from the application; the channel gets its
// outcome.
func sendCommand(t *testing.T, s *goamqp.Sender, to, name, replyTo string, corr any, body string) chan goamqp.DeliveryState {
	m := goamqp.NewMessage([]byte(body))
	m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name}
	if replyTo != "" {
		m.Properties.ReplyTo, m.Properties.CorrelationID = &replyTo, corr
	}
	stc := make(chan goamqp.DeliveryState, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		rc, err := s.SendWithReceipt(ctx, m, nil)
		if err != nil {
			t.Error(err)
			stc <- nil
			return
		}
		st, err := rc.Wait(ctx)
		if err != nil {
			t.Error(err)
		}
		stc <- st
	}()
	return stc
}

func stateName(st goamqp.DeliveryState) string {
	switch st := st.(type) {
	case *goamqp.StateAccepted:
		return "accepted"
	case *goamqp.StateReleased:
		return "released"
	case *goamqp.StateRejected:
		if st.Error != nil {
			return "rejected " + string(st.Error.Condition)
		}
		return "rejected"
	case *goamqp.StateModified:
		return "modified"
	}
	return "none"
}

// waitState waits for an outcome on stc.
func waitState(t *testing.T, stc chan goamqp.DeliveryState) string {
	t.Helper()
	select {
	case st := <-stc:
		return stateName(st)
	case <-time.After(90 * time.Second):
		t.Fatal("no outcome")
	}
	return ""
}

func TestHonoAMQP(t *testing.T) {
	e := startHono(t)
	admin := e.app("", "")

	t.Run("telemetry without consumer", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		dev := e.amqpDevice("sensor1@iot", "secret1")
		// QoS 1: released (Hono: no downstream consumer); QoS 0 dropped;
		// the connection and its link go on.
		if o := dev.do(map[string]any{"op": "send", "to": "telemetry", "body": "x"}); o != "OUTCOME released" {
			t.Fatalf("unsettled: %s", o)
		}
		if o := dev.do(map[string]any{"op": "send", "to": "t", "body": "x", "settled": true}); o != "OUTCOME settled" {
			t.Fatalf("settled: %s", o)
		}
		if o := dev.do(map[string]any{"op": "send", "to": "t", "body": "x"}); o != "OUTCOME released" {
			t.Fatalf("again: %s", o)
		}
	})

	t.Run("telemetry to application", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		r, err := e.receiver(admin, "telemetry/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		dev := e.amqpDevice("sensor1@iot", "secret1")
		// QoS 1: the outcome follows the application's acceptance.
		dev.request(map[string]any{"op": "send", "to": "telemetry", "body": `{"temp":5}`, "content_type": "application/json"})
		m := receive(t, r)
		dev.quiet(300 * time.Millisecond)
		if err := r.AcceptMessage(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		if o := dev.next("OUTCOME"); o != "accepted" {
			t.Fatalf("outcome %s", o)
		}
		if string(m.GetData()) != `{"temp":5}` || m.Properties == nil || m.Properties.ContentType == nil ||
			*m.Properties.ContentType != "application/json" || m.Properties.CreationTime == nil || *m.Properties.To != "telemetry/iot" {
			t.Fatalf("message %+v %q", m.Properties, m.GetData())
		}
		wantProps(t, m, map[string]any{"device_id": "dev1", "tenant_id": "iot", "orig_adapter": "hono-amqp",
			"orig_address": "telemetry", "qos": int32(1)})
		if m.Header == nil || !m.Header.Durable {
			t.Errorf("QoS 1 telemetry not durable: %+v", m.Header)
		}

		// QoS 0, an amqp-value string body, the short name.
		if o := dev.do(map[string]any{"op": "send", "to": "t", "body": "as value", "value": true, "settled": true}); o != "OUTCOME settled" {
			t.Fatalf("settled: %s", o)
		}
		m = receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		if string(m.GetData()) != "as value" || *m.Properties.ContentType != "application/octet-stream" {
			t.Fatalf("QoS 0 message %+v %q", m.Properties, m.GetData())
		}
		wantProps(t, m, map[string]any{"device_id": "dev1", "qos": int32(0), "orig_address": "t", "orig_adapter": "hono-amqp"})

		// A sender link with the target "telemetry".
		dev.request(map[string]any{"op": "send", "link": "telemetry", "body": "fixed"})
		m = receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		if o := dev.next("OUTCOME"); o != "accepted" {
			t.Fatalf("fixed target: %s", o)
		}
		wantProps(t, m, map[string]any{"orig_address": "telemetry", "device_id": "dev1"})

		// The application releases it: so does the device's outcome.
		dev.request(map[string]any{"op": "send", "to": "t", "body": "no"})
		m = receive(t, r)
		_ = r.ReleaseMessage(context.Background(), m)
		if o := dev.next("OUTCOME"); o != "released" {
			t.Fatalf("released by the application: %s", o)
		}
	})

	t.Run("events", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		dev := e.amqpDevice("sensor3@iot", "secret3")
		// Stored without a consumer, with the header's ttl.
		if o := dev.do(map[string]any{"op": "send", "to": "event", "body": "alarm", "content_type": "text/plain", "ttl": 60}); o != "OUTCOME accepted" {
			t.Fatalf("event: %s", o)
		}
		// Pre-settled: dropped (Hono accepts events at least once only).
		if o := dev.do(map[string]any{"op": "send", "to": "e", "body": "dropped", "settled": true}); o != "OUTCOME settled" {
			t.Fatalf("settled event: %s", o)
		}
		if o := dev.do(map[string]any{"op": "send", "link": "e", "body": "second"}); o != "OUTCOME accepted" {
			t.Fatalf("event on the e link: %s", o)
		}
		// The application attaches later.
		r, err := e.receiver(admin, "event/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		m := receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		if string(m.GetData()) != "alarm" || *m.Properties.ContentType != "text/plain" || m.Header == nil ||
			m.Header.TTL <= 0 || m.Header.TTL > time.Minute || !m.Header.Durable {
			t.Fatalf("event %+v %+v %q", m.Header, m.Properties, m.GetData())
		}
		wantProps(t, m, map[string]any{"device_id": "dev3", "tenant_id": "iot", "orig_adapter": "hono-amqp", "orig_address": "event", "qos": int32(1)})
		m = receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		if string(m.GetData()) != "second" {
			t.Fatalf("second event %q (the pre-settled one must be dropped)", m.GetData())
		}
		wantProps(t, m, map[string]any{"orig_address": "e"})
	})

	t.Run("gateway", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		r, err := e.receiver(admin, "telemetry/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		gw := e.amqpDevice("gw@iot", "gw-secret")
		for _, to := range []string{"telemetry/iot/dev2", "t//dev2"} {
			gw.request(map[string]any{"op": "send", "to": to, "body": "for-dev2"})
			m := receive(t, r)
			_ = r.AcceptMessage(context.Background(), m)
			if o := gw.next("OUTCOME"); o != "accepted" {
				t.Fatalf("%s: %s", to, o)
			}
			wantProps(t, m, map[string]any{"device_id": "dev2", "gateway_id": "gw", "tenant_id": "iot", "orig_address": to, "orig_adapter": "hono-amqp"})
		}
		// dev3 does not name gw in via; another tenant; dev1 is no gateway.
		for _, to := range []string{"telemetry//dev3", "telemetry/other/dev2", "e/other/dev2"} {
			if o := gw.do(map[string]any{"op": "send", "to": to, "body": "x"}); o != "OUTCOME rejected amqp:unauthorized-access" {
				t.Fatalf("gateway to %s: %s", to, o)
			}
		}
		d1 := e.amqpDevice("sensor1@iot", "secret1")
		if o := d1.do(map[string]any{"op": "send", "to": "e//dev2", "body": "x"}); o != "OUTCOME rejected amqp:unauthorized-access" {
			t.Fatalf("dev1 for dev2: %s", o)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		dev := e.amqpDevice("sensor1@iot", "secret1")
		for _, c := range []struct{ req, want string }{
			{`{"op": "send", "link": "orders", "body": "x"}`, "amqp:unauthorized-access"},
			{`{"op": "receiver", "source": "#"}`, "amqp:unauthorized-access"},
			{`{"op": "receiver", "source": "telemetry/iot"}`, "amqp:unauthorized-access"},
			{`{"op": "receiver", "source": "command/other/dev1"}`, "amqp:unauthorized-access"},
			{`{"op": "receiver", "source": "command//dev2"}`, "amqp:unauthorized-access"},
			{`{"op": "receiver", "source": "command/iot/a+b"}`, "hono:bad-request"},
		} {
			var req map[string]any
			_ = json.Unmarshal([]byte(c.req), &req)
			if o := dev.do(req); !strings.HasPrefix(o, "REFUSED") || !strings.Contains(o, c.want) {
				t.Fatalf("%s: %s, want refused with %s", c.req, o, c.want)
			}
		}
		for _, c := range []struct {
			req  map[string]any
			want string
		}{
			{map[string]any{"op": "send", "body": "x"}, "hono:bad-request"},
			{map[string]any{"op": "send", "to": "nonsense", "body": "x"}, "amqp:not-found"},
			{map[string]any{"op": "send", "to": "telemetry/iot", "body": "x"}, "hono:bad-request"},
			{map[string]any{"op": "send", "to": "telemetry"}, "hono:bad-request"}, // empty, no content type
			{map[string]any{"op": "send", "to": "command_response/iot/dev1/xyz", "body": "x", "status": 200, "correlation_id": "c"}, "hono:bad-request"},
			{map[string]any{"op": "send", "to": "command_response/iot/dev1/xyz", "body": "x", "correlation_id": "c"}, "hono:bad-request"},
		} {
			if o := dev.do(c.req); o != "OUTCOME rejected "+c.want {
				t.Fatalf("%v: %s, want rejected %s", c.req, o, c.want)
			}
		}
		// The connection is still usable.
		if o := dev.do(map[string]any{"op": "send", "to": "t", "body": "x"}); o != "OUTCOME released" {
			t.Fatalf("after the refusals: %s", o)
		}
	})

	t.Run("commands", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		notes, err := e.receiver(admin, "event/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer notes.Close(context.Background())
		ttd := func(device string, want int32) {
			t.Helper()
			n := receive(t, notes)
			_ = notes.AcceptMessage(context.Background(), n)
			if n.Properties == nil || n.Properties.ContentType == nil || *n.Properties.ContentType != "application/vnd.eclipse-hono-empty-notification" {
				t.Fatalf("notification %+v", n.Properties)
			}
			wantProps(t, n, map[string]any{"device_id": device, "ttd": want, "orig_adapter": "hono-amqp"})
		}
		responses, err := e.receiver(admin, "command_response/iot/app-1", 10)
		if err != nil {
			t.Fatal(err)
		}
		cmd := e.sender(admin, "command/iot")

		dev := e.amqpDevice("sensor1@iot", "secret1")
		if o := dev.do(map[string]any{"op": "receiver", "source": "command"}); o != "ATTACHED" {
			t.Fatalf("command link: %s", o)
		}
		ttd("dev1", -1)

		// Request/response: the outcome once the device accepted it, the
		// response on the same sender link as telemetry.
		stc := sendCommand(t, cmd, "command/iot/dev1", "setBrightness", "command_response/iot/app-1", "corr-1", `{"brightness":79}`)
		c := dev.command("command")
		if c.Subject != "setBrightness" || c.To != "command/iot/dev1" || c.CorrelationID == nil || *c.CorrelationID != "corr-1" ||
			c.ReplyTo == nil || !strings.HasPrefix(*c.ReplyTo, "command_response/iot/dev1/") || c.Body != `{"brightness":79}` {
			t.Fatalf("command %+v", c)
		}
		if _, ok := c.Props["device_id"]; ok {
			t.Errorf("device_id on the device's own command: %v", c.Props)
		}
		select {
		case st := <-stc:
			t.Fatalf("outcome %s before the device settled", stateName(st))
		case <-time.After(300 * time.Millisecond):
		}
		dev.do(map[string]any{"op": "settle", "source": "command", "outcome": "accept"})
		if o := waitState(t, stc); o != "accepted" {
			t.Fatalf("command outcome %s", o)
		}
		dev.request(map[string]any{"op": "send", "to": *c.ReplyTo, "correlation_id": *c.CorrelationID, "status": 200,
			"body": `{"lumen":200}`, "content_type": "application/json"})
		resp := receive(t, responses)
		_ = responses.AcceptMessage(context.Background(), resp)
		if o := dev.next("OUTCOME"); o != "accepted" {
			t.Fatalf("response outcome %s", o)
		}
		if resp.Properties == nil || resp.Properties.CorrelationID != "corr-1" || string(resp.GetData()) != `{"lumen":200}` ||
			resp.Properties.ContentType == nil || *resp.Properties.ContentType != "application/json" {
			t.Fatalf("response %+v %q", resp.Properties, resp.GetData())
		}
		wantProps(t, resp, map[string]any{"device_id": "dev1", "tenant_id": "iot", "status": int32(200)})

		// One-way, from a Proton application: no correlation-id, no reply-to.
		lines, done := e.protonApp("command", "iot", "dev1", "reboot", "now", "-")
		c = dev.command("command")
		if c.Subject != "reboot" || c.Body != "now" || c.CorrelationID != nil || c.ReplyTo != nil || c.ContentType == nil || *c.ContentType != "text/plain" {
			t.Fatalf("one-way command %+v", c)
		}
		dev.do(map[string]any{"op": "settle", "source": "command", "outcome": "accept"})
		if o := expectLine(t, lines, "OUTCOME"); o != "accepted" {
			t.Fatalf("one-way outcome %s", o)
		}
		<-done

		// The device rejects or releases: the application learns it.
		for _, o := range []struct{ settle, want string }{{"reject", "rejected"}, {"release", "released"}} {
			stc = sendCommand(t, cmd, "command/iot/dev1", "x", "", nil, o.settle)
			dev.command("command")
			dev.do(map[string]any{"op": "settle", "source": "command", "outcome": o.settle})
			if got := waitState(t, stc); !strings.HasPrefix(got, o.want) {
				t.Fatalf("%s by the device: %s", o.settle, got)
			}
		}

		// Closing the link: ttd 0, then commands are released at once.
		if o := dev.do(map[string]any{"op": "close", "source": "command"}); o != "CLOSED" {
			t.Fatal(o)
		}
		ttd("dev1", 0)
		if o := waitState(t, sendCommand(t, cmd, "command/iot/dev1", "x", "", nil, "late")); o != "released" {
			t.Fatalf("after close: %s", o)
		}
	})

	t.Run("gateway commands", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		responses, err := e.receiver(admin, "command_response/iot/app-gw", 10)
		if err != nil {
			t.Fatal(err)
		}
		cmd := e.sender(admin, "command/iot")
		gw := e.amqpDevice("gw@iot", "gw-secret")
		if o := gw.do(map[string]any{"op": "receiver", "source": "command"}); o != "ATTACHED" {
			t.Fatalf("command link: %s", o)
		}
		// dev2 has no link of its own: its gateway's "command" gets it.
		stc := sendCommand(t, cmd, "command/iot/dev2", "open", "command_response/iot/app-gw", uint64(42), "door")
		c := gw.command("command")
		if c.To != "command/iot/dev2" || c.Props["device_id"] != "dev2" || c.ReplyTo == nil ||
			!strings.HasPrefix(*c.ReplyTo, "command_response/iot/dev2/") || c.Body != "door" {
			t.Fatalf("gateway command %+v", c)
		}
		gw.do(map[string]any{"op": "settle", "source": "command", "outcome": "accept"})
		if o := waitState(t, stc); o != "accepted" {
			t.Fatalf("outcome %s", o)
		}
		// The gateway answers for dev2 (a ulong correlation id comes back
		// as the application sent it).
		gw.request(map[string]any{"op": "send", "to": *c.ReplyTo, "correlation_id": "42", "status": 204})
		resp := receive(t, responses)
		_ = responses.AcceptMessage(context.Background(), resp)
		if o := gw.next("OUTCOME"); o != "accepted" {
			t.Fatalf("response outcome %s", o)
		}
		if resp.Properties == nil || resp.Properties.CorrelationID != uint64(42) {
			t.Fatalf("response %+v", resp.Properties)
		}
		wantProps(t, resp, map[string]any{"device_id": "dev2", "status": int32(204)})
		// A link for dev2 alone.
		if o := gw.do(map[string]any{"op": "receiver", "source": "command//dev2"}); o != "ATTACHED" {
			t.Fatalf("command//dev2: %s", o)
		}
		stc = sendCommand(t, cmd, "command/iot/dev2", "close", "", nil, "door")
		c = gw.command("command//dev2")
		gw.do(map[string]any{"op": "settle", "source": "command//dev2", "outcome": "accept"})
		if o := waitState(t, stc); o != "accepted" || c.Subject != "close" || c.Props["device_id"] != "dev2" {
			t.Fatalf("command on command//dev2: %s %+v", o, c)
		}
	})

	t.Run("connection events", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		e.honoTenant("ceamqp", map[string]any{"ext": map[string]any{"connection-events": "events"}}, map[string]any{})
		events, err := e.receiver(admin, "event/ceamqp", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer events.Close(context.Background())
		dev := e.amqpDevice("dev@ceamqp", "dev-secret")
		wantConnectionEvent(t, receiveAccept(t, events), "ceamqp", "dev", "connected", dev.container, "hono-amqp")
		if o := dev.do(map[string]any{"op": "receiver", "source": "command"}); o != "ATTACHED" {
			t.Fatalf("command link: %s", o)
		}
		wantTTD(t, receiveAccept(t, events), -1)
		// The connection ends: ttd 0, then the disconnected event.
		dev.request(map[string]any{"op": "quit"})
		dev.next("BYE")
		wantTTD(t, receiveAccept(t, events), 0)
		wantConnectionEvent(t, receiveAccept(t, events), "ceamqp", "dev", "disconnected", dev.container, "hono-amqp")
	})

	t.Run("cross-protocol commands", func(t *testing.T) {
		e := &honoEnv{e.in(t)}
		cmd := e.sender(admin, "command/iot")
		responses, err := e.receiver(admin, "command_response/iot/app-x", 10)
		if err != nil {
			t.Fatal(err)
		}
		// dev3 on MQTT (paho), dev1 on AMQP (Proton), at the same time.
		mq, got := e.device("sensor3@iot", "secret3")
		if rc := subscribe(t, mq, "command///req/#", 1); rc != 1 {
			t.Fatalf("SUBACK %#x", rc)
		}
		dev := e.amqpDevice("sensor1@iot", "secret1")
		if o := dev.do(map[string]any{"op": "receiver", "source": "command"}); o != "ATTACHED" {
			t.Fatalf("command link: %s", o)
		}
		stAMQP := sendCommand(t, cmd, "command/iot/dev1", "toAMQP", "command_response/iot/app-x", "amqp-1", "a")
		stMQTT := sendCommand(t, cmd, "command/iot/dev3", "toMQTT", "command_response/iot/app-x", "mqtt-1", "m")
		var p *paho.Publish
		select {
		case p = <-got:
		case <-time.After(60 * time.Second):
			t.Fatal("no MQTT command")
		}
		if !strings.HasSuffix(p.Topic, "/toMQTT") || string(p.Payload) != "m" {
			t.Fatalf("MQTT command %q %q", p.Topic, p.Payload)
		}
		c := dev.command("command")
		if c.Subject != "toAMQP" || c.Body != "a" {
			t.Fatalf("AMQP command %+v", c)
		}
		dev.do(map[string]any{"op": "settle", "source": "command", "outcome": "accept"})
		if o := waitState(t, stAMQP); o != "accepted" {
			t.Fatalf("AMQP device outcome %s", o)
		}
		if o := waitState(t, stMQTT); o != "accepted" {
			t.Fatalf("MQTT device outcome %s", o)
		}
		// Both answer, each in its protocol.
		reqID := strings.TrimSuffix(strings.TrimPrefix(p.Topic, "command///req/"), "/toMQTT")
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, _ = mq.Publish(ctx, &paho.Publish{Topic: "command///res/" + reqID + "/200", QoS: 1, Payload: []byte("from-mqtt")})
		}()
		dev.request(map[string]any{"op": "send", "to": *c.ReplyTo, "correlation_id": *c.CorrelationID, "status": 201, "body": "from-amqp"})
		seen := map[string]any{}
		for range 2 {
			r := receive(t, responses)
			_ = responses.AcceptMessage(context.Background(), r)
			seen[string(r.GetData())] = r.Properties.CorrelationID
			wantProps(t, r, map[string]any{"tenant_id": "iot"})
		}
		if seen["from-mqtt"] != "mqtt-1" || seen["from-amqp"] != "amqp-1" {
			t.Fatalf("responses %v", seen)
		}
		if o := dev.next("OUTCOME"); o != "accepted" {
			t.Fatalf("AMQP response outcome %s", o)
		}
	})
}
