package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/testkit"
)

// throng bridge create|list|get|delete against a platform (the remote is
// not running: the bridge shows as connecting, with its last error).
func TestCLIBridges(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)

	r := mustCLI(t, env, 0, "bridge", "create", "cloud", "--url", "mqtt://127.0.0.1:1", "--direction", "both",
		"--map", "sensors/#", "--map", "cmd/#,,site1/", "--username", "u", "--remote-password", "secret", "--overflow", "drop-oldest", "--window", "16")
	if !strings.Contains(r.stdout, "bridge cloud created") {
		t.Fatalf("stdout: %s", r.stdout)
	}
	// The bridge starts a moment after its definition is stored (the
	// manager follows the replicated store): "stopped" until then (CI
	// once listed it that early).
	var rows [][]string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		rows = columns(t, mustCLI(t, env, 0, "bridge", "list").stdout)
		if len(rows) == 1 && rows[0][4] == "stopped" && time.Now().Before(deadline) {
			continue
		}
		break
	}
	if len(rows) != 1 || rows[0][0] != "cloud" || rows[0][1] != "mqtt" || rows[0][2] != "both" || rows[0][4] != "connecting" {
		t.Fatalf("rows %q", rows)
	}
	get := mustCLI(t, env, 0, "bridge", "get", "cloud").stdout
	for _, want := range []string{"sensors/#", "cmd/# → site1/cmd/#", "drop-oldest", "connecting"} {
		if !strings.Contains(get, want) {
			t.Fatalf("get lacks %q:\n%s", want, get)
		}
	}
	if !regexp.MustCompile(`(?m)^window\s+16\s*$`).MatchString(get) {
		t.Fatalf("get lacks window 16:\n%s", get)
	}
	if j := mustCLI(t, env, 0, "bridge", "get", "cloud", "-o", "json").stdout; strings.Contains(j, "secret") || !strings.Contains(j, "********") {
		t.Fatalf("json shows the password or no mask:\n%s", j)
	}
	if r := mustCLI(t, env, 1, "bridge", "create", "cloud", "--url", "mqtt://127.0.0.1:1", "--map", "x"); !strings.Contains(r.stderr, "exists") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	if r := mustCLI(t, env, 1, "bridge", "create", "bad", "--url", "ftp://x", "--map", "x"); !strings.Contains(r.stderr, "scheme") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	if r := mustCLI(t, env, 1, "bridge", "create", "wide", "--url", "mqtt://127.0.0.1:1", "--map", "x", "--window", "300"); !strings.Contains(r.stderr, "window") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	// Kafka: --topic and --key go to every --map.
	mustCLI(t, env, 0, "bridge", "create", "lake", "--kind", "kafka", "--url", "kafka://127.0.0.1:1,127.0.0.1:2",
		"--map", "tele/#", "--topic", "telemetry", "--key", "property:site")
	if get := mustCLI(t, env, 0, "bridge", "get", "lake").stdout; !strings.Contains(get, "tele/# → kafka telemetry (key property:site)") {
		t.Fatalf("get lake:\n%s", get)
	}
	if r := mustCLI(t, env, 1, "bridge", "create", "lake2", "--kind", "kafka", "--url", "kafka://h", "--map", "x"); !strings.Contains(r.stderr, "topic") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	mustCLI(t, env, 0, "bridge", "delete", "lake")
	mustCLI(t, env, 0, "bridge", "delete", "cloud")
	if r := mustCLI(t, env, 1, "bridge", "get", "cloud"); !strings.Contains(r.stderr, "404") {
		t.Fatalf("stderr: %s", r.stderr)
	}
}
