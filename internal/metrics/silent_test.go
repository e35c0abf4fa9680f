package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/metrics"
)

// A registered device that published at a regular interval and stops is
// found silent after the tenant's thresholds (set by the tenant's own
// administrator, who may not set another tenant's); a device that keeps
// publishing, and one seen only once, are not. Without the tenant's
// thresholds (the node's minimum silence, a minute) the same device is
// not silent yet: the finder uses the tenant's.
func testSilentDevices(t *testing.T, e *env) {
	e.api("POST", "/v1/tenants/iot", map[string]any{}, 201)
	for _, d := range []string{"s-quiet", "s-steady", "s-once", "s-http", "s-cmd-live", "s-cmd-gone", "s-amqp-gone"} {
		e.api("POST", "/v1/devices/iot/"+d, map[string]any{}, 201)
		e.api("PUT", "/v1/credentials/iot/"+d, []any{map[string]any{"type": "hashed-password", "auth-id": d,
			"secrets": []any{map[string]any{"pwd-plain": "pw-" + d}}}}, 204)
	}
	e.api("POST", "/api/tenants/iot/users", map[string]any{"name": "boss", "password": "pw-boss", "roles": []string{"tenant-admin"}}, 201)
	e.api("POST", "/api/tenants/beta/users", map[string]any{"name": "boss", "password": "pw-boss", "roles": []string{"tenant-admin"}}, 201)

	put := func(user, tenantName, body string) int {
		req, _ := http.NewRequest("PUT", e.AdminURL+"/api/tenants/"+tenantName+"/anomaly-thresholds", bytes.NewBufferString(body))
		req.SetBasicAuth(user, "pw-boss")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := put("boss@beta", "iot", `{"silentMinSeconds":1}`); c != http.StatusForbidden {
		t.Errorf("beta's tenant admin sets iot's thresholds: %d", c)
	}
	if c := put("boss@iot", "iot", `{"silentMinSeconds":-1}`); c != http.StatusBadRequest {
		t.Errorf("a negative threshold: %d", c)
	}
	if c := put("boss@iot", "iot", `{"silentMinSeconds":1,"nonsense":2}`); c != http.StatusBadRequest {
		t.Errorf("an unknown threshold: %d", c)
	}
	if c := put("boss@iot", "iot", `{"silentFactor":3,"silentMinSeconds":2}`); c != http.StatusOK {
		t.Fatalf("iot's tenant admin sets its thresholds: %d", c)
	}
	var got struct {
		Thresholds, Effective metrics.Thresholds
	}
	if err := json.Unmarshal(e.api("GET", "/api/tenants/iot/anomaly-thresholds", nil, 200), &got); err != nil {
		t.Fatal(err)
	}
	if got.Thresholds.SilentMinSeconds != 2 || got.Effective.SilentMinSeconds != 2 || got.Effective.SilentFactor != 3 ||
		got.Effective.BacklogGrowth != metrics.DefaultThresholds.BacklogGrowth {
		t.Errorf("iot's thresholds: %+v", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	every := func(c *paho.Client, d time.Duration, n int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(d)
			defer tk.Stop()
			for i := 0; n == 0 || i < n; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
					_, _ = c.Publish(ctx, &paho.Publish{Topic: "telemetry", QoS: 0, Payload: []byte("21.5")})
				}
			}
		}()
	}
	quiet, _ := e.mqtt("s-quiet@iot", "pw-s-quiet", "s-quiet")
	steady, _ := e.mqtt("s-steady@iot", "pw-s-steady", "s-steady")
	once, _ := e.mqtt("s-once@iot", "pw-s-once", "s-once")
	_ = once.Disconnect(&paho.Disconnect{})
	every(steady, 200*time.Millisecond, 0)
	every(quiet, 200*time.Millisecond, 5)
	// Hono MQTT devices waiting for commands (command///req/#): s-cmd-live
	// published as often as s-quiet and then only waits, connected (alive:
	// not silent, although its interval lapses); s-cmd-gone subscribed
	// once and disconnected (silent once the minimum silence passed,
	// without an interval of its own).
	subscribe := func(c *paho.Client) {
		sctx, scancel := context.WithTimeout(ctx, time.Minute)
		defer scancel()
		if _, err := c.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "command///req/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	cmdLive, _ := e.mqtt("s-cmd-live@iot", "pw-s-cmd-live", "s-cmd-live")
	for range 4 {
		time.Sleep(200 * time.Millisecond)
		_, _ = cmdLive.Publish(ctx, &paho.Publish{Topic: "telemetry", QoS: 0, Payload: []byte("21.5")})
	}
	subscribe(cmdLive)
	cmdGone, _ := e.mqtt("s-cmd-gone@iot", "pw-s-cmd-gone", "s-cmd-gone")
	subscribe(cmdGone)
	_ = cmdGone.Disconnect(&paho.Disconnect{})
	// An AMQP device (go-amqp) with a receiver on "command", then gone.
	actx, acancel := context.WithTimeout(ctx, time.Minute)
	ac, err := goamqp.Dial(actx, "amqp://"+e.AMQPAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("s-amqp-gone@iot", "pw-s-amqp-gone")})
	if err != nil {
		t.Fatal(err)
	}
	as, err := ac.NewSession(actx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as.NewReceiver(actx, "command", &goamqp.ReceiverOptions{Credit: 10}); err != nil {
		t.Fatal(err)
	}
	_ = ac.Close()
	acancel()
	// An HTTP device's one request with hono-ttd 1: it waits a second for
	// a command; silent once that (and the minimum silence) passed,
	// without an interval of its own.
	req, _ := http.NewRequest("POST", "http://"+e.HTTPAddr+"/telemetry", bytes.NewBufferString("21.5"))
	req.SetBasicAuth("s-http@iot", "pw-s-http")
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("hono-ttd", "1")
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		t.Logf("HTTP telemetry with hono-ttd: %s", resp.Status)
	}

	find := func(th string) map[string]metrics.Finding {
		var rep metrics.Report
		if err := json.Unmarshal(e.api("GET", "/api/tenants/iot/anomalies"+th, nil, 200), &rep); err != nil {
			t.Fatal(err)
		}
		out := map[string]metrics.Finding{}
		for _, f := range rep.Findings {
			if f.Kind == metrics.KindSilent {
				out[f.Device] = f
			}
		}
		return out
	}
	var silent map[string]metrics.Finding
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if silent = find(""); silent["s-quiet"].Device != "" && silent["s-http"].Device != "" && silent["s-cmd-gone"].Device != "" &&
			silent["s-amqp-gone"].Device != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("s-quiet, s-http, s-cmd-gone and s-amqp-gone not all found silent within 60 s: %v", silent)
		}
	}
	f := silent["s-quiet"]
	t.Logf("%s: %s %v", f.Kind, f.Summary, f.Evidence)
	if n, _ := f.Evidence["sightings"].(float64); n < 3 || f.Tenant != "iot" || f.Evidence["reason"] != "interval" {
		t.Errorf("s-quiet's finding: %+v", f)
	}
	if h := silent["s-http"]; h.Evidence["reason"] != "ttd" || h.Evidence["ttdSeconds"] != float64(1) {
		t.Errorf("s-http's finding: %+v", h)
	}
	for _, d := range []string{"s-cmd-gone", "s-amqp-gone"} {
		if g := silent[d]; g.Evidence["reason"] != "commands" {
			t.Errorf("%s's finding: %+v", d, g)
		} else {
			t.Logf("%s: %s %v", g.Kind, g.Summary, g.Evidence)
		}
	}
	// s-cmd-live's last sighting is older than s-quiet's, its interval as
	// short: only its wait for commands keeps it off the list.
	for _, d := range []string{"s-steady", "s-once", "s-cmd-live"} {
		if _, ok := silent[d]; ok {
			t.Errorf("%s found silent: %+v", d, silent[d])
		}
	}
	// The tenant's thresholds are what found it: the node's (a minute at
	// least) do not yet; a request's own still win.
	e.api("DELETE", "/api/tenants/iot/anomaly-thresholds", nil, 200)
	if s := find(""); s["s-quiet"].Device != "" {
		t.Errorf("s-quiet silent with the node's thresholds: %+v", s["s-quiet"])
	}
	if s := find("?silentMinSeconds=1"); s["s-quiet"].Device == "" {
		t.Errorf("s-quiet not silent with the request's thresholds")
	}
	// Another tenant's report does not show iot's devices.
	var beta metrics.Report
	_ = json.Unmarshal(e.api("GET", "/api/tenants/beta/anomalies?silentMinSeconds=1", nil, 200), &beta)
	for _, f := range beta.Findings {
		if f.Tenant != "beta" {
			t.Errorf("beta's report has %+v", f)
		}
	}
}
