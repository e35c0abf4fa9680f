package testkit_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os/exec"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/testkit"
)

// Hono's HTTP adapter end to end (issue 13): devices are curl and Go's
// net/http, applications go-amqp, on tenants and devices registered
// through /v1. Every status code of Hono's HTTP adapter user guide that
// a test can provoke, commands in the response of a request with
// hono-ttd, command responses, gateways, unauthenticated devices, client
// certificates on the TLS listener, CORS.

type httpEnv struct {
	*honoEnv
	base   string // http://host:port
	tlsURL string // https://host:port
	devCA  *pkiCA
}

func startHonoHTTP(t *testing.T) *httpEnv {
	dir := t.TempDir()
	serverCA := newPKICA(t, dir, "server-ca", pkix.Name{CommonName: "test server CA"})
	cert, key, _ := serverCA.issue(t, dir, "server", pkix.Name{CommonName: "localhost"}, true)
	p := testkit.Start(t, func(c *config.Config) {
		c.TLS.Cert, c.TLS.Key = cert, key
		c.Listeners.HTTPS = "127.0.0.1:0"
	})
	e := &honoEnv{&iotEnv{Platform: p, t: t, dir: dir, serverCA: serverCA}}
	pw := func(tn, dev, authID, secret string) {
		e.v1("PUT", "/v1/credentials/"+tn+"/"+dev, []any{map[string]any{"type": "hashed-password", "auth-id": authID,
			"secrets": []any{map[string]any{"pwd-plain": secret}}}}, 204)
	}
	devCA := newPKICA(t, dir, "device-ca", pkix.Name{CommonName: "devices", Organization: []string{"ACME"}})
	e.v1("POST", "/v1/tenants/iot", map[string]any{"trusted-ca": []any{map[string]any{
		"id": "acme", "cert": base64.StdEncoding.EncodeToString(devCA.cert.Raw)}}}, 201)
	e.v1("POST", "/v1/devices/iot/dev1", map[string]any{}, 201)
	pw("iot", "dev1", "sensor1", "secret1")
	e.v1("POST", "/v1/devices/iot/gw", map[string]any{}, 201)
	pw("iot", "gw", "gw", "gw-secret")
	e.v1("POST", "/v1/devices/iot/dev2", map[string]any{"via": []string{"gw"}}, 201)
	e.v1("POST", "/v1/devices/iot/dev3", map[string]any{}, 201)
	pw("iot", "dev3", "sensor3", "secret3")
	e.v1("POST", "/v1/devices/iot/cdev", map[string]any{}, 201)
	e.v1("PUT", "/v1/credentials/iot/cdev", []any{map[string]any{"type": "x509-cert", "auth-id": "CN=cdev,O=ACME", "secrets": []any{map[string]any{}}}}, 204)
	// A tenant that lets devices publish without credentials over HTTP.
	e.v1("POST", "/v1/tenants/open", map[string]any{"adapters": []any{
		map[string]any{"type": "hono-http", "enabled": true, "device-authentication-required": false}}}, 201)
	e.v1("POST", "/v1/devices/open/open1", map[string]any{}, 201)
	e.v1("POST", "/v1/devices/open/off", map[string]any{"enabled": false}, 201)
	// A tenant whose devices may use MQTT only.
	e.v1("POST", "/v1/tenants/mqttonly", map[string]any{"adapters": []any{
		map[string]any{"type": "hono-mqtt", "enabled": true}}}, 201)
	e.v1("POST", "/v1/devices/mqttonly/m1", map[string]any{}, 201)
	pw("mqttonly", "m1", "m1", "m1-secret")
	// A tenant with a small maximum message size.
	e.v1("POST", "/v1/tenants/small", map[string]any{}, 201)
	e.v1("POST", "/v1/devices/small/s1", map[string]any{}, 201)
	pw("small", "s1", "s1", "s1-secret")
	resp := e.Do(t, "PUT", "/api/tenants/small", strings.NewReader(`{"name":"small","limits":{"maxMessageSize":2048}}`))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("tenant limits: %d", resp.StatusCode)
	}
	return &httpEnv{honoEnv: e, base: "http://" + p.HTTPAddr,
		tlsURL: "https://" + p.App.ListenerAddr("https").String(), devCA: devCA}
}

// req sends a device request with net/http; user "" sends no
// credentials. It returns the response with its body read.
func (e *httpEnv) req(method, path, user, pass string, hdr map[string]string, body string) (*http.Response, string) {
	e.t.Helper()
	return doReq(e.t, http.DefaultClient, method, e.base+path, user, pass, hdr, body)
}

func doReq(t *testing.T, c *http.Client, method, url, user, pass string, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	r, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		r.SetBasicAuth(user, pass)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	resp, err := c.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func (e *httpEnv) status(method, path, user, pass string, hdr map[string]string, body string, want int) *http.Response {
	e.t.Helper()
	resp, b := e.req(method, path, user, pass, hdr, body)
	if resp.StatusCode != want {
		e.t.Fatalf("%s %s as %q: %d, want %d: %s", method, path, user, resp.StatusCode, want, b)
	}
	return resp
}

// curl runs curl -i and returns its output (status line, headers, body).
func (e *httpEnv) curl(args ...string) string {
	e.t.Helper()
	bin := needClient(e.t, "curl", "--version")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-s", "-i"}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

var json1 = map[string]string{"Content-Type": "application/json"}

func TestHonoHTTP(t *testing.T) {
	e := startHonoHTTP(t)
	admin := e.app("", "")

	t.Run("authentication", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		resp := e.status("POST", "/telemetry", "", "", json1, `{}`, 401)
		if resp.Header.Get("WWW-Authenticate") != `Basic realm="Hono"` {
			t.Fatalf("challenge %q", resp.Header.Get("WWW-Authenticate"))
		}
		e.status("POST", "/telemetry", "sensor1@iot", "wrong", json1, `{}`, 401)
		e.status("POST", "/telemetry", "nobody@iot", "x", json1, `{}`, 401)
		e.status("POST", "/telemetry", "sensor1@nosuchtenant", "secret1", json1, `{}`, 401)
		// A user's credentials are not a device's.
		e.status("POST", "/telemetry", e.AdminUser+"@default", e.AdminPassword, json1, `{}`, 403)
		// The tenant does not enable hono-http.
		e.status("POST", "/telemetry", "m1@mqttonly", "m1-secret", json1, `{}`, 403)
		// A long form needs credentials unless the tenant waives them.
		e.status("PUT", "/telemetry/iot/dev1", "", "", json1, `{}`, 401)
		if e.metric("throng_http_requests_total", "endpoint", "telemetry", "status", "401") < 5 {
			t.Fatal("401s not counted")
		}
	})

	t.Run("telemetry without consumer", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		// QoS 0: accepted (Hono: 202 says nothing about delivery).
		e.status("POST", "/telemetry", "sensor1@iot", "secret1", json1, `{"temp":1}`, 202)
		// QoS 1: nobody consumes → 503.
		e.status("POST", "/telemetry", "sensor1@iot", "secret1", map[string]string{"Content-Type": "application/json", "QoS-Level": "1"}, `{"temp":1}`, 503)
		out := e.curl("-u", "sensor1@iot:secret1", "-H", "content-type: application/json", "-H", "qos-level: 1",
			"--data-binary", `{"temp":5}`, e.base+"/telemetry")
		if !strings.HasPrefix(out, "HTTP/1.1 503") {
			t.Fatalf("curl qos 1 without consumer:\n%s", out)
		}
	})

	t.Run("telemetry to application", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		r, err := e.receiver(admin, "telemetry/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		// QoS 1 with curl: 202 only once the application accepted.
		done := make(chan string, 1)
		go func() {
			done <- e.curl("-u", "sensor1@iot:secret1", "-H", "content-type: application/json", "-H", "qos-level: 1",
				"--data-binary", `{"temp":5}`, e.base+"/telemetry?x=1")
		}()
		m := receive(t, r)
		select {
		case out := <-done:
			t.Fatalf("answered before the application settled:\n%s", out)
		case <-time.After(300 * time.Millisecond):
		}
		if err := r.AcceptMessage(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		if out := <-done; !strings.HasPrefix(out, "HTTP/1.1 202") {
			t.Fatalf("curl:\n%s", out)
		}
		if string(m.GetData()) != `{"temp":5}` || m.Properties == nil || m.Properties.ContentType == nil || *m.Properties.ContentType != "application/json" {
			t.Fatalf("message %+v %q", m.Properties, m.GetData())
		}
		if m.Properties.CreationTime == nil || time.Since(*m.Properties.CreationTime) > time.Minute {
			t.Errorf("creation-time %v", m.Properties.CreationTime)
		}
		wantProps(t, m, map[string]any{"device_id": "dev1", "tenant_id": "iot", "orig_adapter": "hono-http",
			"orig_address": "/telemetry?x=1", "qos": int32(1)})
		if _, ok := m.ApplicationProperties["ttd"]; ok {
			t.Errorf("ttd without hono-ttd: %v", m.ApplicationProperties)
		}
		// QoS 0 with net/http, a kept-alive connection: two requests.
		for i := range 2 {
			e.status("POST", "/telemetry", "sensor3@iot", "secret3", map[string]string{"Content-Type": "text/plain"}, fmt.Sprint("m", i), 202)
			m = receive(t, r)
			_ = r.AcceptMessage(context.Background(), m)
			if string(m.GetData()) != fmt.Sprint("m", i) || *m.Properties.ContentType != "text/plain" {
				t.Fatalf("QoS 0 message %+v %q", m.Properties, m.GetData())
			}
			wantProps(t, m, map[string]any{"device_id": "dev3", "qos": int32(0), "orig_address": "/telemetry"})
		}
		// The application releases: the device gets 503.
		go func() {
			m := receive(t, r)
			_ = r.ReleaseMessage(context.Background(), m)
		}()
		e.status("POST", "/telemetry", "sensor1@iot", "secret1", map[string]string{"Content-Type": "text/plain", "QoS-Level": "1"}, "released", 503)
	})

	t.Run("event to late consumer", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		out := e.curl("-u", "sensor1@iot:secret1", "-H", "content-type: application/json", "-H", "hono-ttl: 60",
			"--data-binary", `{"alarm":true}`, e.base+"/event")
		if !strings.HasPrefix(out, "HTTP/1.1 202") {
			t.Fatalf("curl event:\n%s", out)
		}
		// An empty notification, with the ttl as a query parameter.
		e.status("POST", "/event?hono-ttl=30", "sensor3@iot", "secret3",
			map[string]string{"Content-Type": "application/vnd.eclipse-hono-empty-notification"}, "", 202)
		r, err := e.receiver(admin, "event/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		m := receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		if string(m.GetData()) != `{"alarm":true}` || !m.Header.Durable || m.Header.TTL > 60*time.Second || m.Header.TTL < 50*time.Second {
			t.Fatalf("event %+v %+v %q", m.Header, m.Properties, m.GetData())
		}
		wantProps(t, m, map[string]any{"device_id": "dev1", "tenant_id": "iot", "orig_adapter": "hono-http", "orig_address": "/event"})
		m = receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		if len(m.GetData()) != 0 || *m.Properties.ContentType != "application/vnd.eclipse-hono-empty-notification" || m.Header.TTL > 30*time.Second || m.Header.TTL < 20*time.Second {
			t.Fatalf("empty notification %+v %+v %q", m.Header, m.Properties, m.GetData())
		}
		wantProps(t, m, map[string]any{"device_id": "dev3"})
	})

	t.Run("malformed", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		u, pw := "sensor1@iot", "secret1"
		e.status("POST", "/telemetry", u, pw, nil, "no content type", 400)
		e.status("POST", "/telemetry", u, pw, json1, "", 400)
		e.status("POST", "/telemetry", u, pw, map[string]string{"Content-Type": "application/vnd.eclipse-hono-empty-notification"}, "body", 400)
		e.status("POST", "/telemetry", u, pw, map[string]string{"Content-Type": "text/plain", "QoS-Level": "2"}, "x", 400)
		e.status("POST", "/event", u, pw, map[string]string{"Content-Type": "text/plain", "Hono-TTL": "soon"}, "x", 400)
		e.status("PUT", "/telemetry/iot/bad%2Fdevice", u, pw, json1, `{}`, 400)
		e.status("PUT", "/telemetry/Bad_Tenant!/dev1", u, pw, json1, `{}`, 400)
		e.status("POST", "/command/res/not*an*id?hono-cmd-status=200", u, pw, nil, "", 400)
		e.status("POST", "/command/res/c29tZQ?hono-cmd-status=200", u, pw, nil, "", 400) // not one of ours
		e.status("POST", "/command/res/c29tZQ", u, pw, nil, "", 400)                     // no status
		e.status("POST", "/nothing", u, pw, json1, `{}`, 404)
		e.status("PUT", "/telemetry/iot/", u, pw, json1, `{}`, 404)
		resp := e.status("GET", "/telemetry", u, pw, nil, "", 405)
		if resp.Header.Get("Allow") != "POST" {
			t.Fatalf("Allow %q", resp.Header.Get("Allow"))
		}
		e.status("POST", "/telemetry/iot/dev1", u, pw, json1, `{}`, 405)
	})

	t.Run("too large", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		big := strings.Repeat("x", 4096)
		e.status("POST", "/event", "s1@small", "s1-secret", map[string]string{"Content-Type": "text/plain"}, big, 413)
		// Chunked (no Content-Length): cut at the limit.
		r, _ := http.NewRequest("POST", e.base+"/event", io.MultiReader(strings.NewReader(big)))
		r.SetBasicAuth("s1@small", "s1-secret")
		r.Header.Set("Content-Type", "text/plain")
		r.ContentLength = -1
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("chunked: %d", resp.StatusCode)
		}
		e.status("POST", "/event", "s1@small", "s1-secret", map[string]string{"Content-Type": "text/plain"}, "small enough", 202)
	})

	t.Run("gateway", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		r, err := e.receiver(admin, "telemetry/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		out := e.curl("-X", "PUT", "-u", "gw@iot:gw-secret", "-H", "content-type: text/plain", "-H", "qos-level: 0",
			"--data-binary", "for dev2", e.base+"/telemetry/iot/dev2")
		if !strings.HasPrefix(out, "HTTP/1.1 202") {
			t.Fatalf("gateway PUT:\n%s", out)
		}
		m := receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		wantProps(t, m, map[string]any{"device_id": "dev2", "gateway_id": "gw", "orig_address": "/telemetry/iot/dev2"})
		// The tenant may be left out.
		e.status("PUT", "/telemetry//dev2", "gw@iot", "gw-secret", map[string]string{"Content-Type": "text/plain"}, "again", 202)
		m = receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		wantProps(t, m, map[string]any{"device_id": "dev2", "gateway_id": "gw"})
		// Not its gateway, an unknown device, another tenant: 403.
		e.status("PUT", "/telemetry/iot/dev3", "gw@iot", "gw-secret", map[string]string{"Content-Type": "text/plain"}, "x", 403)
		e.status("PUT", "/event/iot/nosuch", "gw@iot", "gw-secret", map[string]string{"Content-Type": "text/plain"}, "x", 403)
		e.status("PUT", "/telemetry/open/open1", "gw@iot", "gw-secret", map[string]string{"Content-Type": "text/plain"}, "x", 403)
		// A device for itself through the long form.
		e.status("PUT", "/telemetry/iot/dev1", "sensor1@iot", "secret1", map[string]string{"Content-Type": "text/plain"}, "self", 202)
		m = receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		wantProps(t, m, map[string]any{"device_id": "dev1"})
		if _, ok := m.ApplicationProperties["gateway_id"]; ok {
			t.Errorf("gateway_id on a device's own message")
		}
	})

	t.Run("unauthenticated device", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		r, err := e.receiver(admin, "telemetry/open", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		out := e.curl("-X", "PUT", "-H", "content-type: application/json",
			"--data-binary", `{"temp":5}`, e.base+"/telemetry/open/open1")
		if !strings.HasPrefix(out, "HTTP/1.1 202") {
			t.Fatalf("unauthenticated PUT:\n%s", out)
		}
		m := receive(t, r)
		_ = r.AcceptMessage(context.Background(), m)
		wantProps(t, m, map[string]any{"device_id": "open1", "tenant_id": "open", "orig_adapter": "hono-http"})
		e.status("PUT", "/telemetry/open/nosuch", "", "", json1, `{}`, 404)
		e.status("PUT", "/event/open/off", "", "", json1, `{}`, 404)
		e.status("POST", "/telemetry", "", "", json1, `{}`, 401)
	})

	t.Run("ttd command and response", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		tel, err := e.receiver(admin, "telemetry/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer tel.Close(context.Background())
		responses, err := e.receiver(admin, "command_response/iot/app-h", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer responses.Close(context.Background())
		cmd := e.sender(admin, "command/iot")
		send := func(to, name, replyTo string, corr any, body string) goamqp.DeliveryState {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m := goamqp.NewMessage([]byte(body))
			ct := "application/json"
			m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name, ContentType: &ct}
			if replyTo != "" {
				m.Properties.ReplyTo = &replyTo
				m.Properties.CorrelationID = corr
			}
			rc, err := cmd.SendWithReceipt(ctx, m, nil)
			if err != nil {
				t.Error(err)
				return nil
			}
			st, err := rc.Wait(ctx)
			if err != nil {
				t.Error(err)
			}
			return st
		}
		// The device waits up to 20 s; the application sees ttd on the
		// telemetry and sends a command, which is the response.
		done := make(chan string, 1)
		go func() {
			done <- e.curl("-u", "sensor1@iot:secret1", "-H", "content-type: application/json", "-H", "hono-ttd: 20",
				"--data-binary", `{"temp":5}`, e.base+"/telemetry")
		}()
		m := receive(t, tel)
		_ = tel.AcceptMessage(context.Background(), m)
		wantProps(t, m, map[string]any{"device_id": "dev1", "ttd": int32(20)})
		stc := make(chan goamqp.DeliveryState, 1)
		go func() {
			stc <- send("command/iot/dev1", "setBrightness", "command_response/iot/app-h", "corr-h", `{"brightness":87}`)
		}()
		out := <-done
		if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, "hono-command: setBrightness") ||
			!strings.HasSuffix(out, `{"brightness":87}`) || !strings.Contains(strings.ToLower(out), "content-type: application/json") {
			t.Fatalf("curl ttd:\n%s", out)
		}
		if strings.Contains(strings.ToLower(out), "hono-cmd-target-device") {
			t.Fatalf("target device for the device itself:\n%s", out)
		}
		var reqID string
		for _, l := range strings.Split(out, "\r\n") {
			if v, ok := strings.CutPrefix(strings.ToLower(l), "hono-cmd-req-id: "); ok {
				reqID = l[len(l)-len(v):]
			}
		}
		if reqID == "" {
			t.Fatalf("no hono-cmd-req-id:\n%s", out)
		}
		if st := <-stc; st == nil {
			t.Fatal("no outcome")
		} else if _, ok := st.(*goamqp.StateAccepted); !ok {
			t.Fatalf("command outcome %T", st)
		}
		// The response, 202 once the application accepted it.
		done2 := make(chan string, 1)
		go func() {
			done2 <- e.curl("-u", "sensor1@iot:secret1", "-H", "content-type: application/json",
				"--data-binary", `{"brightness-changed":true}`, e.base+"/command/res/"+reqID+"?hono-cmd-status=200")
		}()
		resp := receive(t, responses)
		_ = responses.AcceptMessage(context.Background(), resp)
		if out := <-done2; !strings.HasPrefix(out, "HTTP/1.1 202") {
			t.Fatalf("response:\n%s", out)
		}
		if resp.Properties == nil || resp.Properties.CorrelationID != "corr-h" || string(resp.GetData()) != `{"brightness-changed":true}` {
			t.Fatalf("response %+v %q", resp.Properties, resp.GetData())
		}
		wantProps(t, resp, map[string]any{"device_id": "dev1", "tenant_id": "iot", "status": int32(200)})
		// Nobody waits for that reply id any more: 503.
		responses.Close(context.Background())
		e.status("POST", "/command/res/"+reqID, "sensor1@iot", "secret1", map[string]string{"Hono-Cmd-Status": "200"}, "", 503)

		// No command within the ttd: 202 after about a second.
		start := time.Now()
		e.status("POST", "/event", "sensor1@iot", "secret1", map[string]string{"Content-Type": "text/plain", "Hono-Ttd": "1"}, "e", 202)
		if d := time.Since(start); d < 900*time.Millisecond || d > 10*time.Second {
			t.Fatalf("ttd 1 answered after %v", d)
		}
		// A one-way command to a waiting device: no req-id.
		done3 := make(chan *http.Response, 1)
		go func() {
			resp, _ := e.req("POST", "/event?hono-ttd=20", "sensor3@iot", "secret3", map[string]string{"Content-Type": "application/vnd.eclipse-hono-empty-notification"}, "")
			done3 <- resp
		}()
		// The application learns the device waits from the event's ttd;
		// here it retries until the device's consumer is there.
		testkit.Eventually(t, 20*time.Second, func() bool {
			_, ok := send("command/iot/dev3", "reboot", "", nil, "now").(*goamqp.StateAccepted)
			return ok
		})
		r3 := <-done3
		if r3.StatusCode != 200 || r3.Header.Get("Hono-Command") != "reboot" || r3.Header.Get("Hono-Cmd-Req-Id") != "" {
			t.Fatalf("one-way: %d %v", r3.StatusCode, r3.Header)
		}
		if e.metric("throng_http_commands_total", "result", "delivered") < 2 {
			t.Fatal("commands not counted")
		}
	})

	t.Run("gateway ttd", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		done := make(chan *http.Response, 1)
		go func() {
			resp, _ := e.req("PUT", "/event/iot/dev2?hono-ttd=20", "gw@iot", "gw-secret", map[string]string{"Content-Type": "text/plain"}, "hi")
			done <- resp
		}()
		cmd := e.sender(admin, "command/iot")
		testkit.Eventually(t, 20*time.Second, func() bool {
			select {
			case r := <-done:
				t.Fatalf("answered before a command: %d %v", r.StatusCode, r.Header)
			default:
			}
			to, name := "command/iot/dev2", "open"
			m := goamqp.NewMessage([]byte("door"))
			m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rc, err := cmd.SendWithReceipt(ctx, m, nil)
			if err != nil {
				return false
			}
			st, _ := rc.Wait(ctx)
			_, ok := st.(*goamqp.StateAccepted)
			return ok
		})
		r := <-done
		if r.StatusCode != 200 || r.Header.Get("Hono-Command") != "open" || r.Header.Get("Hono-Cmd-Target-Device") != "dev2" {
			t.Fatalf("gateway command: %d %v", r.StatusCode, r.Header)
		}
		// A gateway waiting for itself gets the commands of its devices
		// that have no consumer of their own (as MQTT's "+"), with the
		// target device named.
		done = make(chan *http.Response, 1)
		go func() {
			resp, _ := e.req("POST", "/telemetry?hono-ttd=20", "gw@iot", "gw-secret", map[string]string{"Content-Type": "text/plain"}, "gw")
			done <- resp
		}()
		testkit.Eventually(t, 20*time.Second, func() bool {
			select {
			case r := <-done:
				t.Fatalf("answered before a command: %d %v", r.StatusCode, r.Header)
			default:
			}
			to, name := "command/iot/dev2", "close"
			m := goamqp.NewMessage([]byte("door"))
			m.Properties = &goamqp.MessageProperties{To: &to, Subject: &name}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rc, err := cmd.SendWithReceipt(ctx, m, nil)
			if err != nil {
				return false
			}
			st, _ := rc.Wait(ctx)
			_, ok := st.(*goamqp.StateAccepted)
			return ok
		})
		r = <-done
		if r.StatusCode != 200 || r.Header.Get("Hono-Command") != "close" || r.Header.Get("Hono-Cmd-Target-Device") != "dev2" {
			t.Fatalf("gateway command through its own wait: %d %v", r.StatusCode, r.Header)
		}
		// The event the gateway sent for dev2 is stored.
		ev, err := e.receiver(admin, "event/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer ev.Close(context.Background())
		for {
			m := receive(t, ev)
			_ = ev.AcceptMessage(context.Background(), m)
			if m.ApplicationProperties["device_id"] == "dev2" {
				// A stored message carries its integers as long
				// (docs/hono.md, "Integer widths").
				wantProps(t, m, map[string]any{"gateway_id": "gw"})
				if v := fmt.Sprint(m.ApplicationProperties["ttd"]); v != "20" {
					t.Errorf("ttd %v", m.ApplicationProperties["ttd"])
				}
				break
			}
		}
	})

	t.Run("cors", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		resp := e.status("OPTIONS", "/telemetry", "", "", map[string]string{"Origin": "https://app.example",
			"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type,hono-ttd"}, "", 204)
		h := resp.Header
		if h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Access-Control-Allow-Methods") != "POST" ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "hono-ttd") || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "qos-level") {
			t.Fatalf("preflight %v", h)
		}
		resp = e.status("OPTIONS", "/command/res/iot/dev1/abc", "", "", map[string]string{"Origin": "https://app.example",
			"Access-Control-Request-Method": "PUT"}, "", 204)
		if !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "hono-cmd-status") {
			t.Fatalf("preflight %v", resp.Header)
		}
		e.status("OPTIONS", "/telemetry", "", "", map[string]string{"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"}, "", 403)
		resp = e.status("POST", "/telemetry", "sensor1@iot", "secret1", map[string]string{"Origin": "https://app.example", "Content-Type": "text/plain"}, "x", 202)
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "hono-command") {
			t.Fatalf("CORS headers %v", resp.Header)
		}
		resp = e.status("POST", "/telemetry", "", "", map[string]string{"Origin": "https://app.example", "Content-Type": "text/plain"}, "x", 401)
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("CORS headers on an error %v", resp.Header)
		}
	})

	t.Run("client certificate", func(t *testing.T) {
		e := &httpEnv{&honoEnv{e.in(t)}, e.base, e.tlsURL, e.devCA}
		certFile, keyFile, tlsCert := e.devCA.issue(t, e.dir, "cdev", pkix.Name{CommonName: "cdev", Organization: []string{"ACME"}}, false)
		out := e.curl("--cacert", e.serverCA.file, "--cert", certFile, "--key", keyFile, "-H", "content-type: application/json",
			"--data-binary", `{"temp":5}`, e.tlsURL+"/telemetry")
		if !strings.HasPrefix(out, "HTTP/1.1 202") {
			t.Fatalf("curl with a device certificate:\n%s", out)
		}
		roots := x509.NewCertPool()
		roots.AddCert(e.serverCA.cert)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{tlsCert}}}}
		defer c.CloseIdleConnections()
		r, err := e.receiver(admin, "telemetry/iot", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		got := make(chan *goamqp.Message, 2)
		go func() {
			for range 2 {
				m, err := r.Receive(context.Background(), nil)
				if err != nil {
					return
				}
				_ = r.AcceptMessage(context.Background(), m)
				got <- m
			}
		}()
		for range 2 { // the second on the kept-alive connection
			resp, b := doReq(t, c, "POST", e.tlsURL+"/telemetry", "", "", map[string]string{"Content-Type": "text/plain", "QoS-Level": "1"}, "cert")
			if resp.StatusCode != 202 {
				t.Fatalf("certificate QoS 1: %d %s", resp.StatusCode, b)
			}
			wantProps(t, <-got, map[string]any{"device_id": "cdev", "orig_adapter": "hono-http"})
		}
		// Without a certificate or credentials on TLS: 401.
		c2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		defer c2.CloseIdleConnections()
		if resp, _ := doReq(t, c2, "POST", e.tlsURL+"/telemetry", "", "", json1, `{}`); resp.StatusCode != 401 {
			t.Fatalf("TLS without credentials: %d", resp.StatusCode)
		}
	})
}

// TestHonoHTTPShutdown: a long poll (hono-ttd) does not hold a shutdown
// for its ttd: it is answered 202 when the node stops.
func TestHonoHTTPShutdown(t *testing.T) {
	p := testkit.Start(t)
	e := &iotEnv{Platform: p, t: t}
	e.v1("POST", "/v1/tenants/iot", map[string]any{}, 201)
	e.v1("POST", "/v1/devices/iot/dev1", map[string]any{}, 201)
	e.v1("PUT", "/v1/credentials/iot/dev1", []any{map[string]any{"type": "hashed-password", "auth-id": "sensor1",
		"secrets": []any{map[string]any{"pwd-plain": "secret1"}}}}, 204)
	base := "http://" + p.HTTPAddr
	done := make(chan int, 1)
	start := time.Now()
	go func() {
		r, _ := http.NewRequest("POST", base+"/event?hono-ttd=60", strings.NewReader("x"))
		r.SetBasicAuth("sensor1@iot", "secret1")
		r.Header.Set("Content-Type", "text/plain")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	// Wait until the request waits for its command.
	testkit.Eventually(t, 30*time.Second, func() bool {
		return e.metric("throng_http_requests_total", "endpoint", "event") == 0 && time.Since(start) > 2*time.Second
	})
	p.Restart(t)
	select {
	case st := <-done:
		if st != 202 {
			t.Fatalf("long poll at shutdown: %d", st)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("long poll not answered at shutdown")
	}
	if d := time.Since(start); d > 40*time.Second {
		t.Fatalf("answered after %v", d)
	}
}

// TestHonoHTTPKeepAlive: requests on one kept-alive connection after a
// long poll are not cut by the long poll's write deadline, and the
// connection is reused.
func TestHonoHTTPKeepAlive(t *testing.T) {
	p := testkit.Start(t, func(c *config.Config) { c.Connections.ReadTimeout = config.Duration(time.Second) })
	e := &iotEnv{Platform: p, t: t}
	e.v1("POST", "/v1/tenants/iot", map[string]any{}, 201)
	e.v1("POST", "/v1/devices/iot/dev1", map[string]any{}, 201)
	e.v1("PUT", "/v1/credentials/iot/dev1", []any{map[string]any{"type": "hashed-password", "auth-id": "sensor1",
		"secrets": []any{map[string]any{"pwd-plain": "secret1"}}}}, 204)
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	var conns []string
	for i, ttd := range []string{"1", "", ""} {
		r, _ := http.NewRequest("POST", "http://"+p.HTTPAddr+"/telemetry", strings.NewReader("x"))
		r.SetBasicAuth("sensor1@iot", "secret1")
		r.Header.Set("Content-Type", "text/plain")
		if ttd != "" {
			r.Header.Set("Hono-Ttd", ttd)
		}
		var local string
		r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) { local = ci.Conn.LocalAddr().String() },
		}))
		resp, err := c.Do(r)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 202 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
		conns = append(conns, local)
		// Past the long poll's deadline (ttd + readTimeout), within the
		// idle timeout.
		time.Sleep(2500 * time.Millisecond)
	}
	if conns[0] != conns[1] || conns[1] != conns[2] {
		t.Fatalf("connections %v", conns)
	}
}
