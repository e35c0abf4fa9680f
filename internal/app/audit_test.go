package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/app"
	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/testkit"
)

// Audit log end to end (issue 14 item 7): each role on its own
// connection, with the clients a user would use — an operator's admin
// changes with net/http, devices' and applications' logins and refusals
// with mosquitto_pub and Qpid Proton, a permission denial, and a
// password-guessing storm that writes a bounded number of records.

// needTool finds an external client: missing fails when CI=true and
// skips otherwise.
func needTool(t *testing.T, path string, check ...string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err == nil && len(check) > 0 {
		err = exec.Command(p, check...).Run()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not usable (apt-get install -y mosquitto-clients python3-qpid-proton): %v", path, err)
		}
		t.Skipf("%s not usable: %v", path, err)
	}
	return p
}

// auditNode is a node whose audit log is a file the test reads.
type auditNode struct {
	*running
	file  string
	log   *audit.Log
	admin string // admin API base URL
	pw    string
}

func startAudited(t *testing.T) *auditNode {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.AdminPassword = "admin-pw-1"
	cfg.Anonymous = false
	cfg.Connections.HandshakeTimeout = config.Duration(time.Minute)
	n := &auditNode{file: filepath.Join(t.TempDir(), "audit.log"), pw: cfg.AdminPassword}
	var err error
	n.log, err = audit.Open(n.file, "json", nil, audit.Options{SummaryEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	n.running = startWith(t, cfg, app.WithAudit(n.log))
	n.admin = "http://" + n.app.AdminAddr().String()
	return n
}

// startWith is start with more options.
func startWith(t *testing.T, cfg *config.Config, opts ...app.Option) *running {
	t.Helper()
	r := &running{stdout: &syncBuffer{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	logger, err := app.NewLogger(config.Log{Format: "json", Level: "info"}, r.logs)
	if err != nil {
		t.Fatal(err)
	}
	r.app, err = app.New(cfg, append([]app.Option{app.WithLogger(logger), app.WithStdout(r.stdout)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	var ctx context.Context
	ctx, r.cancel = context.WithCancel(context.Background())
	go func() { r.done <- r.app.Run(ctx) }()
	select {
	case <-r.app.Ready():
	case err := <-r.done:
		t.Fatalf("start: %v", err)
	case <-time.After(testkit.StartTimeout):
		t.Fatal("not ready")
	}
	t.Cleanup(r.stop)
	return r
}

func (n *auditNode) call(t *testing.T, method, path, user, pass, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, n.admin+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// records reads the audit file.
func (n *auditNode) records(t *testing.T) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(n.file)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line not JSON: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// find waits for a record with every field of want.
func (n *auditNode) find(t *testing.T, want map[string]any) map[string]any {
	t.Helper()
	var found map[string]any
	deadline := time.Now().Add(30 * time.Second)
	for found == nil {
		for _, r := range n.records(t) {
			if matches(r, want) {
				found = r
				break
			}
		}
		if found == nil {
			if time.Now().After(deadline) {
				var all strings.Builder
				for _, r := range n.records(t) {
					fmt.Fprintf(&all, "%v\n", r)
				}
				t.Fatalf("no audit record with %v in:\n%s", want, all.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return found
}

func matches(r, want map[string]any) bool {
	for k, v := range want {
		if fmt.Sprint(r[k]) != fmt.Sprint(v) {
			return false
		}
	}
	return true
}

func TestAuditLogEvents(t *testing.T) {
	mosq := needTool(t, "mosquitto_pub")
	n := startAudited(t)
	mqttHost, mqttPort, _ := net.SplitHostPort(n.app.ListenerAddr("mqtt").String())
	amqpAddr := n.app.ListenerAddr("amqp").String()

	// The operator: admin changes through the API.
	if st := n.call(t, "POST", "/api/tenants", "admin", n.pw, `{"name":"acme"}`); st != 201 {
		t.Fatalf("create tenant: %d", st)
	}
	if st := n.call(t, "POST", "/api/tenants/acme/users", "admin", n.pw,
		`{"name":"app1","password":"pw1","roles":["app"],"permissions":[{"pattern":"allowed/#","actions":["send","receive"]}]}`); st != 201 {
		t.Fatalf("create user: %d", st)
	}
	r := n.find(t, map[string]any{"event": "admin", "method": "POST", "resource": "tenant acme"})
	if r["user"] != "admin" || r["tenant"] != "default" || r["status"] != 201.0 || r["protocol"] != "admin" ||
		!strings.HasPrefix(fmt.Sprint(r["remote"]), "127.0.0.1:") || r["msg"] != "admin request" {
		t.Fatalf("admin change record %v", r)
	}
	n.find(t, map[string]any{"event": "admin", "resource": "user acme/app1", "status": 201})
	// A failed change is audited too, with its status.
	if st := n.call(t, "POST", "/api/tenants", "admin", n.pw, `{"name":"acme"}`); st != 409 {
		t.Fatalf("duplicate tenant: %d", st)
	}
	n.find(t, map[string]any{"event": "admin", "method": "POST", "path": "/api/tenants", "status": 409, "level": "WARN"})
	// Reads are not audited; a wrong admin password and a role that
	// does not allow the request are.
	n.call(t, "GET", "/api/tenants", "admin", n.pw, "")
	if st := n.call(t, "GET", "/api/tenants", "admin", "guess", ""); st != 401 {
		t.Fatalf("wrong admin password: %d", st)
	}
	n.find(t, map[string]any{"event": "login_failed", "protocol": "admin", "user": "admin", "reason": "bad_credentials"})
	if st := n.call(t, "DELETE", "/api/tenants/acme", "app1@acme", "pw1", ""); st != 403 {
		t.Fatalf("app deleting a tenant: %d", st)
	}
	n.find(t, map[string]any{"event": "denied", "protocol": "admin", "user": "app1", "tenant": "acme", "resource": "tenant acme", "status": 403})

	// A device-side client with mosquitto_pub: a login, a refusal, and
	// (MQTT 5) a publish its permissions do not allow.
	pub := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		base := []string{"-h", mqttHost, "-p", mqttPort, "-d", "-q", "1", "-m", "hello"}
		out, _ := exec.CommandContext(ctx, mosq, append(base, args...)...).CombinedOutput()
		return string(out)
	}
	if out := pub("-u", "app1@acme", "-P", "pw1", "-t", "allowed/x", "-i", "dev-ok"); !strings.Contains(out, "received CONNACK (0)") {
		t.Fatalf("mosquitto_pub: %s", out)
	}
	r = n.find(t, map[string]any{"event": "login", "protocol": "mqtt", "client_id": "dev-ok"})
	if r["user"] != "app1" || r["tenant"] != "acme" || !strings.HasPrefix(fmt.Sprint(r["remote"]), "127.0.0.1:") {
		t.Fatalf("mqtt login record %v", r)
	}
	if out := pub("-u", "app1@acme", "-P", "wrong", "-t", "allowed/x", "-i", "dev-bad"); !strings.Contains(out, "bad user name or password") {
		t.Fatalf("mosquitto_pub with a wrong password: %s", out)
	}
	r = n.find(t, map[string]any{"event": "login_failed", "protocol": "mqtt", "client_id": "dev-bad"})
	if r["user"] != "app1@acme" || r["reason"] != "bad_credentials" || r["level"] != "WARN" || !strings.HasPrefix(fmt.Sprint(r["remote"]), "127.0.0.1:") {
		t.Fatalf("mqtt refusal record %v", r)
	}
	if strings.Contains(fmt.Sprint(r), "wrong") {
		t.Fatalf("the password is in the record: %v", r)
	}
	out := pub("-V", "mqttv5", "-u", "app1@acme", "-P", "pw1", "-t", "forbidden/x", "-i", "dev-denied")
	if !strings.Contains(out, "135") && !strings.Contains(strings.ToLower(out), "not authori") {
		t.Logf("mosquitto_pub to a forbidden topic: %s", out)
	}
	r = n.find(t, map[string]any{"event": "denied", "protocol": "mqtt", "client_id": "dev-denied"})
	if r["resource"] != "forbidden/x" || r["action"] != "send" || r["user"] != "app1" || r["tenant"] != "acme" {
		t.Fatalf("mqtt denial record %v", r)
	}
	// Anonymous is off: refused and audited.
	pub("-t", "allowed/x", "-i", "dev-anon")
	n.find(t, map[string]any{"event": "login_failed", "protocol": "mqtt", "client_id": "dev-anon", "reason": "anonymous_refused"})

	// An application with Qpid Proton and a wrong password, then go-amqp
	// with the right one and a link it may not attach.
	py := needTool(t, "/usr/bin/python3", "-c", "import proton")
	script := `
import sys
from proton.utils import BlockingConnection
try:
    c = BlockingConnection(sys.argv[1], timeout=30, allowed_mechs="PLAIN")
    c.close()
    print("CONNECTED")
except Exception as e:
    print("REFUSED", e)
`
	u := "amqp://" + url.PathEscape("app1@acme") + ":wrong@" + amqpAddr
	pout, err := exec.Command(py, "-c", script, u).CombinedOutput()
	if err != nil || !strings.Contains(string(pout), "REFUSED") {
		t.Fatalf("proton with a wrong password: %v %s", err, pout)
	}
	r = n.find(t, map[string]any{"event": "login_failed", "protocol": "amqp", "user": "app1@acme"})
	if r["mechanism"] != "PLAIN" || r["reason"] != "bad_credentials" || !strings.HasPrefix(fmt.Sprint(r["remote"]), "127.0.0.1:") {
		t.Fatalf("amqp refusal record %v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := goamqp.Dial(ctx, "amqp://"+amqpAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("app1@acme", "pw1"), ContainerID: "app-c1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r = n.find(t, map[string]any{"event": "login", "protocol": "amqp", "client_id": "app-c1"})
	if r["user"] != "app1" || r["tenant"] != "acme" || r["mechanism"] != "PLAIN" {
		t.Fatalf("amqp login record %v", r)
	}
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if snd, err := sess.NewSender(ctx, "forbidden/y", nil); err == nil {
		err = snd.Send(ctx, goamqp.NewMessage([]byte("x")), nil)
		if err == nil {
			t.Fatal("a send to a forbidden address succeeded")
		}
	}
	n.find(t, map[string]any{"event": "denied", "protocol": "amqp", "resource": "forbidden/y", "action": "send", "user": "app1"})

	// Nothing secret anywhere in the file.
	b, _ := os.ReadFile(n.file)
	for _, secret := range []string{n.pw, "pw1", "wrong", "guess", "$2a$"} {
		if bytes.Contains(b, []byte(secret)) {
			t.Fatalf("audit log contains %q:\n%s", secret, b)
		}
	}
}

// mqttConnect sends an MQTT 3.1.1 CONNECT with user and password and
// returns the CONNACK's return code.
func mqttConnect(addr, user, pass string) (byte, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var body []byte
	body = append(body, str("MQTT")...)
	body = append(body, 4, 0xC2, 0, 30) // level 4; user name, password, clean session; keep-alive
	body = append(body, str("storm")...)
	body = append(body, str(user)...)
	body = append(body, str(pass)...)
	pkt := append([]byte{0x10, byte(len(body))}, body...)
	if _, err := c.Write(pkt); err != nil {
		return 0, err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		return 0, err
	}
	return ack[3], nil
}

// TestAuditLogStorm: 200 wrong MQTT logins from one address write at most
// the bucket's burst plus a few records, and a summary that counts the
// rest; the sum is exact.
func TestAuditLogStorm(t *testing.T) {
	n := startAudited(t)
	addr := n.app.ListenerAddr("mqtt").String()
	const storm = 200
	var wg sync.WaitGroup
	errs := make(chan error, storm)
	next := make(chan int, storm)
	for i := range storm {
		next <- i
	}
	close(next)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				// A tenant that does not exist: refused without a bcrypt
				// compare, so the storm is quick even under -race.
				rc, err := mqttConnect(addr, "admin@no-such-tenant", "guess")
				if err == nil && rc != 4 {
					err = fmt.Errorf("CONNACK %d, want 4", rc)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	during := 0
	for _, r := range n.records(t) {
		if r["event"] == "login_failed" {
			during++
		}
	}
	n.stop()
	if err := n.log.Close(); err != nil { // the final summaries
		t.Fatal(err)
	}
	logged, suppressed, summaries := 0, 0, 0
	for _, r := range n.records(t) {
		if r["event"] != "login_failed" {
			continue
		}
		switch r["msg"] {
		case "login refused":
			logged++
		case "audit events suppressed":
			summaries++
			suppressed += int(r["suppressed"].(float64))
			if r["source"] != "127.0.0.1" || r["reason"] != "bad_credentials" || r["protocol"] != "mqtt" {
				t.Errorf("summary %v", r)
			}
		}
	}
	burst := audit.DefaultLimits[audit.LoginFailed].Burst
	t.Logf("%d wrong logins: %d records, %d summaries counting %d suppressed", storm, logged, summaries, suppressed)
	if logged+suppressed != storm {
		t.Fatalf("logged %d + suppressed %d != %d", logged, suppressed, storm)
	}
	// The bucket refills one a second: a slow run earns a few more.
	if logged > burst+30 || during > burst+30 || summaries == 0 {
		t.Fatalf("%d records for %d refusals (burst %d), %d summaries", logged, storm, burst, summaries)
	}
	// The diagnostic log does not get one line per refusal either.
	if c := strings.Count(n.logs.String(), "authentication failed"); c > 0 {
		t.Fatalf("%d 'authentication failed' lines at info level", c)
	}
}
