package main

import (
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/testkit"
)

func TestCLIPlans(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)

	r := mustCLI(t, env, 0, "plan", "create", "small", "--max-messages-in-per-second", "2.5", "--burst", "10", "--max-addresses", "3")
	if !strings.Contains(r.stdout, "plan small created") {
		t.Fatalf("stdout: %s", r.stdout)
	}
	pl, ok := p.Store.Plan("small")
	if !ok || pl.Limits.MaxMessagesInPerSecond != 2.5 || pl.Limits.Burst != 10 || pl.Limits.MaxAddresses != 3 {
		t.Fatalf("stored plan %+v", pl)
	}
	rows := columns(t, mustCLI(t, env, 0, "plan", "list").stdout)
	if len(rows) != 1 || rows[0][0] != "small" || !strings.Contains(rows[0][1], "messagesInPerSecond=2.5") {
		t.Fatalf("rows %q", rows)
	}
	if !strings.Contains(mustCLI(t, env, 0, "plan", "get", "small").stdout, "burst=10") {
		t.Fatal("text get lacks the burst")
	}
	mustCLI(t, env, 0, "plan", "update", "small", "--max-messages-in-per-second", "7")
	if pl, _ := p.Store.Plan("small"); pl.Limits.MaxMessagesInPerSecond != 7 || pl.Limits.Burst != 0 {
		t.Fatalf("updated plan %+v", pl)
	}
	if r := mustCLI(t, env, 1, "plan", "create", "small"); !strings.Contains(r.stderr, "exists") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	mustCLI(t, env, 0, "plan", "delete", "small")
	if r := mustCLI(t, env, 1, "plan", "get", "small"); !strings.Contains(r.stderr, "404") {
		t.Fatalf("stderr: %s", r.stderr)
	}
}
