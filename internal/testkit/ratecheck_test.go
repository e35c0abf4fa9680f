package testkit_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/testkit"
)

// A publish over the tenant's message rate is refused before its body is
// read (docs/security.md "Message rate in", httpapi/ratecheck.go): the
// client announces 4 MiB, sends 64 KiB and then nothing, and still gets
// its 429 with Retry-After at once. Reading the body first, the node
// would wait for bytes that never come (until its read timeout) and a
// tenant over its rate could make it read every upload only to drop it.
func TestHTTPRateRefusedBeforeBody(t *testing.T) {
	e := &quotaEnv{Platform: testkit.Start(t), t: t}
	e.tenant("limited", `{"maxMessagesInPerSecond":0.01,"burst":1}`)
	url := "http://" + e.HTTPAddr + "/api/v1/addresses/q/messages"
	resp, body := doReq(t, http.DefaultClient, "POST", url, "app@limited", "app-secret", nil, "within the burst")
	if resp.StatusCode/100 != 2 {
		t.Fatalf("first publish: %d %s", resp.StatusCode, body)
	}
	refusedBeforeBody(t, url, "app@limited", "app-secret", nil)
	if n := quotaRefused(t, e.Platform, "limited", "messagesIn"); n != 1 {
		t.Fatalf("refused %v, want 1", n)
	}
}

// The same for Hono's HTTP adapter: a device's telemetry over its
// tenant's rate.
func TestHonoHTTPRateRefusedBeforeBody(t *testing.T) {
	e := startHono(t)
	resp := e.Do(t, "PUT", "/api/tenants/iot", strings.NewReader(`{"name":"iot","limits":{"maxMessagesInPerSecond":0.01,"burst":1}}`))
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT tenant: %d %s", resp.StatusCode, b)
	}
	url := "http://" + e.HTTPAddr + "/telemetry"
	ct := map[string]string{"Content-Type": "text/plain"}
	// The burst's token (no application: 503, but the token is taken).
	if resp, body := doReq(t, http.DefaultClient, "POST", url, "sensor1@iot", "secret1", ct, "x"); resp.StatusCode == http.StatusTooManyRequests {
		t.Fatalf("first telemetry: %d %s", resp.StatusCode, body)
	}
	refusedBeforeBody(t, url, "sensor1@iot", "secret1", ct)
}

// refusedBeforeBody posts to url announcing 4 MiB and sending 64 KiB,
// and wants a 429 with a Retry-After of about 100 s (a rate of 0.01/s).
func refusedBeforeBody(t *testing.T, url, user, pass string, hdr map[string]string) {
	t.Helper()
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write(make([]byte, 64<<10)) }() // then nothing
	req, err := http.NewRequest("POST", url, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 4 << 20
	req.SetBasicAuth(user, pass)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	start := time.Now()
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("no answer before the body (%v): the node waited for it", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("%d %s, want 429", resp.StatusCode, b)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 50 || ra > 101 {
		t.Fatalf("Retry-After %q, want about 100 s", resp.Header.Get("Retry-After"))
	}
	t.Logf("429 after %v with 64 KiB of 4 MiB sent", time.Since(start))
}
