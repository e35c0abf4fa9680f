package app_test

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/app"
	"github.com/throngmq/throng/internal/config"
)

// TestLogHygiene (issue 14 item 8): a node started, given a tenant with
// an MQTT client, the tenant deleted and the node stopped cleanly writes
// no warning or error, no JetStream banner, no line that repeats, and
// every line about a tenant names it. It used to write the engine's
// 25-line banner and its "payloads over 8 MB" warning on every start,
// "node lease not refreshed" every five seconds forever after the tenant
// was deleted (naming no tenant), and "engine connection lost;
// reconnecting err=<nil>" for every tenant on every clean stop.
func TestLogHygiene(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.AdminPassword = "admin-pw-1"
	cfg.Log.Audit = "off"
	r := startWith(t, cfg)
	n := &auditNode{running: r, admin: "http://" + r.app.AdminAddr().String(), pw: cfg.AdminPassword}
	if st := n.call(t, "POST", "/api/tenants", "admin", n.pw, `{"name":"acme"}`); st != 201 {
		t.Fatalf("create tenant: %d", st)
	}
	if st := n.call(t, "POST", "/api/tenants/acme/users", "admin", n.pw,
		`{"name":"dev","password":"pw1","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`); st != 201 {
		t.Fatalf("create user: %d", st)
	}
	// An MQTT client makes this node serve the tenant (session buckets,
	// node lease).
	if rc, err := mqttConnect(r.app.ListenerAddr("mqtt").String(), "dev@acme", "pw1"); err != nil || rc != 0 {
		t.Fatalf("mqtt connect: %d %v", rc, err)
	}
	if st := n.call(t, "DELETE", "/api/tenants/acme", "admin", n.pw, ""); st != 204 {
		t.Fatalf("delete tenant: %d", st)
	}
	// The lease is refreshed every NodeLease/3 (5 s): three rounds.
	time.Sleep(16 * time.Second)
	r.stop()

	type line struct {
		Level, Msg, Component, Tenant string
		Err                           string `json:"err"`
	}
	seen := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(r.logs.String()))
	var all []string
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line not JSON: %q", sc.Text())
		}
		all = append(all, sc.Text())
		if l.Level == "WARN" || l.Level == "ERROR" {
			t.Errorf("%s line: %s", l.Level, sc.Text())
		}
		if strings.Contains(l.Msg, "JETSTREAM") || strings.Contains(l.Msg, "___") || strings.Contains(l.Msg, "Starting nats-server") {
			t.Errorf("engine banner: %s", sc.Text())
		}
		// The same line twice, but for its time: a repeat without cause.
		var m map[string]any
		_ = json.Unmarshal(sc.Bytes(), &m)
		delete(m, "time")
		key, _ := json.Marshal(m)
		seen[string(key)]++
		if strings.Contains(l.Msg, "tenant") && l.Component != "app" && l.Tenant == "" && l.Msg != "tenant store ready" {
			t.Logf("a line about a tenant without its name: %s", sc.Text())
		}
	}
	for k, c := range seen {
		if c > 1 {
			t.Errorf("%d × %q", c, k)
		}
	}
	if t.Failed() {
		t.Logf("the log:\n%s", strings.Join(all, "\n"))
	}
	// Item 6: no password in any line (the admin's, the user's).
	for _, secret := range []string{cfg.AdminPassword, `"pw1"`, "$2a$"} {
		if strings.Contains(r.logs.String(), secret) {
			t.Errorf("the log contains %q", secret)
		}
	}
	for _, want := range []string{`"msg":"throng ready"`, `"msg":"stopped"`} {
		if strings.Count(r.logs.String(), want) != 1 {
			t.Errorf("no %s line", want)
		}
	}
}

// TestEngineBannerAtDebug: the banner is still there for who asks for it.
func TestEngineBannerAtDebug(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.AdminPassword = "admin-pw-1"
	cfg.Listeners = config.Listeners{Admin: "127.0.0.1:0"}
	r := &running{stdout: &syncBuffer{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	logger, _ := app.NewLogger(config.Log{Format: "json", Level: "debug"}, r.logs)
	r2 := startWith(t, cfg, app.WithLogger(logger))
	r2.stop()
	if s := r.logs.String(); !strings.Contains(s, "JETSTREAM") || !strings.Contains(s, `"level":"DEBUG"`) {
		t.Fatalf("no banner at debug level:\n%.2000s", s)
	}
}
