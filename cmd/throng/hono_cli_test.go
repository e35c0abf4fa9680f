package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/testkit"
)

func TestHonoSplitWords(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		err  bool
	}{
		{"", nil, false},
		{"  ow  -d dev  ", []string{"ow", "-d", "dev"}, false},
		{`req --payload '{"level": 87}' -n x`, []string{"req", "--payload", `{"level": 87}`, "-n", "x"}, false},
		{`ow --payload "say \"hi\" \\ now"`, []string{"ow", "--payload", `say "hi" \ now`}, false},
		{`a\ b c`, []string{"a b", "c"}, false},
		{`x''y ""`, []string{"xy", ""}, false},
		{`ow '${MY_DEVICE}'`, []string{"ow", "${MY_DEVICE}"}, false},
		{`ow 'open`, nil, true},
		{`ow "open`, nil, true},
	}
	for _, c := range cases {
		got, err := splitWords(c.in)
		if (err != nil) != c.err || fmt.Sprintf("%q", got) != fmt.Sprintf("%q", c.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q (error %v)", c.in, got, err, c.want, c.err)
		}
	}
}

func TestHonoResolveVars(t *testing.T) {
	e := env{"MY_TENANT=t1", "MY_DEVICE=d-1", "EMPTY=", "MY_TENANT=t2"}
	cases := []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{"${MY_TENANT}", "t2", ""}, // the last definition wins, as in a process environment
		{"${MY_DEVICE}@${MY_TENANT}", "d-1@t2", ""},
		{`{"level": ${EMPTY}}`, `{"level": }`, ""},
		{"${NOPE}", "", "Environment does not contain variable with name NOPE"},
		{"${}", "", "Environment does not contain variable with name "},
		{"$MY_TENANT ${ unclosed", "$MY_TENANT ${ unclosed", ""},
	}
	for _, c := range cases {
		got, err := resolveVars(c.in, e)
		if got != c.want || (err == nil) != (c.err == "") || (err != nil && err.Error() != c.err) {
			t.Errorf("resolveVars(%q) = %q, %v; want %q, %q", c.in, got, err, c.want, c.err)
		}
	}
}

func TestHonoFormat(t *testing.T) {
	ct := "application/json"
	m := &amqp.Message{
		Data:       [][]byte{[]byte(`{"temp": 5}`)},
		Properties: &amqp.MessageProperties{ContentType: &ct},
		ApplicationProperties: map[string]any{"orig_adapter": "hono-http", "device_id": "4711", "qos": int32(0),
			"orig_address": "/telemetry", "raw": []byte{1, 2}},
	}
	if got, want := formatDownstream("t", m), `t 4711 application/json {"temp": 5} {device_id=4711, orig_adapter=hono-http, orig_address=/telemetry, qos=0, raw=0102}`; got != want {
		t.Errorf("telemetry:\n got %s\nwant %s", got, want)
	}
	// No content type, no body, no properties: dashes and {}.
	if got, want := formatDownstream("e", &amqp.Message{}), "e - - - {}"; got != want {
		t.Errorf("empty event: %q, want %q", got, want)
	}
	if got, want := formatDownstream("e", &amqp.Message{Data: [][]byte{{}}, ApplicationProperties: map[string]any{"device_id": "d", "ttd": int32(-1)}}), "e d - - {device_id=d, ttd=-1}"; got != want {
		t.Errorf("empty body: %q, want %q", got, want)
	}
	if got, want := formatDownstream("t", &amqp.Message{Value: "text"}), "t - - text {}"; got != want {
		t.Errorf("amqp-value: %q, want %q", got, want)
	}
	r := &amqp.Message{Data: [][]byte{[]byte(`{"current-level": 87}`)}, ApplicationProperties: map[string]any{"device_id": "4711", "status": int32(200)}}
	if got, want := formatResponse(r), `res 4711 200 - {"current-level": 87}`; got != want {
		t.Errorf("response: %q, want %q", got, want)
	}
}

func TestHonoUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"hono"}, "hono needs a subcommand"},
		{[]string{"hono", "nope"}, `unknown command "hono" "nope"`},
		{[]string{"hono", "adapter", "amqp"}, "not built"},
		{[]string{"hono", "app"}, "needs a command: consume or command"},
		{[]string{"hono", "app", "-H", "localhost", "consume"}, "Missing required option: both '--host=<hostname>' and '--port=<portNumber>'"},
		{[]string{"hono", "app", "-P", "5672", "consume"}, "Missing required option"},
		{[]string{"hono", "app", "-H", "h", "-P", "x", "consume"}, "invalid value"},
		{[]string{"hono", "app", "-H", "h", "-P", "5672", "-u", "admin", "consume"}, "both '--username' and '--password'"},
		{[]string{"hono", "app", "-H", "h", "-P", "5672", "--ca-file-password", "x", "consume"}, "PEM CA files only"},
		{[]string{"hono", "app", "-H", "h", "-P", "5672", "nope"}, `unknown command "nope"`},
		{[]string{"hono", "app", "-H", "h", "-P", "5672", "consume", "--no-such-flag"}, "flag provided but not defined"},
		{[]string{"hono", "app", "-H", "h", "-P", "5672", "consume", "extra"}, `unexpected argument "extra"`},
	} {
		r := runCLI(t, nil, c.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
			t.Errorf("throng %s: exit %d, stderr %q; want %d and %q", strings.Join(c.args, " "), r.code, r.stderr, exitUsage, c.want)
		}
	}
	r := mustCLI(t, nil, 0, "hono", "--help")
	if !strings.Contains(r.stdout, "consume") || !strings.Contains(r.stdout, "--disable-hostname-verification") {
		t.Errorf("hono --help: %s", r.stdout)
	}
	// Nothing listens: the consumer cannot be created (exit 1).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	r = mustCLI(t, nil, exitError, "hono", "app", "-H", "127.0.0.1", "-P", port, "consume")
	if !strings.Contains(r.stderr, "failed to create message consumer(s)") {
		t.Errorf("consume without a server: %s", r.stderr)
	}
	r = mustCLI(t, nil, exitError, "hono", "app", "-H", "127.0.0.1", "-P", port, "command")
	if !strings.Contains(r.stderr, "Failed to connect to Hono's Command & Control endpoint") {
		t.Errorf("command without a server: %s", r.stderr)
	}
}

// waitFor polls a buffer until re matches, and returns the submatches.
func waitFor(t *testing.T, b *lockedBuffer, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	deadline := time.Now().Add(time.Minute)
	for m = rx.FindStringSubmatch(b.String()); m == nil; m = rx.FindStringSubmatch(b.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in:\n%s", re, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m
}

// waitCount polls a buffer until re matches n times.
func waitCount(t *testing.T, b *lockedBuffer, re string, n int) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(time.Minute)
	for len(rx.FindAllString(b.String(), -1)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d of %s in:\n%s", n, re, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHonoAppAgainstThrong runs "throng hono app" consume and command
// against a platform, with an HTTP device (net/http, Hono's HTTP adapter)
// registered through /v1: telemetry and its properties, the device's long
// poll receiving a request/response command and a one-way command, the
// response printed, a command for an offline device refused (503), a
// tenant the user may not read.
func TestHonoAppAgainstThrong(t *testing.T) {
	p := testkit.Start(t)
	v1 := func(method, path, body string, want int) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		resp := p.Do(t, method, path, rd)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d", method, path, resp.StatusCode, want)
		}
	}
	v1("POST", "/v1/tenants/acme", "{}", 201)
	v1("POST", "/v1/devices/acme/dev-1", "{}", 201)
	v1("PUT", "/v1/credentials/acme/dev-1", `[{"type":"hashed-password","auth-id":"dev-1","secrets":[{"pwd-plain":"pw-1"}]}]`, 204)
	host, port, _ := net.SplitHostPort(p.AMQPAddr)
	conn := []string{"hono", "app", "--amqp", "-H", host, "-P", port, "-u", p.AdminUser, "-p", p.AdminPassword}
	environ := []string{"MY_TENANT=acme", "MY_DEVICE=dev-1"}

	// The device: Hono's HTTP adapter, basic auth dev-1@acme.
	post := func(path, ct, body string, hdr map[string]string) *http.Response {
		t.Helper()
		req, err := http.NewRequest("POST", "http://"+p.HTTPAddr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("dev-1@acme", "pw-1")
		req.Header.Set("Content-Type", ct)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	appOut, appErr := &lockedBuffer{}, &lockedBuffer{}
	consumed := make(chan int, 1)
	go func() {
		consumed <- run(ctx, append(append([]string{}, conn...), "consume", "--tenant", "acme"), environ, appOut, appErr)
	}()
	waitFor(t, appErr, `Consuming messages for tenant \[acme\], ctrl-c to exit.`)
	if resp := post("/telemetry", "application/json", `{"temp": 5}`, nil); resp.StatusCode != 202 {
		t.Fatalf("telemetry: %d", resp.StatusCode)
	}
	waitFor(t, appOut, `(?m)^t dev-1 application/json \{"temp": 5\} \{device_id=dev-1, orig_adapter=hono-http, orig_address=/telemetry, qos=0, tenant_id=acme\}$`)
	if resp := post("/event", "text/plain", "fire", nil); resp.StatusCode != 202 {
		t.Fatalf("event: %d", resp.StatusCode)
	}
	waitFor(t, appOut, `(?m)^e dev-1 text/plain fire \{.*orig_address=/event.*\}$`)

	// The command shell, fed through a pipe.
	in, typed := io.Pipe()
	cmdOut, cmdErr := &lockedBuffer{}, &lockedBuffer{}
	c := &cli{env: env(environ), stdout: cmdOut, stderr: cmdErr}
	shellDone := make(chan error, 1)
	go func() { shellDone <- c.honoIO(ctx, append(append([]string{}, conn[1:]...), "command"), in) }()
	waitFor(t, cmdErr, `Connecting to AMQP 1.0 based messaging infrastructure \[`+regexp.QuoteMeta(p.AMQPAddr)+`\]`)
	typeLine := func(s string) {
		t.Helper()
		if _, err := io.WriteString(typed, s+"\n"); err != nil {
			t.Fatal(err)
		}
	}

	// A long poll (hono-ttd) receives a request/response command; the
	// device's own message (with ttd) tells the application it waits.
	longPoll := func() chan *http.Response {
		got := make(chan *http.Response, 1)
		go func() {
			req, _ := http.NewRequest("POST", "http://"+p.HTTPAddr+"/telemetry", strings.NewReader(`{"temp": 6}`))
			req.SetBasicAuth("dev-1@acme", "pw-1")
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("hono-ttd", "30")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				got <- nil
				return
			}
			resp.Body.Close()
			got <- resp
		}()
		return got
	}
	polled := longPoll()
	waitFor(t, appOut, `(?m)^t dev-1 application/json \{"temp": 6\} \{.*ttd=30.*\}$`)
	typeLine(`req --tenant ${MY_TENANT} --device ${MY_DEVICE} -n setBrightness --payload '{"level": 87}'`)
	// From a pipe, standard error is the transcript: prompt and line.
	waitFor(t, cmdErr, `(?m)^`+regexp.QuoteMeta(honoCommandPrompt+`req --tenant ${MY_TENANT} --device ${MY_DEVICE} -n setBrightness --payload '{"level": 87}'`)+`$`)
	var resp *http.Response
	select {
	case resp = <-polled:
	case <-time.After(time.Minute):
		t.Fatal("no command")
	}
	if resp == nil || resp.StatusCode != 200 || resp.Header.Get("hono-command") != "setBrightness" ||
		resp.Header.Get("content-type") != "application/json" || resp.Header.Get("hono-cmd-req-id") == "" {
		t.Fatalf("long poll: %+v", resp)
	}
	if r := post("/command/res/"+resp.Header.Get("hono-cmd-req-id"), "text/plain", "87 now", map[string]string{"hono-cmd-status": "200"}); r.StatusCode != 202 {
		t.Fatalf("response: %d", r.StatusCode)
	}
	waitFor(t, cmdOut, `(?m)^res dev-1 200 text/plain 87 now$`)

	// One-way: no req-id, nothing printed.
	polled = longPoll()
	waitCount(t, appOut, `(?m)^t dev-1 application/json \{"temp": 6\} \{.*ttd=30.*\}$`, 2)
	typeLine(`ow -t acme -d dev-1 -n reboot --payload now`)
	select {
	case resp = <-polled:
	case <-time.After(time.Minute):
		t.Fatal("no one-way command")
	}
	if resp == nil || resp.StatusCode != 200 || resp.Header.Get("hono-command") != "reboot" ||
		resp.Header.Get("content-type") != "text/plain" || resp.Header.Get("hono-cmd-req-id") != "" {
		t.Fatalf("one-way long poll: %+v", resp)
	}

	// Nobody waits: released, Hono's 503 with its hint.
	typeLine(`ow -t acme -d dev-1 -n reboot`)
	waitFor(t, cmdErr, `Cannot send command to device.\nCheck if device is connected.*\nError: 503 - `)
	// A device's error status fails the request: the device answers 500.
	polled = longPoll()
	waitCount(t, appOut, `(?m)^t dev-1 application/json \{"temp": 6\} \{.*ttd=30.*\}$`, 3)
	typeLine(`req -t acme -d dev-1 -n selfTest -r 30`)
	resp = <-polled
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("long poll: %+v", resp)
	}
	if r := post("/command/res/"+resp.Header.Get("hono-cmd-req-id"), "text/plain", "broken", map[string]string{"hono-cmd-status": "500"}); r.StatusCode != 202 {
		t.Fatalf("response: %d", r.StatusCode)
	}
	waitFor(t, cmdErr, `Error: 500 - broken`)
	// Shell mistakes leave the shell running.
	typeLine(`ow -t acme -n x`)
	waitFor(t, cmdErr, `Missing required option: '--device=<deviceId>'`)
	typeLine(`ow -t acme -d ${NOPE} -n x`)
	waitFor(t, cmdErr, `Environment does not contain variable with name NOPE`)
	typeLine(`help`)
	waitFor(t, cmdErr, `req  send a request-response command`)
	// Another tenant's commands: the platform admin may, if it is IoT-enabled.
	typeLine(`ow -t nosuch -d dev-1 -n x`)
	waitFor(t, cmdErr, `Error: 404 - `)
	typeLine("quit")
	select {
	case err := <-shellDone:
		if err != nil {
			t.Fatalf("shell: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("quit did not end the shell")
	}
	if n := strings.Count(cmdOut.String(), "\n"); n != 1 {
		t.Errorf("stdout carries more than the one response:\n%s", cmdOut.String())
	}

	// ctrl-c (the context) ends the consumer with exit 0.
	cancel()
	select {
	case code := <-consumed:
		if code != 0 {
			t.Fatalf("consume exit %d: %s", code, appErr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("consume did not end")
	}
}
