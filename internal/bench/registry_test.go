package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/testkit"
)

// TestRegistry runs every phase of the registry mode at a tiny size
// against an in-process platform, then again one size up: the second run
// skips the devices that exist (resume).
func TestRegistry(t *testing.T) {
	p := testkit.Start(t)
	cfg := RegistryConfig{
		Node:   Node{AdminURL: p.AdminURL, AdminUser: p.AdminUser, AdminPassword: p.AdminPassword, Server: p.MQTTAddr},
		Tenant: "bench", Devices: 200, Secret: SecretSHA256, Concurrency: 8, PageRequests: 5,
		ConnectClients: 50, ConnectParallel: 8, Client: "both", Storm: 100, StormTimeout: time.Minute,
		ProbeRate: 100, pause: 200 * time.Millisecond, Progress: testLog{t},
	}
	r, err := RunRegistry(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := r.Registry
	if len(r.Errors) > 0 || g.Registered != 200 || g.Create == nil || g.Create.Created != 200 || g.Create.Failed != 0 || g.Create.Existing != 0 {
		t.Fatalf("create: %+v registered %d errors %v", g.Create, g.Registered, r.Errors)
	}
	if g.Create.Rate <= 0 || g.Create.Post.Count != 200 || g.Create.Put.Count != 200 {
		t.Fatalf("create stats %+v", g.Create)
	}
	if len(g.Pages) != 3 || g.Pages[2].Offset != 100 || g.Pages[0].Latency.Count != 5 || g.Pages[1].Bytes == 0 {
		t.Fatalf("pages %+v", g.Pages)
	}
	if len(g.Connect) != 7 {
		t.Fatalf("connect passes %+v", g.Connect)
	}
	for _, c := range g.Connect {
		if c.OK != 50 || c.Failed != 0 || c.Rate <= 0 || c.Latency.Count != 50 {
			t.Fatalf("connect pass %+v", c)
		}
	}
	if len(g.Storms) != 3 || g.Storms[0].Name != "baseline" || g.Storms[0].Probe.Received == 0 {
		t.Fatalf("storms %+v", g.Storms)
	}
	for _, s := range g.Storms[1:] {
		if s.Connected != 100 || s.Attempts < 100 || s.ToConnect.Count != 100 || s.Probe == nil {
			t.Fatalf("storm %+v", s)
		}
	}
	var b strings.Builder
	r.WriteText(&b)
	for _, want := range []string{"200 created, 0 existed", "page         end", "connect      paho-warm", "storm        warm  100 of 100"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("text report lacks %q:\n%s", want, b.String())
		}
	}

	// Resume one size up. (Not with pwd-plain: bcrypt under -race takes
	// seconds per hash.)
	cfg.Devices, cfg.Phases, cfg.ConnectClients = 210, []string{"create", "connect"}, 5
	cfg.Client = "raw"
	r, err = RunRegistry(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g = r.Registry
	if c := g.Create; c.Existing != 200 || c.Created != 10 || c.Failed != 0 || g.Registered != 210 || len(r.Errors) > 0 {
		t.Fatalf("resumed create %+v registered %d errors %v", c, g.Registered, r.Errors)
	}
	if len(g.Connect) != 6 || g.Connect[0].OK != 5 || g.Connect[5].OK != 5 {
		t.Fatalf("connect passes after resume %+v", g.Connect)
	}
}

func TestSecretBodies(t *testing.T) {
	m, _ := newSecretMaker(SecretPlain)
	if b := string(m.body("d0000003", 3)); b != `[{"auth-id":"d0000003","secrets":[{"pwd-plain":"bench-pw-3"}],"type":"hashed-password"}]` {
		t.Fatalf("pwd-plain body %s", b)
	}
	m, _ = newSecretMaker(SecretSHA256)
	if b := string(m.body("d0000003", 3)); !strings.Contains(b, `"hash-function":"sha-256"`) || !strings.Contains(b, `"salt":"`) {
		t.Fatalf("sha-256 body %s", b)
	}
}

func TestSpread(t *testing.T) {
	if got := spread(10, 3, 1); len(got) != 3 || got[0] != 1 || got[1] != 4 || got[2] != 7 {
		t.Fatalf("spread(10, 3, 1) = %v", got)
	}
	if got := spread(5, 10, 0); len(got) != 5 || got[4] != 4 {
		t.Fatalf("spread(5, 10, 0) = %v", got)
	}
	r := &regRun{cfg: RegistryConfig{Storm: 4, ConnectClients: 4, Phases: []string{"connect", "storm"}}}
	devs := r.stormDevices(16) // connect: 0, 4, 8, 12
	if len(devs) != 4 {
		t.Fatalf("storm devices %v", devs)
	}
	for _, d := range devs {
		if d%4 == 0 {
			t.Fatalf("storm devices %v include a connect pass's device", devs)
		}
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
