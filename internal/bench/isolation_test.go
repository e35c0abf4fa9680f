package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/testkit"
)

// TestIsolation runs the isolation mode at a tiny size against an
// in-process platform: the flooding tenant is refused over its rate, its
// admitted messages are delivered, and the victim's probe loses nothing.
func TestIsolation(t *testing.T) {
	p := testkit.Start(t)
	cfg := IsolationConfig{
		Node:   Node{AdminURL: p.AdminURL, AdminUser: p.AdminUser, AdminPassword: p.AdminPassword, Server: p.MQTTAddr},
		Rounds: 1, Duration: time.Second, ProbeRate: 100, FloodConns: 4, FloodRate: 2000, Limit: 100,
		Progress: testLog{t},
	}
	r, err := RunIsolation(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Rounds) != 1 || len(r.Errors) > 0 {
		t.Fatalf("%+v", r)
	}
	rd := r.Rounds[0]
	if rd.Alone.Count == 0 || rd.Flooded.Count == 0 || rd.AloneLost != 0 || rd.FloodedLost != 0 {
		t.Fatalf("probe: %+v", rd)
	}
	if rd.FloodSent < 500 || rd.FloodRefused <= 0 || rd.FloodOut <= 0 || rd.FloodOut > 3*cfg.Limit {
		t.Fatalf("flood: written %.0f/s, refused %.0f/s, delivered %.0f/s (limit %.0f/s)", rd.FloodSent, rd.FloodRefused, rd.FloodOut, cfg.Limit)
	}
	var b strings.Builder
	r.WriteText(&b)
	if !strings.Contains(b.String(), "median p99 ratio") {
		t.Fatalf("text report:\n%s", b.String())
	}
}
