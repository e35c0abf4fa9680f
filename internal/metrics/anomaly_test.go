package metrics_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/metrics"
)

// Each anomaly is made for real, amongst devices that behave, on their
// own connections: a device that floods, a queue nobody consumes, an
// application that rejects everything (dead letters), a client that
// reconnects in a loop, a device with a wrong password, a device that
// publishes where it may not. The administrator finds each in the API
// and in the console; a tenant's operator sees only its tenant's.
func testAnomalies(t *testing.T, e *env) {
	begin := time.Now()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	loop := func(c *paho.Client, topic string, every time.Duration, qos byte) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					_, _ = c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte("reading")})
				}
			}
		}()
	}
	// Devices that behave: one reading a second each. One that floods.
	for _, id := range []string{"d2", "d3", "d4"} {
		c, _ := e.mqtt("dev@acme", "pw-dev", id)
		loop(c, "telemetry/"+id, time.Second, 0)
	}
	flood, _ := e.mqtt("dev@acme", "pw-dev", "d1")
	loop(flood, "telemetry/d1", 10*time.Millisecond, 0)
	// An application feeds jobs that nobody consumes.
	feeder, _ := e.mqtt("dev@acme", "pw-dev", "feeder")
	loop(feeder, "jobs", 100*time.Millisecond, 0)

	// An application rejects every order: they go to orders-dlq.
	ac, err := goamqp.Dial(ctx, "amqp://"+e.AMQPAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("dev@acme", "pw-dev")})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	as, err := ac.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := as.NewReceiver(ctx, "orders", &goamqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := rcv.Receive(ctx, nil)
			if err != nil {
				return
			}
			_ = rcv.RejectMessage(ctx, m, &goamqp.Error{Condition: "app:bad-order", Description: "unparseable"})
		}
	}()
	// (Orders keep coming, so the dead-letter address keeps growing while
	// the test looks: a finding is about the last 30 s.)
	orders, _ := e.mqtt("dev@acme", "pw-dev", "shop")
	loop(orders, "orders", 200*time.Millisecond, 0)

	// A client that reconnects in a loop.
	for range 6 {
		c, rc := e.mqtt("dev@acme", "pw-dev", "looper")
		if rc != 0 {
			t.Fatalf("looper: CONNACK %#x", rc)
		}
		if err := c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatal(err)
		}
	}
	// A device with a wrong password.
	for range 5 {
		if _, rc := e.mqtt("dev@acme", "wrong", "lost"); rc == 0 {
			t.Fatal("wrong password accepted")
		}
	}
	// A device that publishes where it may not.
	ro, _ := e.mqtt("ro@acme", "pw-ro", "ro")
	for range 4 {
		_, _ = ro.Publish(ctx, &paho.Publish{Topic: "jobs", QoS: 1, Payload: []byte("x")})
	}

	// The administrator's view: every anomaly, with the device among the
	// well-behaved ones found.
	type found = metrics.Report
	var rep found
	const query = "?backlogGrowth=10&denied=3"
	has := func(kind, subject string) bool {
		for _, f := range rep.Findings {
			if f.Kind == kind && f.Tenant == "acme" && (f.Address == subject || f.ClientID == subject || f.User == subject) {
				return true
			}
		}
		return false
	}
	checks := []struct{ kind, subject string }{
		{metrics.KindTopTalker, "d1"},
		{metrics.KindBacklog, "jobs"},
		{metrics.KindDeadLetter, "orders-dlq"},
		{metrics.KindReconnectLoop, "looper"},
		{metrics.KindAuthFailures, "dev@acme"},
		{metrics.KindDenied, "ro"},
	}
	var missing []string
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		rep = found{}
		if err := json.Unmarshal(e.api("GET", "/api/tenants/acme/anomalies"+query, nil, 200), &rep); err != nil {
			t.Fatal(err)
		}
		missing = missing[:0]
		for _, c := range checks {
			if !has(c.kind, c.subject) {
				missing = append(missing, c.kind+" "+c.subject)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(rep)
			t.Fatalf("not found within 90 s: %v; the report: %s", missing, b)
		}
	}
	t.Logf("%v: all found", time.Since(begin).Round(time.Second))
	for _, f := range rep.Findings {
		t.Logf("%s %s: %s %v", f.Kind, f.Tenant, f.Summary, f.Evidence)
		switch f.Kind {
		case metrics.KindTopTalker:
			if f.ClientID != "d1" || f.Connection == "" {
				t.Errorf("top talker %+v", f)
			}
		case metrics.KindReconnectLoop:
			if n, _ := f.Evidence["connects"].(float64); n < 6 {
				t.Errorf("reconnect loop evidence %v", f.Evidence)
			}
		case metrics.KindAuthFailures:
			if n, _ := f.Evidence["failures"].(float64); n < 5 || f.Source != "127.0.0.1" {
				t.Errorf("auth failures %+v", f)
			}
		}
	}
	for _, c := range []string{"d2", "d3", "d4", "feeder", "shop"} {
		if has(metrics.KindTopTalker, c) || has(metrics.KindReconnectLoop, c) {
			t.Errorf("well-behaved %s among the findings", c)
		}
	}
	if len(rep.TopTalkers) == 0 || rep.TopTalkers[0].ClientID != "d1" || rep.TopTalkers[0].Share < 0.5 {
		t.Errorf("top talkers %+v", rep.TopTalkers)
	}
	// The console's panel: the administrator sees the findings linked to
	// the connection and addresses; beta's operator sees none of acme's.
	admin := consoleLogin(t, e.AdminURL, e.AdminUser, e.AdminPassword)
	page := admin("/anomalies?tenant=acme&backlogGrowth=10&denied=3")
	for _, want := range []string{`data-kind="top_talker"`, `data-subject="d1"`, `data-kind="dead_letter_growing"`,
		`href="/t/acme/address/orders-dlq"`, `data-subject="looper"`, `data-kind="auth_failures"`, `href="/connections/`} {
		if !strings.Contains(page, want) {
			t.Errorf("console /anomalies lacks %s", want)
		}
	}
	beta := consoleLogin(t, e.AdminURL, "watch@beta", "pw-watch")
	if page := beta("/anomalies?tenant=acme"); strings.Contains(page, `data-tenant="acme"`) || !strings.Contains(page, "no-findings") {
		t.Errorf("beta's operator sees acme's anomalies")
	}
	// Thresholds out of range: 400 with the API's JSON error.
	resp := e.Do(t, "GET", "/api/anomalies?topShare=2", nil)
	var eb struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || eb.Error.Code != "invalid" {
		t.Errorf("topShare=2: %d %+v", resp.StatusCode, eb)
	}

	// Operators: their own tenant's anomalies only.
	op := func(user, path string) int {
		req, _ := http.NewRequest("GET", e.AdminURL+path, nil)
		req.SetBasicAuth(user, "pw-watch")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := op("watch@beta", "/api/tenants/acme/anomalies"); c != http.StatusForbidden {
		t.Errorf("beta's operator on acme's anomalies: %d", c)
	}
	if c := op("watch@beta", "/api/anomalies"); c != http.StatusForbidden {
		t.Errorf("beta's operator on every tenant's anomalies: %d", c)
	}
	if c := op("watch@beta", "/api/tenants/beta/anomalies"); c != http.StatusOK {
		t.Errorf("beta's operator on its anomalies: %d", c)
	}

	cancel()
}

// consoleLogin logs in to the console and returns a page getter.
func consoleLogin(t *testing.T, base, user, pass string) func(path string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(base+"/login", url.Values{"user": {user}, "password": {pass}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("console login %s: %s", user, resp.Status)
	}
	return func(path string) string {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("console %s: %s %s", path, resp.Status, b)
		}
		return string(b)
	}
}
