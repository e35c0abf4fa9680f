package testkit_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/testkit"
)

// The plain REST messaging API (issue 13, docs/http-messaging.md) end to
// end: applications publish and receive over HTTP with Go's net/http and
// curl, and meet go-amqp and mosquitto clients on the same addresses.
// Addresses and users are made through the admin API, as an operator
// would.

type hmEnv struct {
	*testkit.Platform
	t    *testing.T
	base string // http://host:port/api/v1
}

const (
	hmUser = "app"
	hmPass = "app-secret"
)

func startHTTPMessaging(t *testing.T) *hmEnv {
	p := testkit.Start(t)
	e := &hmEnv{Platform: p, t: t, base: "http://" + p.HTTPAddr + "/api/v1"}
	e.admin("POST", "/api/tenants/default/users", `{"name":"app","password":"app-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`)
	e.admin("POST", "/api/tenants/default/users", `{"name":"sender","password":"sender-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send"]}]}`)
	e.admin("POST", "/api/tenants/default/users", `{"name":"nobody","password":"nobody-secret","roles":["app"],"permissions":[]}`)
	e.admin("POST", "/api/tenants", `{"name":"strict","strict":true,"limits":{"maxMessageSize":1024}}`)
	e.admin("POST", "/api/tenants/strict/users", `{"name":"app","password":"app-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`)
	for _, a := range []string{
		`{"name":"orders","type":"queue"}`,
		`{"name":"h2a","type":"queue"}`,
		`{"name":"a2h","type":"queue"}`,
		`{"name":"m2h","type":"queue"}`,
		`{"name":"h2m","type":"queue"}`,
		`{"name":"redeliver","type":"queue"}`,
		`{"name":"settle-dlq","type":"queue"}`,
		`{"name":"settle","type":"queue","limits":{"maxDeliveries":5},"deadLetter":"settle-dlq"}`,
		`{"name":"shared","type":"queue"}`,
		`{"name":"poll","type":"queue"}`,
		`{"name":"small","type":"queue","limits":{"maxMessageSize":100}}`,
		`{"name":"full","type":"queue","limits":{"maxMessages":1,"overflow":"reject-new"}}`,
		`{"name":"news","type":"topic"}`,
		`{"name":"rpc","type":"anycast"}`,
		`{"name":"ticker","type":"multicast"}`,
	} {
		e.admin("POST", "/api/tenants/default/addresses", a)
	}
	e.admin("POST", "/api/tenants/strict/addresses", `{"name":"known","type":"queue"}`)
	return e
}

func (e *hmEnv) admin(method, path, body string) {
	e.t.Helper()
	resp := e.Do(e.t, method, path, strings.NewReader(body))
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
}

// url is the messaging API URL of an address's messages, with a suffix.
func (e *hmEnv) url(name, suffix string) string {
	return e.base + "/addresses/" + name + "/messages" + suffix
}

// do sends a request as app (user "" sends no credentials).
func (e *hmEnv) do(method, url, user, pass string, hdr map[string]string, body string) (*http.Response, string) {
	e.t.Helper()
	return doReq(e.t, http.DefaultClient, method, url, user, pass, hdr, body)
}

func (e *hmEnv) want(method, url string, hdr map[string]string, body string, status int) (*http.Response, string) {
	e.t.Helper()
	resp, b := e.do(method, url, hmUser, hmPass, hdr, body)
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: %d, want %d: %s", method, url, resp.StatusCode, status, b)
	}
	return resp, b
}

// wantError checks an error answer: status, JSON body with code.
func wantError(t *testing.T, resp *http.Response, body string, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type %q: %s", ct, body)
	}
	var eb struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error.Code != code || eb.Error.Message == "" {
		t.Fatalf("error body %s (%v), want code %s", body, err, code)
	}
}

type hmMessage struct {
	LockToken          string         `json:"lockToken"`
	LockedUntil        string         `json:"lockedUntil"`
	Address            string         `json:"address"`
	DeliveryCount      uint64         `json:"deliveryCount"`
	Sequence           uint64         `json:"sequence"`
	MessageID          string         `json:"messageId"`
	MessageIDType      string         `json:"messageIdType"`
	CorrelationID      string         `json:"correlationId"`
	CorrelationIDType  string         `json:"correlationIdType"`
	Subject            string         `json:"subject"`
	ReplyTo            string         `json:"replyTo"`
	ContentType        string         `json:"contentType"`
	CreationTime       string         `json:"creationTime"`
	AbsoluteExpiryTime string         `json:"absoluteExpiryTime"`
	Priority           int            `json:"priority"`
	Durable            bool           `json:"durable"`
	Properties         map[string]any `json:"properties"`
	Body               string         `json:"body"`
	BodyEncoding       string         `json:"bodyEncoding"`
}

// receive asks for messages; 204 gives none.
func (e *hmEnv) receive(name, query string) []hmMessage {
	e.t.Helper()
	resp, b := e.do("POST", e.url(name, "/receive?"+query), hmUser, hmPass, nil, "")
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil
	case http.StatusOK:
	default:
		e.t.Fatalf("receive %s: %d %s", name, resp.StatusCode, b)
	}
	var r struct{ Messages []hmMessage }
	if err := json.Unmarshal([]byte(b), &r); err != nil || len(r.Messages) == 0 {
		e.t.Fatalf("receive %s: %v %s", name, err, b)
	}
	return r.Messages
}

func (e *hmEnv) receiveOne(name, query string) hmMessage {
	e.t.Helper()
	ms := e.receive(name, query)
	if len(ms) != 1 {
		e.t.Fatalf("receive %s: %d messages, want 1", name, len(ms))
	}
	return ms[0]
}

func (e *hmEnv) publish(name, body string, hdr map[string]string) {
	e.t.Helper()
	resp, b := e.do("POST", e.url(name, ""), hmUser, hmPass, hdr, body)
	if resp.StatusCode/100 != 2 {
		e.t.Fatalf("publish %s: %d %s", name, resp.StatusCode, b)
	}
}

func (e *hmEnv) amqp() *goamqp.Session {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := goamqp.Dial(ctx, "amqp://"+e.AMQPAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain(hmUser, hmPass)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func TestHTTPMessaging(t *testing.T) {
	e := startHTTPMessaging(t)

	t.Run("errors", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		resp, b := e.do("POST", e.url("orders", ""), "", "", nil, "x")
		wantError(t, resp, b, 401, "unauthorized")
		first := b
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="throng"`) {
			t.Fatalf("challenge %q", got)
		}
		for _, c := range [][2]string{{"app", "wrong"}, {"ghost", "x"}, {"app@nosuchtenant", hmPass}} {
			resp, b = e.do("POST", e.url("orders", ""), c[0], c[1], nil, "x")
			wantError(t, resp, b, 401, "unauthorized")
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Basic realm="throng"`) {
				t.Fatalf("%s: challenge %q", c[0], resp.Header.Get("WWW-Authenticate"))
			}
			if b != first {
				// Wrong password, unknown user, unknown tenant: one answer.
				t.Fatalf("%s: the answer tells why: %s (no credentials: %s)", c[0], b, first)
			}
		}
		resp, b = e.do("POST", e.url("orders", ""), "nobody", "nobody-secret", nil, "x")
		wantError(t, resp, b, 403, "forbidden")
		resp, b = e.do("POST", e.url("orders", "/receive"), "sender", "sender-secret", nil, "")
		wantError(t, resp, b, 403, "forbidden")
		resp, b = e.do("GET", e.url("news", ""), "sender", "sender-secret", nil, "")
		wantError(t, resp, b, 403, "forbidden")
		// $SYS is published by the server only.
		resp, b = e.do("POST", e.url("$SYS/x", ""), hmUser, hmPass, nil, "x")
		wantError(t, resp, b, 403, "forbidden")
		// A strict tenant knows only its addresses.
		resp, b = e.do("POST", e.url("nope", ""), "app@strict", hmPass, nil, "x")
		wantError(t, resp, b, 404, "not_found")
		resp, b = e.do("POST", e.url("nope", "/receive"), "app@strict", hmPass, nil, "")
		wantError(t, resp, b, 404, "not_found")
		resp, b = e.do("GET", e.base+"/nothing-here", hmUser, hmPass, nil, "")
		wantError(t, resp, b, 404, "not_found")
		resp, b = e.do("PUT", e.url("orders", ""), hmUser, hmPass, nil, "x")
		wantError(t, resp, b, 405, "method_not_allowed")
		if resp.Header.Get("Allow") != "GET, POST" {
			t.Fatalf("Allow %q", resp.Header.Get("Allow"))
		}
		// Too large: the address's maximum (the router counts the
		// properties too), and the tenant's, which is checked before the
		// body is read in full.
		resp, b = e.do("POST", e.url("small", ""), hmUser, hmPass, nil, strings.Repeat("x", 200))
		wantError(t, resp, b, 413, "too_large")
		resp, b = e.do("POST", e.url("known", ""), "app@strict", hmPass, nil, strings.Repeat("x", 2000))
		wantError(t, resp, b, 413, "too_large")
		// A full queue that rejects new messages: 429 with Retry-After.
		e.want("POST", e.url("full", ""), nil, "1", 201)
		resp, b = e.do("POST", e.url("full", ""), hmUser, hmPass, nil, "2")
		wantError(t, resp, b, 429, "limit_exceeded")
		if resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		// Malformed headers and parameters.
		for _, h := range []map[string]string{{"Priority": "high"}, {"Ttl": "-1"}, {"Durable": "maybe"},
			{"Throng-Properties": `{"a":[1]}`}, {"Throng-Properties": `[]`}} {
			resp, b = e.do("POST", e.url("orders", ""), hmUser, hmPass, h, "x")
			wantError(t, resp, b, 400, "bad_request")
		}
		resp, b = e.do("POST", e.url("orders", "?ttl=5"), hmUser, hmPass, nil, "x")
		wantError(t, resp, b, 400, "bad_request")
		for _, q := range []string{"max=0", "max=101", "wait=forever", "wait=61s", "lock=0", "lock=6m", "encoding=hex", "colour=red"} {
			resp, b = e.do("POST", e.url("orders", "/receive?"+q), hmUser, hmPass, nil, "")
			wantError(t, resp, b, 400, "bad_request")
		}
		// Receive from a topic, stream a queue: the wrong operation for
		// the type.
		resp, b = e.do("POST", e.url("news", "/receive"), hmUser, hmPass, nil, "")
		wantError(t, resp, b, 409, "wrong_address_type")
		resp, b = e.do("GET", e.url("orders", ""), hmUser, hmPass, nil, "")
		wantError(t, resp, b, 409, "wrong_address_type")
		// Anycast without a consumer.
		resp, b = e.do("POST", e.url("rpc", ""), hmUser, hmPass, nil, "x")
		wantError(t, resp, b, 503, "no_consumer")
		// Hono's adapter is still served beside the API.
		resp, _ = e.do("POST", "http://"+e.HTTPAddr+"/telemetry", "", "", map[string]string{"Content-Type": "text/plain"}, "x")
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Basic realm="Hono"` {
			t.Fatalf("Hono adapter: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})

	t.Run("openapi", func(t *testing.T) {
		resp, b := e.do("GET", e.base+"/openapi.json", "", "", nil, "")
		var doc struct {
			OpenAPI string         `json:"openapi"`
			Paths   map[string]any `json:"paths"`
		}
		if resp.StatusCode != 200 || json.Unmarshal([]byte(b), &doc) != nil || doc.OpenAPI == "" || len(doc.Paths) == 0 {
			t.Fatalf("openapi: %d %.200s", resp.StatusCode, b)
		}
	})

	t.Run("http-to-amqp", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		resp, b := e.want("POST", e.url("h2a", ""), map[string]string{
			"Content-Type": "application/json", "Message-Id": "m-1", "Correlation-Id": "c-1",
			"Reply-To": "replies/1", "Subject": "order", "Priority": "7", "Ttl": "60000",
			"Throng-Prop-Colour": "red", "Throng-Properties": `{"count":3,"ok":true,"ratio":0.5,"CamelCase":"kept"}`,
		}, `{"n":1}`, 201)
		var pr struct{ Address, Type, Outcome string }
		if json.Unmarshal([]byte(b), &pr) != nil || pr.Outcome != "stored" || pr.Type != "queue" || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("publish answer %s", b)
		}
		s := e.amqp()
		rcv, err := s.NewReceiver(ctx10(t), "h2a", &goamqp.ReceiverOptions{Credit: 1})
		if err != nil {
			t.Fatal(err)
		}
		m, err := rcv.Receive(ctx10(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = rcv.AcceptMessage(ctx10(t), m)
		if string(m.GetData()) != `{"n":1}` {
			t.Errorf("body %q", m.GetData())
		}
		p := m.Properties
		if p == nil || p.MessageID != "m-1" || p.CorrelationID != "c-1" || *p.ReplyTo != "replies/1" || *p.Subject != "order" || *p.ContentType != "application/json" {
			t.Errorf("properties %+v", p)
		}
		if p != nil && (p.CreationTime == nil || time.Since(*p.CreationTime) > time.Minute) {
			t.Errorf("creation time %v", p.CreationTime)
		}
		if m.Header == nil || m.Header.Priority != 7 || !m.Header.Durable || m.Header.TTL <= 0 || m.Header.TTL > time.Minute {
			t.Errorf("header %+v", m.Header)
		}
		want := map[string]any{"colour": "red", "count": int64(3), "ok": true, "ratio": 0.5, "CamelCase": "kept"}
		for k, v := range want {
			if m.ApplicationProperties[k] != v {
				t.Errorf("app property %s = %#v, want %#v", k, m.ApplicationProperties[k], v)
			}
		}
	})

	t.Run("amqp-to-http", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		s := e.amqp()
		snd, err := s.NewSender(ctx10(t), "a2h", nil)
		if err != nil {
			t.Fatal(err)
		}
		ct, rt, subj := "text/plain", "replies/2", "hello"
		err = snd.Send(ctx10(t), &goamqp.Message{
			Data:                  [][]byte{[]byte("from amqp")},
			Properties:            &goamqp.MessageProperties{MessageID: uint64(42), CorrelationID: []byte{1, 2, 3}, ContentType: &ct, ReplyTo: &rt, Subject: &subj},
			ApplicationProperties: map[string]any{"k": "v", "n": int64(-5)},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		// An amqp-value string body arrives as its text.
		if err := snd.Send(ctx10(t), &goamqp.Message{Value: "a string"}, nil); err != nil {
			t.Fatal(err)
		}
		ms := e.receive("a2h", "max=2&wait=5s")
		if len(ms) == 1 {
			ms = append(ms, e.receiveOne("a2h", "wait=5s"))
		}
		m := ms[0]
		if m.Body != "from amqp" || m.BodyEncoding != "utf-8" || m.Address != "a2h" || m.DeliveryCount != 1 {
			t.Errorf("message %+v", m)
		}
		if m.MessageID != "42" || m.MessageIDType != "ulong" || m.CorrelationID != base64.StdEncoding.EncodeToString([]byte{1, 2, 3}) || m.CorrelationIDType != "binary" {
			t.Errorf("ids %+v", m)
		}
		if m.ContentType != "text/plain" || m.ReplyTo != "replies/2" || m.Subject != "hello" || m.Properties["k"] != "v" || m.Properties["n"] != float64(-5) {
			t.Errorf("properties %+v", m)
		}
		if m.LockToken == "" || m.LockedUntil == "" {
			t.Fatalf("no lock: %+v", m)
		}
		if ms[1].Body != "a string" {
			t.Errorf("amqp-value string body %+v", ms[1])
		}
		for _, x := range ms {
			e.want("DELETE", e.url("a2h", "/"+x.LockToken), nil, "", 204)
		}
		// The second accept finds no lock.
		resp, b := e.do("DELETE", e.url("a2h", "/"+m.LockToken), hmUser, hmPass, nil, "")
		wantError(t, resp, b, 404, "lock_not_found")
		// Nor does a lock of another address.
		resp, b = e.do("DELETE", e.url("orders", "/"+ms[1].LockToken), hmUser, hmPass, nil, "")
		wantError(t, resp, b, 404, "lock_not_found")
		if got := e.receive("a2h", ""); got != nil {
			t.Fatalf("accepted messages came again: %+v", got)
		}
	})

	t.Run("mqtt", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		host, port, _ := net.SplitHostPort(e.MQTTAddr)
		pub := needClient(t, "mosquitto_pub")
		sub := needClient(t, "mosquitto_sub")
		// mosquitto_pub (MQTT 5) to a queue's name enqueues it; HTTP
		// receives it with its properties.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, pub, "-h", host, "-p", port, "-u", hmUser, "-P", hmPass, "-V", "mqttv5", "-q", "1",
			"-t", "m2h", "-m", "from mosquitto", "-D", "publish", "content-type", "text/plain",
			"-D", "publish", "user-property", "origin", "mqtt", "-D", "publish", "correlation-data", "corr").CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
		m := e.receiveOne("m2h", "wait=5s")
		if m.Body != "from mosquitto" || m.ContentType != "text/plain" || m.Properties["origin"] != "mqtt" || !m.Durable ||
			m.CorrelationID != base64.StdEncoding.EncodeToString([]byte("corr")) || m.CorrelationIDType != "binary" {
			t.Errorf("message %+v", m)
		}
		e.want("DELETE", e.url("m2h", "/"+m.LockToken), nil, "", 204)
		// HTTP publishes to a queue; mosquitto_sub (MQTT 5) consumes it
		// by subscribing to the queue's name.
		e.want("POST", e.url("h2m", ""), map[string]string{"Content-Type": "text/plain", "Correlation-Id": "c-9",
			"Reply-To": "answers", "Throng-Prop-Colour": "blue"}, "from http", 201)
		out, err = exec.CommandContext(ctx, sub, "-h", host, "-p", port, "-u", hmUser, "-P", hmPass, "-V", "mqttv5", "-q", "1",
			"-t", "h2m", "-C", "1", "-W", "30", "-F", "%t|%C|%D|%P|%p").CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_sub: %v %s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "h2m|text/plain|c-9|colour:blue|from http" {
			t.Errorf("mosquitto_sub printed %q", got)
		}
	})

	t.Run("curl", func(t *testing.T) {
		bin := needClient(t, "curl", "--version")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := func(args ...string) string {
			out, err := exec.CommandContext(ctx, bin, append([]string{"-s", "-i", "-u", hmUser + ":" + hmPass}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("curl %v: %v %s", args, err, out)
			}
			return string(out)
		}
		out := cmd("-H", "Content-Type: text/plain", "--data-binary", "from curl", e.url("orders", ""))
		if !strings.HasPrefix(out, "HTTP/1.1 201") || !strings.Contains(out, `"outcome":"stored"`) {
			t.Fatalf("curl publish:\n%s", out)
		}
		out = cmd("-X", "POST", e.url("orders", "/receive?wait=5s"))
		if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, `"body":"from curl"`) {
			t.Fatalf("curl receive:\n%s", out)
		}
		i := strings.Index(out, `"lockToken":"`)
		tok := out[i+len(`"lockToken":"`):]
		tok = tok[:strings.IndexByte(tok, '"')]
		out = cmd("-X", "DELETE", e.url("orders", "/"+tok))
		if !strings.HasPrefix(out, "HTTP/1.1 204") {
			t.Fatalf("curl accept:\n%s", out)
		}
		// A wildcard stream with curl -N: the event of a message
		// published after it started.
		sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
		defer scancel()
		c := exec.CommandContext(sctx, bin, "-s", "-N", "-u", hmUser+":"+hmPass, e.url("curl%2F%2B", ""))
		stdout, _ := c.StdoutPipe()
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		hmLine(t, lines, "retry:")
		e.publish("curl/x", "via curl -N", nil)
		if l := hmLine(t, lines, "data:"); !strings.Contains(l, `"body":"via curl -N"`) || !strings.Contains(l, `"address":"curl/x"`) {
			t.Fatalf("event %s", l)
		}
	})

	t.Run("lock-expiry", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		e.publish("redeliver", "again", nil)
		first := e.receiveOne("redeliver", "lock=1s")
		if first.DeliveryCount != 1 {
			t.Fatalf("first delivery %+v", first)
		}
		// Not settled: after the lock the message comes again.
		again := e.receiveOne("redeliver", "wait=10s")
		if again.Body != "again" || again.DeliveryCount != 2 || again.LockToken == first.LockToken {
			t.Fatalf("redelivery %+v", again)
		}
		resp, b := e.do("DELETE", e.url("redeliver", "/"+first.LockToken), hmUser, hmPass, nil, "")
		wantError(t, resp, b, 410, "lock_expired")
		e.want("POST", e.url("redeliver", "/"+again.LockToken+"/release"), nil, "", 204)
		// Renewed, a lock outlives its first duration.
		third := e.receiveOne("redeliver", "wait=10s&lock=1s")
		_, b = e.want("POST", e.url("redeliver", "/"+third.LockToken+"/renew?lock=30s"), nil, "", 200)
		var rr struct{ LockedUntil string }
		if json.Unmarshal([]byte(b), &rr) != nil || rr.LockedUntil <= third.LockedUntil {
			t.Fatalf("renew: %s (was %s)", b, third.LockedUntil)
		}
		if got := e.receive("redeliver", "wait=2s"); got != nil {
			t.Fatalf("a renewed lock's message came again: %+v", got)
		}
		e.want("DELETE", e.url("redeliver", "/"+third.LockToken), nil, "", 204)
		if n := hmMetric(t, e.Platform, "throng_http_api_locks_expired_total"); n < 1 {
			t.Fatalf("throng_http_api_locks_expired_total %v", n)
		}
	})

	t.Run("release-reject", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		e.publish("settle", "r", map[string]string{"Message-Id": "to-release"})
		m := e.receiveOne("settle", "wait=5s")
		e.want("POST", e.url("settle", "/"+m.LockToken+"/release"), nil, "", 204)
		m = e.receiveOne("settle", "wait=5s")
		if m.MessageID != "to-release" || m.DeliveryCount != 2 {
			t.Fatalf("released message %+v", m)
		}
		e.want("POST", e.url("settle", "/"+m.LockToken+"/reject"), nil, `{"description":"cannot parse"}`, 204)
		dl := e.receiveOne("settle-dlq", "wait=5s")
		if dl.MessageID != "to-release" || dl.Body != "r" {
			t.Fatalf("dead letter %+v", dl)
		}
		e.want("DELETE", e.url("settle-dlq", "/"+dl.LockToken), nil, "", 204)
		resp, b := e.do("POST", e.url("settle", "/"+m.LockToken+"/reject"), hmUser, hmPass, nil, `{"nonsense":1}`)
		wantError(t, resp, b, 400, "bad_request")
	})

	t.Run("long-poll", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		start := time.Now()
		resp, _ := e.do("POST", e.url("poll", "/receive?wait=1s"), hmUser, hmPass, nil, "")
		if resp.StatusCode != 204 || time.Since(start) < time.Second {
			t.Fatalf("empty long poll: %d after %v", resp.StatusCode, time.Since(start))
		}
		// A waiting poll answers as soon as a message comes.
		got := make(chan hmMessage, 1)
		start = time.Now()
		go func() {
			resp, b := doReqNoFatal("POST", e.url("poll", "/receive?wait=30s"), hmUser, hmPass, "")
			var r struct{ Messages []hmMessage }
			if resp == 200 && json.Unmarshal([]byte(b), &r) == nil && len(r.Messages) == 1 {
				got <- r.Messages[0]
			}
			close(got)
		}()
		time.Sleep(300 * time.Millisecond) // the poll is (most likely) waiting
		e.publish("poll", "woken", nil)
		m, ok := <-got
		if !ok || m.Body != "woken" || time.Since(start) > 20*time.Second {
			t.Fatalf("long poll: %+v %v after %v", m, ok, time.Since(start))
		}
		e.want("DELETE", e.url("poll", "/"+m.LockToken), nil, "", 204)
	})

	t.Run("shared-queue", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		const n = 40
		for i := range n {
			e.publish("shared", strconv.Itoa(i), nil)
		}
		var mu sync.Mutex
		seen := map[string]int{}
		per := [2]int{}
		var wg sync.WaitGroup
		for c := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					st, b := doReqNoFatal("POST", e.url("shared", "/receive?max=5&wait=2s"), hmUser, hmPass, "")
					if st != 200 {
						return
					}
					var r struct{ Messages []hmMessage }
					_ = json.Unmarshal([]byte(b), &r)
					for _, m := range r.Messages {
						mu.Lock()
						seen[m.Body]++
						per[c]++
						mu.Unlock()
						doReqNoFatal("DELETE", e.url("shared", "/"+m.LockToken), hmUser, hmPass, "")
					}
					time.Sleep(20 * time.Millisecond) // let the other client in
				}
			}()
		}
		wg.Wait()
		if len(seen) != n {
			t.Fatalf("%d distinct messages received, want %d", len(seen), n)
		}
		for b, k := range seen {
			if k != 1 {
				t.Fatalf("message %s received %d times", b, k)
			}
		}
		if per[0] == 0 || per[1] == 0 {
			t.Fatalf("one client got everything: %v", per)
		}
	})

	t.Run("stream-in-order", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		for _, name := range []string{"news", "ticker", "sensors%2F%2B%2Ftemp"} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			req, _ := http.NewRequestWithContext(ctx, "GET", e.url(name, ""), nil)
			req.SetBasicAuth(hmUser, hmPass)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("%s: stream %d %q", name, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			lines := make(chan string, 1000)
			go func() {
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			hmLine(t, lines, "retry:")
			pubName := strings.ReplaceAll(name, "%2F%2B%2F", "/1/")
			pubName = strings.ReplaceAll(pubName, "%2F", "/")
			const n = 50
			for i := range n {
				e.publish(pubName, strconv.Itoa(i), map[string]string{"Content-Type": "text/plain"})
			}
			var lastID uint64
			for i := range n {
				idLine := hmLine(t, lines, "id:")
				id, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(idLine, "id:")), 10, 64)
				if id <= lastID {
					t.Fatalf("%s: event id %d after %d", name, id, lastID)
				}
				lastID = id
				data := hmLine(t, lines, "data:")
				var m hmMessage
				if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &m); err != nil {
					t.Fatalf("%s: event %q: %v", name, data, err)
				}
				if m.Body != strconv.Itoa(i) || m.Address != pubName || m.ContentType != "text/plain" || m.LockToken != "" {
					t.Fatalf("%s: event %d: %+v", name, i, m)
				}
			}
			cancel()
			resp.Body.Close()
		}
	})

	t.Run("subscription", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		// The first receive creates the durable subscription news::audit,
		// which then collects the topic's messages while nobody polls.
		if got := e.receive("news%3A%3Aaudit", ""); got != nil {
			t.Fatalf("new subscription had %+v", got)
		}
		e.publish("news", "kept", nil)
		m := e.receiveOne("news::audit", "wait=5s")
		if m.Body != "kept" || (m.Address != "news" && m.Address != "news::audit") {
			t.Fatalf("subscription message %+v", m)
		}
		e.want("DELETE", e.url("news::audit", "/"+m.LockToken), nil, "", 204)
		if got := e.receive("news::audit", ""); got != nil {
			t.Fatalf("accepted subscription message came again: %+v", got)
		}
	})

	t.Run("deleted", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		// A receiver pooled after a receive is a consumer of the address:
		// deleting it needs force, and detaches it.
		e.admin("POST", "/api/tenants/default/addresses", `{"name":"doomed","type":"queue"}`)
		e.admin("POST", "/api/tenants/default/addresses", `{"name":"doomed-topic","type":"topic"}`)
		if got := e.receive("doomed", ""); got != nil {
			t.Fatalf("new queue had %+v", got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url("doomed-topic", ""), nil)
		req.SetBasicAuth(hmUser, hmPass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream: %v %v", resp, err)
		}
		defer resp.Body.Close()
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		hmLine(t, lines, "retry:")
		e.admin("DELETE", "/api/tenants/default/addresses/doomed?force=true", "")
		e.admin("DELETE", "/api/tenants/default/addresses/doomed-topic?force=true", "")
		// The stream ends with an event that says why.
		hmLine(t, lines, "event: deleted")
		for range lines {
		}
		// The name is the topic space's now (default tenant): not received.
		r2, b := e.do("POST", e.url("doomed", "/receive"), hmUser, hmPass, nil, "")
		wantError(t, r2, b, 409, "wrong_address_type")
		// Defined again, it is a new queue: a new receiver gets its message.
		e.admin("POST", "/api/tenants/default/addresses", `{"name":"doomed","type":"queue"}`)
		e.publish("doomed", "second life", nil)
		m := e.receiveOne("doomed", "wait=5s")
		if m.Body != "second life" {
			t.Fatalf("recreated queue: %+v", m)
		}
		e.want("DELETE", e.url("doomed", "/"+m.LockToken), nil, "", 204)
	})

	t.Run("revoked", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		// A stream is one request that lasts: a change of its user's
		// permissions ends it, as it closes AMQP and MQTT connections.
		e.admin("POST", "/api/tenants/default/users", `{"name":"streamer","password":"streamer-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["receive"]}]}`)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url("ticker", ""), nil)
		req.SetBasicAuth("streamer", "streamer-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream: %v %v", resp, err)
		}
		defer resp.Body.Close()
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		hmLine(t, lines, "retry:")
		e.admin("PUT", "/api/tenants/default/users/streamer", `{"permissions":[{"pattern":"other/#","actions":["receive"]}]}`)
		hmLine(t, lines, "event: revoked")
		if l := hmLine(t, lines, "data:"); !strings.Contains(l, "permissions") {
			t.Fatalf("revoked event %q", l)
		}
		for range lines {
		}
		r2, b := e.do("GET", e.url("ticker", ""), "streamer", "streamer-secret", nil, "")
		wantError(t, r2, b, 403, "forbidden")
	})

	t.Run("anycast", func(t *testing.T) {
		e := &hmEnv{e.Platform, t, e.base}
		// An HTTP consumer waits on the anycast address; an HTTP
		// publisher's answer is that consumer's outcome (end to end).
		locked := make(chan hmMessage, 1)
		go func() {
			defer close(locked)
			st, b := doReqNoFatal("POST", e.url("rpc", "/receive?wait=30s&lock=30s"), hmUser, hmPass, "")
			var r struct{ Messages []hmMessage }
			if st == 200 && json.Unmarshal([]byte(b), &r) == nil && len(r.Messages) == 1 {
				locked <- r.Messages[0]
			}
		}()
		published := make(chan int, 1)
		go func() {
			// 503 no_consumer until the receive has attached.
			st := 0
			for range 400 {
				if st, _ = doReqNoFatal("POST", e.url("rpc", ""), hmUser, hmPass, "request"); st != 503 {
					break
				}
				time.Sleep(25 * time.Millisecond)
			}
			published <- st
		}()
		var m hmMessage
		select {
		case m = <-locked:
		case <-time.After(30 * time.Second):
			t.Fatal("anycast receive got nothing")
		}
		if m.Body != "request" {
			t.Fatalf("anycast message %+v", m)
		}
		select {
		case st := <-published:
			t.Fatalf("publish answered %d before the consumer settled", st)
		case <-time.After(300 * time.Millisecond):
		}
		e.want("DELETE", e.url("rpc", "/"+m.LockToken), nil, "", 204)
		if st := <-published; st != 200 {
			t.Fatalf("anycast publish answered %d, want 200 (accepted by the consumer)", st)
		}
	})
}

// TestHTTPMessagingRestart: a message locked when the node stops is not
// lost: it comes again after the restart; a long poll waiting at shutdown
// is answered at once.
func TestHTTPMessagingRestart(t *testing.T) {
	p := testkit.Start(t)
	e := &hmEnv{Platform: p, t: t, base: "http://" + p.HTTPAddr + "/api/v1"}
	e.admin("POST", "/api/tenants/default/users", `{"name":"app","password":"app-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`)
	e.admin("POST", "/api/tenants/default/addresses", `{"name":"work","type":"queue"}`)
	e.admin("POST", "/api/tenants/default/addresses", `{"name":"idle","type":"queue"}`)
	e.publish("work", "survives", map[string]string{"Message-Id": "w1"})
	m := e.receiveOne("work", "lock=5m")
	polled := make(chan int, 1)
	go func() {
		st, _ := doReqNoFatal("POST", e.url("idle", "/receive?wait=60s"), hmUser, hmPass, "")
		polled <- st
	}()
	time.Sleep(200 * time.Millisecond) // the poll is (most likely) waiting
	start := time.Now()
	p.Restart(t)
	if st := <-polled; st != 204 {
		t.Fatalf("long poll at shutdown answered %d", st)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("restart with a waiting long poll took %v", d)
	}
	e.base = "http://" + p.HTTPAddr + "/api/v1"
	again := e.receiveOne("work", "wait=30s")
	if again.MessageID != "w1" || again.Body != "survives" {
		t.Fatalf("after the restart: %+v", again)
	}
	// The old token belongs to the stopped node.
	resp, b := e.do("DELETE", e.url("work", "/"+m.LockToken), hmUser, hmPass, nil, "")
	wantError(t, resp, b, 404, "lock_not_found")
	e.want("DELETE", e.url("work", "/"+again.LockToken), nil, "", 204)
}

// hmMetric is the sum of a metric's series in the node's registry.
func hmMetric(t *testing.T, p *testkit.Platform, name string) float64 {
	t.Helper()
	mfs, err := p.App.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// doReqNoFatal is a request for goroutines: status and body, 0 on a
// transport error.
func doReqNoFatal(method, url, user, pass, body string) (int, string) {
	r, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	r.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return 0, err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// hmLine returns the next line starting with prefix, skipping others.
func hmLine(t *testing.T, lines chan string, prefix string) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended before a %q line", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			t.Fatalf("no %q line within 20s", prefix)
		}
	}
}
