package bench

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/testkit"
)

// TestBridgeShape runs the bridge shape small against an in-process
// platform and Debian's mosquitto (a failure when missing and CI=true):
// every message crosses both bridges once, the report is filled.
func TestBridgeShape(t *testing.T) {
	found := false
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if _, err := exec.LookPath(p); err == nil {
			found = true
		}
	}
	if !found {
		if os.Getenv("CI") == "true" {
			t.Fatal("mosquitto not installed (apt-get install -y mosquitto)")
		}
		t.Skip("mosquitto not installed")
	}
	p := testkit.Start(t)
	for _, window := range []int{0, 8} {
		r, err := RunBridge(context.Background(), BridgeConfig{
			Node:       Node{AdminURL: p.AdminURL, AdminUser: p.AdminUser, AdminPassword: p.AdminPassword, Server: p.MQTTAddr},
			Publishers: 2, Count: 300, Inflight: 16, Window: window,
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range []*Result{r.Throng, r.Mosquitto} {
			if x == nil {
				t.Fatalf("window %d: a target did not run: %+v", window, r)
			}
			checkDelivered(t, x, 300, 300)
		}
		if r.RateRatio <= 0 || r.P50Ratio <= 0 || r.P99Ratio <= 0 {
			t.Fatalf("ratios not filled: %+v", r)
		}
		var b strings.Builder
		r.WriteText(&b)
		if !strings.Contains(b.String(), "throng / mosquitto: delivered") || !strings.Contains(b.String(), "broker=mosquitto,shape=bridge") {
			t.Fatalf("text report:\n%s", b.String())
		}
	}
}
