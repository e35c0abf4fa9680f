package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/testkit"
)

// cliResult is the outcome of one in-process CLI run.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the command line in-process with the given environment.
func runCLI(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, env, &out, &errb)
	return cliResult{code, out.String(), errb.String()}
}

// mustCLI runs the command line and fails unless it exits with want.
func mustCLI(t *testing.T, env []string, want int, args ...string) cliResult {
	t.Helper()
	r := runCLI(t, env, args...)
	if r.code != want {
		t.Fatalf("throng %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

func platformEnv(p *testkit.Platform) []string {
	return []string{"THRONG_SERVER=" + p.AdminURL, "THRONG_PASSWORD=" + p.AdminPassword}
}

// columns checks that a text table's rows start each column where the
// header does, and returns the rows split into fields.
func columns(t *testing.T, out string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := lines[0]
	var starts []int
	for i := range header {
		if header[i] != ' ' && (i == 0 || header[i-1] == ' ') {
			starts = append(starts, i)
		}
	}
	var rows [][]string
	for _, l := range lines[1:] {
		row := make([]string, len(starts))
		for k, s := range starts {
			end := len(l)
			if k+1 < len(starts) {
				end = starts[k+1]
			}
			if s > len(l) || end > len(l) && k+1 < len(starts) {
				t.Fatalf("row %q shorter than the header %q", l, header)
			}
			if s > 0 && l[s-1] != ' ' {
				t.Fatalf("column %d not aligned in %q (header %q)", k, l, header)
			}
			row[k] = strings.TrimSpace(l[s:end])
		}
		rows = append(rows, row)
	}
	return rows
}

func TestCLITenants(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)

	r := mustCLI(t, env, 0, "tenant", "create", "acme", "--strict", "--auto-create", "jobs/#=queue", "--max-addresses", "5", "--max-stored-bytes", "1GiB")
	if !strings.Contains(r.stdout, "tenant acme created") {
		t.Fatalf("stdout: %s", r.stdout)
	}
	ten, ok := p.Store.Tenant("acme")
	if !ok || !ten.Strict || len(ten.AutoCreate) != 1 || ten.AutoCreate[0].Pattern != "jobs/#" ||
		ten.Limits.MaxAddresses != 5 || ten.Limits.MaxStoredBytes != 1<<30 {
		t.Fatalf("stored tenant %+v", ten)
	}

	rows := columns(t, mustCLI(t, env, 0, "tenant", "list").stdout)
	if len(rows) != 2 || rows[0][0] != "acme" || rows[0][1] != "true" || rows[0][2] != "jobs/#=queue" || rows[1][0] != "default" {
		t.Fatalf("rows %q", rows)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, env, 0, "tenant", "list", "-o", "json").stdout), &list); err != nil || len(list) != 2 {
		t.Fatalf("json list: %v %v", list, err)
	}
	var one map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, env, 0, "tenant", "get", "acme", "-o", "json").stdout), &one); err != nil || one["name"] != "acme" {
		t.Fatalf("json get: %v %v", one, err)
	}
	if !strings.Contains(mustCLI(t, env, 0, "tenant", "get", "acme").stdout, "jobs/#=queue") {
		t.Fatal("text get lacks the rule")
	}

	r = mustCLI(t, env, 1, "tenant", "create", "acme")
	if !strings.Contains(r.stderr, "exists") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	mustCLI(t, env, 1, "tenant", "create", "Bad Name")
	mustCLI(t, env, 2, "tenant", "create", "x", "--auto-create", "nonsense")
	mustCLI(t, env, 0, "tenant", "delete", "acme")
	r = mustCLI(t, env, 1, "tenant", "delete", "acme")
	if !strings.Contains(r.stderr, "not_found") || !strings.Contains(r.stderr, "404") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	if _, ok := p.Store.Tenant("acme"); ok {
		t.Fatal("tenant not deleted")
	}
}

func TestCLIAddresses(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)
	mustCLI(t, env, 0, "tenant", "create", "acme")

	// Flags before and after the name.
	mustCLI(t, env, 0, "address", "create", "orders/eu", "--type", "queue", "--tenant", "acme", "--max-messages", "100", "--max-age", "24h", "--max-bytes", "1MiB")
	mustCLI(t, env, 0, "address", "create", "--tenant", "acme", "--type", "topic", "sensor data.v1/room 4")
	mustCLI(t, env, 0, "address", "create", "..", "--type", "anycast", "--tenant", "acme")
	a, ok := p.Store.Address("acme", "orders/eu")
	if !ok || a.Limits.MaxMessages != 100 || a.Limits.MaxBytes != 1<<20 || time.Duration(a.Limits.MaxAge) != 24*time.Hour {
		t.Fatalf("stored address %+v", a)
	}
	if _, ok := p.Store.Address("acme", "sensor data.v1/room 4"); !ok {
		t.Fatal("address with spaces and dots not stored")
	}

	rows := columns(t, mustCLI(t, env, 0, "address", "list", "--tenant", "acme").stdout)
	if len(rows) != 3 || rows[1][0] != "orders/eu" || rows[1][1] != "queue" || rows[1][2] != "0" || rows[2][0] != "sensor data.v1/room 4" {
		t.Fatalf("rows %q", rows)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, env, 0, "address", "get", "sensor data.v1/room 4", "--tenant", "acme", "-o", "json").stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got["name"] != "sensor data.v1/room 4" || got["stats"] == nil {
		t.Fatalf("get: %v", got)
	}
	mustCLI(t, env, 0, "address", "get", "..", "--tenant", "acme")
	if out := mustCLI(t, env, 0, "address", "get", "orders/eu", "--tenant", "acme").stdout; !strings.Contains(out, "backlog") ||
		!strings.Contains(out, "messagesRejected") || !strings.Contains(out, "bytesIn") || !strings.Contains(out, "bytesOut") {
		t.Fatalf("text get lacks stats:\n%s", out)
	}

	mustCLI(t, env, 2, "address", "create", "no-type", "--tenant", "acme")
	mustCLI(t, env, 2, "address", "create", "--type", "queue")
	r := mustCLI(t, env, 1, "address", "create", "x", "--type", "bogus", "--tenant", "acme")
	if !strings.Contains(r.stderr, "invalid") {
		t.Fatalf("stderr %s", r.stderr)
	}
	mustCLI(t, env, 1, "address", "create", "x", "--type", "queue", "--tenant", "nope")

	r = mustCLI(t, env, 0, "address", "delete", "orders/eu", "--tenant", "acme", "-o", "json")
	if !json.Valid([]byte(r.stdout)) {
		t.Fatalf("delete -o json: %q", r.stdout)
	}
	mustCLI(t, env, 1, "address", "get", "orders/eu", "--tenant", "acme")
	mustCLI(t, env, 0, "address", "delete", "..", "--tenant", "acme")
	if len(p.Store.Addresses("acme")) != 1 {
		t.Fatalf("addresses left: %v", p.Store.Addresses("acme"))
	}
}

func TestCLIUsers(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)
	mustCLI(t, env, 0, "tenant", "create", "acme")
	mustCLI(t, env, 0, "user", "create", "app1", "--user-password", "pw1", "--role", "app",
		"--permission", "orders/#=send,receive", "--permission", "status/+=view", "--tenant", "acme")
	u, ok := p.Store.User("acme", "app1")
	if !ok || len(u.Permissions) != 2 || len(u.Permissions[0].Actions) != 2 || u.PasswordHash == "" {
		t.Fatalf("stored user %+v", u)
	}
	// The new password works: the user is authenticated (and then refused,
	// not being an administrator).
	req, _ := http.NewRequest("GET", p.AdminURL+"/api/tenants", nil)
	req.SetBasicAuth("app1@acme", "pw1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("app1 login: %d", resp.StatusCode)
	}

	rows := columns(t, mustCLI(t, env, 0, "user", "list", "--tenant", "acme").stdout)
	if len(rows) != 1 || rows[0][0] != "app1" || rows[0][1] != "app" || rows[0][2] != "orders/#=send,receive status/+=view" {
		t.Fatalf("rows %q", rows)
	}
	out := mustCLI(t, env, 0, "user", "list", "--tenant", "acme", "-o", "json").stdout
	if strings.Contains(out, "$2a$") || strings.Contains(out, "pw1") || !json.Valid([]byte(out)) {
		t.Fatalf("json list: %s", out)
	}
	// The administrator's password may also be given as a flag: --password,
	// as in every command (issue 14 item 12), or --admin-password as before.
	env2 := []string{"THRONG_SERVER=" + p.AdminURL}
	mustCLI(t, env2, 0, "user", "create", "app2", "--user-password", "pw2", "--password", p.AdminPassword)
	mustCLI(t, env2, 0, "user", "create", "app4", "--user-password", "pw4", "--admin-password", p.AdminPassword)
	mustCLI(t, env2, 0, "user", "delete", "app2", "--password", p.AdminPassword)
	// The old habit (--password for the new user) is a usage error that
	// says which flag is which, not an unauthorized call.
	r := mustCLI(t, env2, 2, "user", "create", "app5", "--password", "pw5")
	if !strings.Contains(r.stderr, "--user-password is required") {
		t.Fatalf("stderr: %s", r.stderr)
	}

	mustCLI(t, env, 2, "user", "create", "app3", "--tenant", "acme")
	mustCLI(t, env, 2, "user", "create", "app3", "--user-password", "x", "--permission", "noequals")
	mustCLI(t, env, 1, "user", "create", "app1", "--user-password", "x", "--tenant", "acme")
	mustCLI(t, env, 0, "user", "delete", "app1", "--tenant", "acme")
	mustCLI(t, env, 1, "user", "delete", "app1", "--tenant", "acme")
}

func TestCLIStatusVersionAndErrors(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)
	rows := columns(t, mustCLI(t, env, 0, "status").stdout)
	fields := map[string]string{}
	for _, r := range rows {
		fields[r[0]] = r[1]
	}
	if fields["ready"] != "yes" || fields["tenants"] != "1" || fields["users"] != "1" {
		t.Fatalf("status %q", rows)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, env, 0, "status", "-o", "json").stdout), &st); err != nil || st["ready"] != true {
		t.Fatalf("status json %v %v", st, err)
	}
	if r := mustCLI(t, nil, 0, "version"); !strings.HasPrefix(r.stdout, "throng ") {
		t.Fatalf("version: %q", r.stdout)
	}

	r := mustCLI(t, []string{"THRONG_SERVER=" + p.AdminURL, "THRONG_PASSWORD=wrong"}, 1, "status")
	if !strings.Contains(r.stderr, "unauthorized") {
		t.Fatalf("stderr %s", r.stderr)
	}
	r = mustCLI(t, []string{"THRONG_SERVER=" + p.AdminURL}, 1, "tenant", "list")
	if !strings.Contains(r.stderr, "THRONG_PASSWORD") {
		t.Fatalf("no hint about the password: %s", r.stderr)
	}
	// Flags override the environment.
	mustCLI(t, []string{"THRONG_SERVER=http://127.0.0.1:1", "THRONG_PASSWORD=wrong"}, 0, "tenant", "list", "--server", p.AdminURL, "--password", p.AdminPassword)
	r = mustCLI(t, []string{"THRONG_SERVER=http://127.0.0.1:1"}, 1, "status")
	if !strings.Contains(r.stderr, "cannot reach") {
		t.Fatalf("stderr %s", r.stderr)
	}
	mustCLI(t, env, 2, "bogus")
	mustCLI(t, env, 2, "tenant", "bogus")
	mustCLI(t, env, 2)
	mustCLI(t, env, 2, "status", "-o", "yaml")
	mustCLI(t, env, 2, "status", "--server", "localhost:8161")
	mustCLI(t, env, 2, "tenant", "list", "--no-such-flag")
	mustCLI(t, env, 0, "tenant", "list", "-h")
	if r := mustCLI(t, env, 0, "help"); !strings.Contains(r.stdout, "throng serve") {
		t.Fatalf("help: %s", r.stdout)
	}
}

func TestServeCheck(t *testing.T) {
	// --check checks the data directory: these exist.
	fromFile, fromOther := t.TempDir(), t.TempDir()
	file := filepath.Join(t.TempDir(), "throng.yaml")
	if err := os.WriteFile(file, []byte("dataDir: "+fromFile+"\nlisteners:\n  mqtt: ':2883'\n  http: ':2080'\nadminPassword: topsecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"THRONG_CONFIG=" + file, "THRONG_HTTP=:3080", "THRONG_LOG_FORMAT=json"}
	r := mustCLI(t, env, 0, "serve", "--check", "--http", ":4080")
	for _, want := range []string{"dataDir: " + fromFile, "mqtt: :2883", "http: :4080", "format: json", "adminPassword: REDACTED"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--check output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "topsecret") {
		t.Fatal("password printed")
	}
	// --config wins over THRONG_CONFIG.
	other := filepath.Join(t.TempDir(), "other.yaml")
	os.WriteFile(other, []byte("dataDir: "+fromOther+"\n"), 0o600)
	if r := mustCLI(t, env, 0, "serve", "--check", "--config", other); !strings.Contains(r.stdout, "dataDir: "+fromOther) {
		t.Fatalf("--config ignored:\n%s", r.stdout)
	}
	r = mustCLI(t, []string{"THRONG_DATA_DIR=" + fromFile}, 2, "serve", "--check", "--admin", "nonsense")
	if !strings.Contains(r.stderr, "listeners.admin") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	mustCLI(t, nil, 2, "serve", "--check", "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	mustCLI(t, nil, 2, "serve", "--check", "extra-arg")
	mustCLI(t, []string{"THRONG_SYNC_ALWAYS=maybe"}, 2, "serve", "--check")
}

// TestNoSecretInUsage (issue 14 item 6): the usage text, printed for -h
// and for every flag mistake, never shows a password taken from the
// environment as a flag default; nor does serve --check.
func TestNoSecretInUsage(t *testing.T) {
	const secret = "s3cret-from-env"
	env := []string{"THRONG_PASSWORD=" + secret, "THRONG_BENCH_PASSWORD=" + secret, "THRONG_ADMIN_PASSWORD=" + secret,
		"THRONG_SERVER=http://127.0.0.1:1", "THRONG_DATA_DIR=" + t.TempDir()}
	cmds := [][]string{
		{"serve"}, {"status"},
		{"tenant", "create"}, {"tenant", "list"}, {"tenant", "get"}, {"tenant", "delete"},
		{"address", "create"}, {"address", "list"}, {"address", "get"}, {"address", "delete"},
		{"user", "create"}, {"user", "list"}, {"user", "delete"},
		{"device", "create"}, {"device", "list"}, {"device", "get"}, {"device", "delete"},
		{"credential", "set"}, {"credential", "list"},
		{"bench", "mqtt"}, {"bench", "amqp"}, {"bench", "conns"}, {"bench", "registry"}, {"bench", "table"},
		{"soak"},
	}
	for _, cmd := range cmds {
		for _, extra := range [][]string{{"-h"}, {"--pasword", "x"}, {"--no-such-flag"}} {
			args := append(append([]string{}, cmd...), extra...)
			r := runCLI(t, env, args...)
			if strings.Contains(r.stdout+r.stderr, secret) {
				t.Errorf("throng %s shows the password:\n%s%s", strings.Join(args, " "), r.stdout, r.stderr)
			}
			if extra[0] == "-h" && !strings.Contains(r.stderr, "Flags:") && !strings.Contains(r.stderr, "Usage") {
				t.Errorf("throng %s: no usage text:\n%s", strings.Join(args, " "), r.stderr)
			}
		}
	}
	r := mustCLI(t, env, 0, "serve", "--check")
	if strings.Contains(r.stdout+r.stderr, secret) || !strings.Contains(r.stdout, "adminPassword: REDACTED") {
		t.Errorf("serve --check:\n%s%s", r.stdout, r.stderr)
	}
	// The environment's password is still used.
	c := &cli{env: env, stdout: io.Discard, stderr: io.Discard}
	cl := c.clientFlags(c.newFlagSet("x", "x"), "password")
	if cl.password != secret {
		t.Fatalf("password from the environment not used: %q", cl.password)
	}
}

// TestServeCheckListsAll (issue 14 items 9 and 12): --check reports every
// problem, the file's with their line and key (never a Go type), the
// environment's, the flags' and the data directory's, and exits 2.
func TestServeCheckListsAll(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "throng.yaml")
	notDir := filepath.Join(dir, "plain-file")
	os.WriteFile(notDir, nil, 0o600)
	os.WriteFile(file, []byte("listners:\n  amqp: ':5672'\nlisteners:\n  mqtt: bad\nengine:\n  maxStore: lots\n"), 0o600)
	r := mustCLI(t, []string{"THRONG_SYNC_ALWAYS=maybe"}, 2, "serve", "--check", "--config", file, "--admin", "nonsense", "--data-dir", notDir)
	for _, want := range []string{
		"line 1: unknown key listners (did you mean listeners?)",
		`listeners.mqtt: "bad"`,
		`line 6: engine.maxStore: invalid size "lots"`,
		"THRONG_SYNC_ALWAYS",
		"listeners.admin",
		"data directory " + notDir + ": not a directory",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "config.Config") || strings.Contains(r.stderr, "not found in type") {
		t.Errorf("Go internals in the message:\n%s", r.stderr)
	}
	if runtime.GOOS == "linux" {
		r := mustCLI(t, nil, 2, "serve", "--check", "--data-dir", "/proc/nope")
		if !strings.Contains(r.stderr, "data directory /proc/nope: cannot be created") {
			t.Errorf("stderr: %s", r.stderr)
		}
	}
}
