package amqp

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// Hono's AMQP device adapter (device.go) with go-amqp as device and as
// application, each on its own connection, over a registry fake: tenant
// iot with devices dev1 (auth-id sensor1), gw, dev2 (via gw, no
// credentials) and dev3 (sensor3).

// fakeDevices is the registry for the authenticator (auth.Devices) and
// the Hono service (hono.Registry). Passwords are salted SHA-256, so no
// bcrypt slows the tests.
type fakeDevices struct {
	mu    sync.Mutex
	devs  map[string]*registry.Device // by tenant/id
	auths map[string]string           // tenant/auth-id → device id
}

const devicePassword = "secret"

func newFakeDevices() *fakeDevices {
	return &fakeDevices{
		devs: map[string]*registry.Device{
			"iot/dev1": {}, "iot/gw": {}, "iot/dev2": {Via: []string{"gw"}}, "iot/dev3": {},
		},
		auths: map[string]string{"iot/sensor1": "dev1", "iot/gw": "gw", "iot/sensor3": "dev3"},
	}
}

func (f *fakeDevices) Device(_ context.Context, t, id string) (*registry.Device, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.devs[t+"/"+id]; ok {
		return d, "1", nil
	}
	return nil, "", registry.ErrNotFound
}

func (f *fakeDevices) Lookup(_ context.Context, t, typ, authID string) (*registry.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.auths[t+"/"+authID]
	if !ok || typ != registry.TypePassword {
		return nil, registry.ErrNotFound
	}
	sum := sha256.Sum256([]byte(devicePassword))
	return &registry.Identity{Tenant: t, DeviceID: id, Device: f.devs[t+"/"+id], Credential: &registry.Credential{
		Type: registry.TypePassword, AuthID: authID,
		Secrets: []registry.Secret{{HashFunction: "sha-256", PwdHash: base64.StdEncoding.EncodeToString(sum[:])}},
	}}, nil
}

func (f *fakeDevices) AutoProvision(context.Context, string, string, registry.Credential, bool) (*registry.Identity, error) {
	return nil, errors.New("not supported")
}

func (f *fakeDevices) OnCredentialsChange(func(tenantName, deviceID string)) {}

// startDeviceEnv is the AMQP platform with the Hono service (and the
// router's implicit Hono addresses, as app wires them), tenant iot
// (IoT-enabled) and its application user app (tenant administrator).
func startDeviceEnv(t *testing.T) *testEnv {
	t.Helper()
	eng, err := engine.Start(engine.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := eng.Connect(engine.SystemAccount)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := tenant.Open(ctx, nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(ctx, router.Config{Engine: eng, Store: store, AnycastTimeout: 5 * time.Second, Implicit: hono.ImplicitType})
	if err != nil {
		t.Fatal(err)
	}
	fd := newFakeDevices()
	e := &testEnv{eng: eng, store: store, r: r, auth: auth.New(store, auth.WithDevices(fd))}
	e.srv, err = New(Config{Router: r, Auth: e.auth, Tenants: store, HandshakeTimeout: time.Minute, Commands: hono.New(fd, r, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if e.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	e.addr = e.ln.Addr().String()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = e.srv.Serve(e.ln)
	}()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.srv.Shutdown(sctx)
		<-served
		r.Close()
		store.Close()
		eng.Shutdown()
	})
	e.tenant(t, &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{}})
	e.user(t, "iot", "app", "app-pw")
	return e
}

func (e *testEnv) deviceSession(t *testing.T, authID string) *goamqp.Session {
	t.Helper()
	return e.slowSession(t, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain(authID+"@iot", devicePassword)})
}

func (e *testEnv) appSession(t *testing.T) *goamqp.Session {
	t.Helper()
	return e.slowSession(t, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("app@iot", "app-pw")})
}

// slowSession is session with room for a bcrypt check on a loaded
// machine under the race detector (the app's password).
func (e *testEnv) slowSession(t *testing.T, opts *goamqp.ConnOptions) *goamqp.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := goamqp.Dial(ctx, e.url(), opts)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	return s
}

// outcome sends m unsettled and returns the delivery state.
func outcome(t *testing.T, s *goamqp.Sender, m *goamqp.Message) goamqp.DeliveryState {
	t.Helper()
	ctx := ctxT(t)
	rc, err := s.SendWithReceipt(ctx, m, nil)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	st, err := rc.Wait(ctx)
	if err != nil {
		t.Fatalf("outcome: %v", err)
	}
	return st
}

// rejected returns the condition of a rejected outcome ("" if not).
func rejected(st goamqp.DeliveryState) string {
	if r, ok := st.(*goamqp.StateRejected); ok && r.Error != nil {
		return string(r.Error.Condition)
	}
	return ""
}

func toMsg(to, body string) *goamqp.Message {
	m := dataMsg(body)
	m.Properties = &goamqp.MessageProperties{To: &to}
	return m
}

func wantAppProps(t *testing.T, m *goamqp.Message, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got := m.ApplicationProperties[k]; got != v {
			t.Errorf("application property %s = %#v (%T), want %#v; all %v", k, got, got, v, m.ApplicationProperties)
		}
	}
}

func TestDeviceTelemetry(t *testing.T) {
	e := startDeviceEnv(t)
	app := e.appSession(t)
	dev := e.deviceSession(t, "sensor1")
	anon := sender(t, dev, "", nil)

	// No consumer: QoS 1 is released, QoS 0 dropped; the link goes on.
	if st := outcome(t, anon, toMsg("telemetry", "x")); !stReleased(st) {
		t.Fatalf("no consumer: %T %v", st, st)
	}
	settled := sender(t, dev, "", &goamqp.SenderOptions{SettlementMode: goamqp.SenderSettleModeSettled.Ptr()})
	send(t, settled, toMsg("t", "dropped"))
	// Published after the pre-settled one, released after it was dropped.
	if st := outcome(t, anon, toMsg("telemetry", "x")); !stReleased(st) {
		t.Fatalf("no consumer: %T %v", st, st)
	}

	tel := receiver(t, app, "telemetry/iot", &goamqp.ReceiverOptions{Credit: 10})
	// QoS 1: the outcome follows the application's.
	ct := "application/json"
	m := toMsg("telemetry", `{"temp":5}`)
	m.Properties.ContentType = &ct
	stc := make(chan goamqp.DeliveryState, 1)
	go func() { stc <- outcome(t, anon, m) }()
	got := recv(t, tel)
	select {
	case st := <-stc:
		t.Fatalf("outcome %T before the application settled", st)
	case <-time.After(200 * time.Millisecond):
	}
	if err := tel.AcceptMessage(ctxT(t), got); err != nil {
		t.Fatal(err)
	}
	if st := <-stc; !stAccepted(st) {
		t.Fatalf("outcome %T", st)
	}
	if string(got.GetData()) != `{"temp":5}` || got.Properties == nil || *got.Properties.ContentType != ct ||
		*got.Properties.To != "telemetry/iot" || got.Properties.CreationTime == nil {
		t.Fatalf("message %+v %q", got.Properties, got.GetData())
	}
	wantAppProps(t, got, map[string]any{"device_id": "dev1", "tenant_id": "iot", "orig_adapter": "hono-amqp",
		"orig_address": "telemetry", "qos": int32(1)})
	if _, ok := got.ApplicationProperties["gateway_id"]; ok {
		t.Error("gateway_id on the device's own message")
	}

	// QoS 0 (pre-settled) on the short name, an amqp-value string body.
	vm := goamqp.NewMessage(nil)
	vm.Data = nil
	vm.Value = "as string"
	to := "t"
	vm.Properties = &goamqp.MessageProperties{To: &to}
	send(t, settled, vm)
	got = recv(t, tel)
	_ = tel.AcceptMessage(ctxT(t), got)
	if string(got.GetData()) != "as string" || *got.Properties.ContentType != "application/octet-stream" {
		t.Fatalf("QoS 0 message %+v %q", got.Properties, got.GetData())
	}
	wantAppProps(t, got, map[string]any{"qos": int32(0), "orig_address": "t"})

	// A link with the fixed target t: the message's to is not consulted.
	fixed := sender(t, dev, "t", nil)
	go func() { stc <- outcome(t, fixed, toMsg("elsewhere", "fixed")) }()
	got = recv(t, tel)
	_ = tel.AcceptMessage(ctxT(t), got)
	wantAppProps(t, got, map[string]any{"orig_address": "t", "device_id": "dev1"})
	if st := <-stc; !stAccepted(st) {
		t.Fatalf("fixed target: %T", st)
	}

	// The application releases: so does the device's outcome.
	go func() { stc <- outcome(t, anon, toMsg("t", "rel")) }()
	got = recv(t, tel)
	_ = tel.ReleaseMessage(ctxT(t), got)
	if st := <-stc; !stReleased(st) {
		t.Fatalf("released by the application: %T", st)
	}
}

func stAccepted(st goamqp.DeliveryState) bool { _, ok := st.(*goamqp.StateAccepted); return ok }
func stReleased(st goamqp.DeliveryState) bool { _, ok := st.(*goamqp.StateReleased); return ok }

func TestDeviceEvents(t *testing.T) {
	e := startDeviceEnv(t)
	dev := e.deviceSession(t, "sensor1")
	// Stored without a consumer; the header's ttl is the event's.
	ev := sender(t, dev, "event", nil)
	m := toMsg("", "alarm")
	m.Header = &goamqp.MessageHeader{TTL: time.Minute}
	if st := outcome(t, ev, m); !stAccepted(st) {
		t.Fatalf("event: %T %v", st, st)
	}
	// A pre-settled event is dropped (Hono: events are at least once).
	settled := sender(t, dev, "", &goamqp.SenderOptions{SettlementMode: goamqp.SenderSettleModeSettled.Ptr()})
	send(t, settled, toMsg("e", "dropped"))
	anon := sender(t, dev, "", nil)
	ct := hono.ContentTypeEmpty
	empty := goamqp.NewMessage(nil)
	to := "e"
	empty.Properties = &goamqp.MessageProperties{To: &to, ContentType: &ct}
	if st := outcome(t, anon, empty); !stAccepted(st) {
		t.Fatalf("empty notification: %T %v", st, st)
	}

	r := receiver(t, e.appSession(t), "event/iot", &goamqp.ReceiverOptions{Credit: 10})
	got := recv(t, r)
	_ = r.AcceptMessage(ctxT(t), got)
	if string(got.GetData()) != "alarm" || got.Header == nil || got.Header.TTL <= 0 || got.Header.TTL > time.Minute || !got.Header.Durable {
		t.Fatalf("event %+v %q", got.Header, got.GetData())
	}
	wantAppProps(t, got, map[string]any{"device_id": "dev1", "orig_adapter": "hono-amqp", "orig_address": "event", "qos": int32(1)})
	got = recv(t, r)
	_ = r.AcceptMessage(ctxT(t), got)
	if got.Properties == nil || got.Properties.ContentType == nil || *got.Properties.ContentType != ct || len(got.GetData()) != 0 {
		t.Fatalf("second event (the pre-settled one must be dropped): %+v %q", got.Properties, got.GetData())
	}
}

func TestDeviceRefusals(t *testing.T) {
	e := startDeviceEnv(t)
	dev := e.deviceSession(t, "sensor1")
	ctx := ctxT(t)
	// Links.
	for _, c := range []struct {
		name string
		err  func() error
		cond goamqp.ErrCond
	}{
		{"ordinary target", func() error { _, err := dev.NewSender(ctx, "orders", nil); return err }, goamqp.ErrCondUnauthorizedAccess},
		{"northbound target", func() error { _, err := dev.NewSender(ctx, "telemetry/iot", nil); return err }, goamqp.ErrCondUnauthorizedAccess},
		{"dynamic target", func() error {
			_, err := dev.NewSender(ctx, "", &goamqp.SenderOptions{DynamicAddress: true})
			return err
		}, goamqp.ErrCondUnauthorizedAccess},
		{"ordinary source", func() error { _, err := dev.NewReceiver(ctx, "#", nil); return err }, goamqp.ErrCondUnauthorizedAccess},
		{"telemetry source", func() error { _, err := dev.NewReceiver(ctx, "telemetry/iot", nil); return err }, goamqp.ErrCondUnauthorizedAccess},
		{"dynamic source", func() error {
			_, err := dev.NewReceiver(ctx, "", &goamqp.ReceiverOptions{DynamicAddress: true})
			return err
		}, goamqp.ErrCondUnauthorizedAccess},
		{"another tenant's commands", func() error { _, err := dev.NewReceiver(ctx, "command/other/dev1", nil); return err }, goamqp.ErrCondUnauthorizedAccess},
		{"not a gateway", func() error { _, err := dev.NewReceiver(ctx, "command//dev2", nil); return err }, goamqp.ErrCondUnauthorizedAccess},
		{"malformed command source", func() error { _, err := dev.NewReceiver(ctx, "command/iot/a+b", nil); return err }, "hono:bad-request"},
		{"settled commands", func() error {
			_, err := dev.NewReceiver(ctx, "command", &goamqp.ReceiverOptions{SettlementMode: goamqp.ReceiverSettleModeFirst.Ptr(),
				RequestedSenderSettleMode: goamqp.SenderSettleModeSettled.Ptr()})
			return err
		}, goamqp.ErrCondNotImplemented},
	} {
		if err := c.err(); condition(err) != string(c.cond) {
			t.Errorf("%s: %v, want %s", c.name, err, c.cond)
		}
	}

	// Messages: rejected with Hono's conditions; the link stays.
	anon := sender(t, dev, "", nil)
	number := goamqp.NewMessage(nil)
	number.Data, number.Value = nil, int64(7)
	to := "t"
	number.Properties = &goamqp.MessageProperties{To: &to}
	empty := goamqp.NewMessage(nil)
	empty.Properties = &goamqp.MessageProperties{To: &to}
	for _, c := range []struct {
		name string
		m    *goamqp.Message
		cond string
	}{
		{"no to", dataMsg("x"), "hono:bad-request"},
		{"not an endpoint", toMsg("orders", "x"), "amqp:not-found"},
		{"northbound name", toMsg("telemetry/iot", "x"), "hono:bad-request"},
		{"property bag", toMsg("telemetry/?content-type=x", "x"), "hono:bad-request"},
		{"not a gateway", toMsg("telemetry/iot/dev2", "x"), "amqp:unauthorized-access"},
		{"another tenant", toMsg("event/other/dev1", "x"), "amqp:unauthorized-access"},
		{"unknown device", toMsg("event//nosuch", "x"), "amqp:unauthorized-access"},
		{"body of another type", number, "hono:bad-request"},
		{"empty without content type", empty, "hono:bad-request"},
		{"response without status", toMsg("command_response/iot/dev1/abc", "x"), "hono:bad-request"},
	} {
		if st := outcome(t, anon, c.m); rejected(st) != c.cond {
			t.Errorf("%s: %T %v, want rejected %s", c.name, st, st, c.cond)
		}
	}
	resp := toMsg("command_response/iot/dev1/bm90LW1pbmU", "x")
	resp.ApplicationProperties = map[string]any{"status": int32(200)}
	resp.Properties.CorrelationID = "c"
	if st := outcome(t, anon, resp); rejected(st) != "hono:bad-request" {
		t.Errorf("response to a reply-to that is not ours: %T %v", st, st)
	}
	if st := outcome(t, anon, toMsg("t", "still here")); !stReleased(st) {
		t.Fatalf("after the refusals: %T %v", st, st)
	}
}

func TestDeviceCommands(t *testing.T) {
	e := startDeviceEnv(t)
	app := e.appSession(t)
	notes := receiver(t, app, "event/iot", &goamqp.ReceiverOptions{Credit: 20})
	cmds := sender(t, app, "command/iot", nil)
	responses := receiver(t, app, "command_response/iot/app-1", &goamqp.ReceiverOptions{Credit: 10})
	command := func(to, name, replyTo string, corr any, body string) chan goamqp.DeliveryState {
		m := dataMsg(body)
		m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name}
		if replyTo != "" {
			m.Properties.ReplyTo, m.Properties.CorrelationID = &replyTo, corr
		}
		stc := make(chan goamqp.DeliveryState, 1)
		go func() { stc <- outcome(t, cmds, m) }()
		return stc
	}
	ttd := func(device string, want int32) {
		t.Helper()
		n := recv(t, notes)
		_ = notes.AcceptMessage(ctxT(t), n)
		if n.Properties == nil || *n.Properties.ContentType != hono.ContentTypeEmpty || n.ApplicationProperties["device_id"] != device ||
			n.ApplicationProperties["ttd"] != want || n.ApplicationProperties["orig_adapter"] != "hono-amqp" {
			t.Fatalf("notification %+v %v, want %s ttd %d", n.Properties, n.ApplicationProperties, device, want)
		}
	}

	// No receiver link yet: released at once.
	if st := <-command("command/iot/dev1", "reboot", "", nil, "x"); !stReleased(st) {
		t.Fatalf("offline device: %T", st)
	}

	dev := e.deviceSession(t, "sensor1")
	in := receiver(t, dev, "command", &goamqp.ReceiverOptions{Credit: 5})
	ttd("dev1", -1)

	// Request/response: accepted by the device, then its response.
	stc := command("command/iot/dev1", "setBrightness", "command_response/iot/app-1", "corr-1", `{"b":79}`)
	c := recv(t, in)
	p := c.Properties
	if p == nil || *p.Subject != "setBrightness" || *p.To != "command/iot/dev1" || p.CorrelationID != "corr-1" ||
		!strings.HasPrefix(*p.ReplyTo, "command_response/iot/dev1/") || string(c.GetData()) != `{"b":79}` {
		t.Fatalf("command %+v %q", p, c.GetData())
	}
	if _, ok := c.ApplicationProperties["device_id"]; ok {
		t.Error("device_id on a command for the device itself")
	}
	select {
	case st := <-stc:
		t.Fatalf("outcome %T before the device settled", st)
	case <-time.After(200 * time.Millisecond):
	}
	if err := in.AcceptMessage(ctxT(t), c); err != nil {
		t.Fatal(err)
	}
	if st := <-stc; !stAccepted(st) {
		t.Fatalf("command outcome %T", st)
	}
	anon := sender(t, dev, "", nil)
	resp := toMsg(*p.ReplyTo, `{"lumen":200}`)
	resp.Properties.CorrelationID = p.CorrelationID
	resp.ApplicationProperties = map[string]any{"status": int32(200)}
	rstc := make(chan goamqp.DeliveryState, 1)
	go func() { rstc <- outcome(t, anon, resp) }()
	r := recv(t, responses)
	_ = responses.AcceptMessage(ctxT(t), r)
	if st := <-rstc; !stAccepted(st) {
		t.Fatalf("response outcome %T", st)
	}
	if r.Properties == nil || r.Properties.CorrelationID != "corr-1" || string(r.GetData()) != `{"lumen":200}` {
		t.Fatalf("response %+v %q", r.Properties, r.GetData())
	}
	wantAppProps(t, r, map[string]any{"device_id": "dev1", "tenant_id": "iot", "status": int32(200)})

	// The device's other outcomes reach the application.
	stc = command("command/iot/dev1", "x", "", nil, "rej")
	if err := in.RejectMessage(ctxT(t), recv(t, in), &goamqp.Error{Condition: "hono:bad-request", Description: "no"}); err != nil {
		t.Fatal(err)
	}
	if st := <-stc; rejected(st) != "hono:bad-request" {
		t.Fatalf("rejected by the device: %T %v", st, st)
	}
	stc = command("command/iot/dev1", "x", "", nil, "rel")
	_ = in.ReleaseMessage(ctxT(t), recv(t, in))
	if st := <-stc; !stReleased(st) {
		t.Fatalf("released by the device: %T", st)
	}
	stc = command("command/iot/dev1", "x", "", nil, "mod")
	_ = in.ModifyMessage(ctxT(t), recv(t, in), &goamqp.ModifyMessageOptions{UndeliverableHere: true})
	if st, ok := (<-stc).(*goamqp.StateModified); !ok || !st.UndeliverableHere {
		t.Fatalf("modified by the device: %T %v", st, st)
	}

	// Closing the link: ttd 0, and commands are released again.
	if err := in.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ttd("dev1", 0)
	if st := <-command("command/iot/dev1", "reboot", "", nil, "x"); !stReleased(st) {
		t.Fatalf("after close: %T", st)
	}
}

func TestDeviceGatewayCommands(t *testing.T) {
	e := startDeviceEnv(t)
	app := e.appSession(t)
	tel := receiver(t, app, "telemetry/iot", &goamqp.ReceiverOptions{Credit: 10})
	cmds := sender(t, app, "command/iot", nil)
	gw := e.deviceSession(t, "gw")

	// Telemetry for a device it serves.
	anon := sender(t, gw, "", nil)
	for _, to := range []string{"telemetry/iot/dev2", "t//dev2"} {
		stc := make(chan goamqp.DeliveryState, 1)
		go func() { stc <- outcome(t, anon, toMsg(to, "for-dev2")) }()
		m := recv(t, tel)
		_ = tel.AcceptMessage(ctxT(t), m)
		wantAppProps(t, m, map[string]any{"device_id": "dev2", "gateway_id": "gw", "orig_address": to})
		if st := <-stc; !stAccepted(st) {
			t.Fatalf("%s: %T", to, st)
		}
	}
	if st := outcome(t, anon, toMsg("telemetry//dev3", "x")); rejected(st) != "amqp:unauthorized-access" {
		t.Fatalf("dev3 does not name gw: %T %v", st, st)
	}

	// "command": its own commands and those of dev2 (no link of its own).
	all := receiver(t, gw, "command", &goamqp.ReceiverOptions{Credit: 5})
	send := func(to, name string) chan goamqp.DeliveryState {
		m := dataMsg("body")
		reply, corr := "command_response/iot/app-2", "c-"+name
		m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name, ReplyTo: &reply, CorrelationID: corr}
		stc := make(chan goamqp.DeliveryState, 1)
		go func() { stc <- outcome(t, cmds, m) }()
		return stc
	}
	for _, target := range []string{"dev2", "gw"} {
		stc := send("command/iot/"+target, "open")
		c := recv(t, all)
		_ = all.AcceptMessage(ctxT(t), c)
		if *c.Properties.To != "command/iot/"+target || !strings.HasPrefix(*c.Properties.ReplyTo, "command_response/iot/"+target+"/") {
			t.Fatalf("command for %s: %+v", target, c.Properties)
		}
		if id, ok := c.ApplicationProperties["device_id"]; target == "dev2" && id != "dev2" || target == "gw" && ok {
			t.Fatalf("command for %s: device_id %v", target, id)
		}
		if st := <-stc; !stAccepted(st) {
			t.Fatalf("command for %s: %T", target, st)
		}
	}

	// A link for dev2 alone wins over "command" (device-specific first).
	one := receiver(t, gw, "command//dev2", &goamqp.ReceiverOptions{Credit: 5})
	stc := send("command/iot/dev2", "close")
	c := recv(t, one)
	_ = one.AcceptMessage(ctxT(t), c)
	if st := <-stc; !stAccepted(st) || c.ApplicationProperties["device_id"] != "dev2" {
		t.Fatalf("command on command//dev2: %T %v", st, c.ApplicationProperties)
	}
	// The gateway's response for dev2 is checked and routed.
	responses := receiver(t, app, "command_response/iot/app-2", &goamqp.ReceiverOptions{Credit: 5})
	resp := toMsg(*c.Properties.ReplyTo, "closed")
	resp.Properties.CorrelationID = c.Properties.CorrelationID
	resp.ApplicationProperties = map[string]any{"status": int32(204)}
	rstc := make(chan goamqp.DeliveryState, 1)
	go func() { rstc <- outcome(t, anon, resp) }()
	r := recv(t, responses)
	_ = responses.AcceptMessage(ctxT(t), r)
	if st := <-rstc; !stAccepted(st) || r.Properties.CorrelationID != "c-close" {
		t.Fatalf("gateway response: %T %+v", st, r.Properties)
	}
	wantAppProps(t, r, map[string]any{"device_id": "dev2", "status": int32(204)})
	// dev1 cannot answer for dev2.
	d1 := sender(t, e.deviceSession(t, "sensor1"), "", nil)
	if st := outcome(t, d1, resp); rejected(st) != "amqp:unauthorized-access" {
		t.Fatalf("dev1 answering for dev2: %T %v", st, st)
	}
}

func TestDeviceCommandCreditAndTimeout(t *testing.T) {
	old := commandSettleTimeout
	commandSettleTimeout = 500 * time.Millisecond
	t.Cleanup(func() { commandSettleTimeout = old })
	e := startDeviceEnv(t)
	cmds := sender(t, e.appSession(t), "command/iot", nil)
	command := func(name string) goamqp.DeliveryState {
		to := "command/iot/dev1"
		m := dataMsg("x")
		m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name}
		return outcome(t, cmds, m)
	}
	dev := e.deviceSession(t, "sensor1")
	// Manual credit, none yet: the command waits for the device's credit
	// (up to the router's anycast timeout; Hono's adapter releases it at
	// once).
	in := receiver(t, dev, "command", &goamqp.ReceiverOptions{Credit: -1})
	stc := make(chan goamqp.DeliveryState, 1)
	go func() { stc <- command("first") }()
	select {
	case st := <-stc:
		t.Fatalf("outcome %T without credit", st)
	case <-time.After(300 * time.Millisecond):
	}
	if err := in.IssueCredit(1); err != nil {
		t.Fatal(err)
	}
	// The device does not settle: released after commandSettleTimeout;
	// its late outcome is ignored.
	m := recv(t, in)
	if *m.Properties.Subject != "first" {
		t.Fatalf("command %+v", m.Properties)
	}
	if st := <-stc; !stReleased(st) {
		t.Fatalf("not settled by the device: %T", st)
	}
	if err := in.AcceptMessage(ctxT(t), m); err != nil {
		t.Fatal(err)
	}
	// The link goes on.
	if err := in.IssueCredit(1); err != nil {
		t.Fatal(err)
	}
	go func() { stc <- command("second") }()
	m = recv(t, in)
	_ = in.AcceptMessage(ctxT(t), m)
	if st := <-stc; !stAccepted(st) || *m.Properties.Subject != "second" {
		t.Fatalf("second: %T %+v", st, m.Properties)
	}
}
