package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/bench"
	"github.com/throngmq/throng/internal/testkit"
)

func TestCLIBench(t *testing.T) {
	p := testkit.Start(t)
	env := []string{"THRONG_BENCH_USER=" + p.AdminUser, "THRONG_BENCH_PASSWORD=" + p.AdminPassword}
	r := mustCLI(t, env, exitOK, "bench", "mqtt", "--server", p.MQTTAddr, "--qos", "1", "--count", "200",
		"--publishers", "2", "--label", "broker=throng,shape=smoke", "-o", "json", "--quiet")
	var res bench.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("json output: %v\n%s", err, r.stdout)
	}
	if res.Mode != "mqtt" || res.Sent != 200 || res.Received != 200 || res.Lost != 0 || res.Label != "broker=throng,shape=smoke" {
		t.Fatalf("result %+v", res)
	}
	r = mustCLI(t, env, exitOK, "bench", "conns", "--server", p.MQTTAddr, "--n", "10", "--hold", "10ms")
	if !strings.Contains(r.stdout, "10 opened, 0 failed of 10") {
		t.Fatalf("conns text report:\n%s", r.stdout)
	}
	file := filepath.Join(t.TempDir(), "r.jsonl")
	if err := os.WriteFile(file, []byte(mustCLI(t, env, exitOK, "bench", "mqtt", "--server", p.MQTTAddr, "--count", "50",
		"--label", "broker=throng,shape=smoke", "-o", "json", "--quiet").stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	r = mustCLI(t, nil, exitOK, "bench", "table", file)
	if !strings.Contains(r.stdout, "| smoke | delivered (msg/s) |") {
		t.Fatalf("table:\n%s", r.stdout)
	}
	r = mustCLI(t, nil, exitOK, "bench", "registry", "--admin-url", p.AdminURL, "--admin-password", p.AdminPassword,
		"--devices", "20", "--phases", "create,page", "--secret", "sha-256", "--page-requests", "2", "--quiet")
	if !strings.Contains(r.stdout, "20 created, 0 existed, 0 failed of 20") || !strings.Contains(r.stdout, "page         end") {
		t.Fatalf("registry text report:\n%s", r.stdout)
	}
	mustCLI(t, nil, exitUsage, "bench", "registry", "-o", "yaml")
	mustCLI(t, nil, exitUsage, "bench")
	mustCLI(t, nil, exitUsage, "bench", "nope")
	mustCLI(t, nil, exitUsage, "bench", "mqtt", "-o", "yaml")
	mustCLI(t, nil, exitOK, "bench", "--help")
}
