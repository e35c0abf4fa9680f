package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/testkit"
)

func TestCLIDevices(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)
	mustCLI(t, env, 0, "tenant", "create", "acme")

	r := mustCLI(t, env, 0, "device", "create", "--tenant", "acme", "--id", "d1", "--ext", "brand=acme", "--via", "gw1")
	if !strings.Contains(r.stdout, "device d1 created in tenant acme") {
		t.Fatalf("stdout: %s", r.stdout)
	}
	mustCLI(t, env, 0, "device", "create", "gw1", "--tenant", "acme")
	var created map[string]string
	if err := json.Unmarshal([]byte(mustCLI(t, env, 0, "device", "create", "--tenant", "acme", "--disabled", "-o", "json").stdout), &created); err != nil || created["id"] == "" {
		t.Fatalf("json create: %v %v", created, err)
	}
	gen := created["id"]

	rows := columns(t, mustCLI(t, env, 0, "device", "list", "--tenant", "acme").stdout)
	if len(rows) != 3 {
		t.Fatalf("rows %q", rows)
	}
	byID := map[string][]string{}
	for _, row := range rows {
		byID[row[0]] = row
	}
	if byID["d1"][1] != "true" || byID["d1"][2] != "gw1" || byID[gen][1] != "false" || byID["gw1"] == nil {
		t.Fatalf("rows %q", rows)
	}
	rows = columns(t, mustCLI(t, env, 0, "device", "list", "--tenant", "acme", "--gateways").stdout)
	if len(rows) != 1 || rows[0][0] != "gw1" {
		t.Fatalf("gateways %q", rows)
	}
	r = mustCLI(t, env, 0, "device", "list", "--tenant", "acme", "--page-size", "1", "--sort", `{"field":"/id","direction":"desc"}`)
	if rows := columns(t, strings.SplitN(r.stdout, "\n(", 2)[0]); len(rows) != 1 || !strings.Contains(r.stdout, "(1 of 3 devices") {
		t.Fatalf("page: %s", r.stdout)
	}
	var page struct {
		Total int `json:"total"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, env, 0, "device", "list", "--tenant", "acme", "--filter", `{"field":"/ext/brand","value":"ac*"}`, "-o", "json").stdout), &page); err != nil || page.Total != 1 {
		t.Fatalf("filtered: %+v %v", page, err)
	}

	r = mustCLI(t, env, 0, "device", "get", "d1", "--tenant", "acme")
	if !strings.Contains(r.stdout, "brand") || !strings.Contains(r.stdout, "gw1") {
		t.Fatalf("get: %s", r.stdout)
	}
	var dev map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, env, 0, "device", "get", "--id", "d1", "--tenant", "acme", "-o", "json").stdout), &dev); err != nil || dev["via"] == nil {
		t.Fatalf("json get: %v %v", dev, err)
	}
	r = mustCLI(t, env, 1, "device", "get", "nope", "--tenant", "acme")
	if !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	r = mustCLI(t, env, 1, "device", "create", "d1", "--tenant", "acme")
	if !strings.Contains(r.stderr, "exists") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	mustCLI(t, env, 1, "device", "create", "--tenant", "nope")
	mustCLI(t, env, 2, "device", "get", "--tenant", "acme")
	mustCLI(t, env, 2, "device", "create", "a", "--id", "b", "--tenant", "acme")
	mustCLI(t, env, 2, "device", "create", "--ext", "novalue", "--tenant", "acme")

	mustCLI(t, env, 0, "device", "delete", "d1", "--tenant", "acme")
	mustCLI(t, env, 1, "device", "delete", "d1", "--tenant", "acme")
	r = mustCLI(t, env, 0, "device", "delete", "--all", "--tenant", "acme")
	if !strings.Contains(r.stdout, "all devices of tenant acme deleted") {
		t.Fatalf("stdout: %s", r.stdout)
	}
	// No devices: an empty table (Hono answers 404), and [] in JSON.
	if rows := columns(t, mustCLI(t, env, 0, "device", "list", "--tenant", "acme").stdout); len(rows) != 0 {
		t.Fatalf("rows after delete --all: %q", rows)
	}
	if err := json.Unmarshal([]byte(mustCLI(t, env, 0, "device", "list", "--tenant", "acme", "-o", "json").stdout), &page); err != nil || page.Total != 0 {
		t.Fatalf("json list: %+v %v", page, err)
	}
	mustCLI(t, env, 1, "device", "list", "--tenant", "nope")
}

func TestCLICredentials(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)
	mustCLI(t, env, 0, "tenant", "create", "acme")
	mustCLI(t, env, 0, "device", "create", "--tenant", "acme", "--id", "d1")

	r := mustCLI(t, env, 0, "credential", "set", "--tenant", "acme", "--device", "d1", "--auth-id", "sensor1", "--password", "s3cret-pw")
	if !strings.Contains(r.stdout, "credentials of device d1 in tenant acme set") {
		t.Fatalf("stdout: %s", r.stdout)
	}
	r = mustCLI(t, env, 0, "credential", "list", "--tenant", "acme", "--device", "d1")
	rows := columns(t, r.stdout)
	if len(rows) != 1 || rows[0][0] != "hashed-password" || rows[0][1] != "sensor1" || rows[0][2] != "true" || rows[0][3] == "-" {
		t.Fatalf("rows %q", rows)
	}
	out := mustCLI(t, env, 0, "credential", "list", "--tenant", "acme", "--device", "d1", "-o", "json").stdout
	if strings.Contains(out, "s3cret-pw") || strings.Contains(out, "pwd-hash") {
		t.Fatalf("json list shows the password: %s", out)
	}

	// A whole set from a file replaces the credentials.
	file := filepath.Join(t.TempDir(), "creds.json")
	if err := os.WriteFile(file, []byte(`[{"type": "psk", "auth-id": "psk1", "secrets": [{"key": "c2VjcmV0"}]},
		{"type": "hashed-password", "auth-id": "sensor2", "secrets": [{"pwd-plain": "pw2"}]}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, env, 0, "credential", "set", "--tenant", "acme", "--device", "d1", "--file", file)
	if rows := columns(t, mustCLI(t, env, 0, "credential", "list", "--tenant", "acme", "--device", "d1").stdout); len(rows) != 2 {
		t.Fatalf("rows after --file %q", rows)
	}
	mustCLI(t, env, 0, "credential", "set", "--tenant", "acme", "--device", "d1", "--auth-id", "psk2", "--psk-key", "c2VjcmV0")

	// Errors: unknown device, an auth-id another device holds, usage.
	r = mustCLI(t, env, 1, "credential", "list", "--tenant", "acme", "--device", "nope")
	if !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	mustCLI(t, env, 0, "device", "create", "--tenant", "acme", "--id", "d2")
	r = mustCLI(t, env, 1, "credential", "set", "--tenant", "acme", "--device", "d2", "--auth-id", "psk2", "--psk-key", "c2VjcmV0")
	if !strings.Contains(r.stderr, "exists") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	mustCLI(t, env, 2, "credential", "set", "--tenant", "acme", "--device", "d1", "--auth-id", "a")
	mustCLI(t, env, 2, "credential", "set", "--tenant", "acme", "--device", "d1", "--auth-id", "a", "--password", "p", "--psk-key", "AA==")
	mustCLI(t, env, 2, "credential", "set", "--tenant", "acme", "--auth-id", "a", "--password", "p")
	mustCLI(t, env, 2, "credential", "set", "--tenant", "acme", "--device", "d1", "--auth-id", "a", "--psk-key", "not base64!")
	mustCLI(t, env, 2, "credential", "list", "--tenant", "acme")
	r = mustCLI(t, env, 1, "credential", "set", "--tenant", "acme", "--device", "d1", "--auth-id", "bad id", "--password", "p")
	if !strings.Contains(r.stderr, "invalid") {
		t.Fatalf("stderr: %s", r.stderr)
	}
}
