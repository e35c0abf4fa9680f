package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/throngmq/throng/internal/testkit"
)

// env is a whole platform with the roles of the tests on their own
// connections: the operator's admin API calls and scrapes, the devices'
// and applications' MQTT clients (paho.golang).
type env struct {
	*testkit.Platform
	t *testing.T
}

func start(t *testing.T, opts ...testkit.Option) *env {
	return &env{Platform: testkit.Start(t, opts...), t: t}
}

// with is e for a subtest (its failures, its clients' cleanup).
func (e *env) with(t *testing.T) *env { return &env{Platform: e.Platform, t: t} }

// api sends an admin request as the platform administrator and checks
// its status.
func (e *env) api(method, path string, body any, status int) []byte {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	resp := e.Do(e.t, method, path, r)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, status, b)
	}
	return b
}

// tenant creates a tenant with an app user "dev" (password "pw-dev",
// send and receive on everything) and queues.
func (e *env) tenant(name string, queues ...string) {
	e.t.Helper()
	e.api("POST", "/api/tenants", map[string]any{"name": name}, 201)
	e.api("POST", "/api/tenants/"+name+"/users", map[string]any{"name": "dev", "password": "pw-dev", "roles": []string{"app"},
		"permissions": []map[string]any{{"pattern": "#", "actions": []string{"send", "receive"}}}}, 201)
	for _, q := range queues {
		e.api("POST", "/api/tenants/"+name+"/addresses", map[string]any{"name": q, "type": "queue"}, 201)
	}
}

// mqtt connects an MQTT 5 client; it returns the CONNACK's reason code
// (the client is nil unless it is 0).
func (e *env) mqtt(user, pass, id string) (*paho.Client, byte) {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.MQTTAddr)
	if err != nil {
		e.t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true})
	if ack == nil {
		e.t.Fatalf("connect %s: no CONNACK: %v", user, err)
	}
	if ack.ReasonCode != 0 {
		_ = nc.Close()
		return nil, ack.ReasonCode
	}
	e.t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, 0
}

// publish sends n QoS 1 messages of size bytes to topic.
func (e *env) publish(c *paho.Client, topic string, n, size int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range n {
		p := bytes.Repeat([]byte{'x'}, size)
		copy(p, fmt.Sprint(i))
		if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: p}); err != nil {
			e.t.Fatalf("publish %s: %v", topic, err)
		}
	}
}

// scrape reads /metrics as Prometheus would (Basic credentials, the
// text format) and parses it.
func (e *env) scrape() families {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.AdminURL+"/metrics", nil)
	req.SetBasicAuth(e.AdminUser, e.AdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		e.t.Fatalf("/metrics does not parse: %v", err)
	}
	return mfs
}

type families map[string]*dto.MetricFamily

// value is the sample of name whose labels include want (name=value
// pairs); ok is false when there is none.
func (f families) value(name string, want ...string) (float64, bool) {
	mf := f[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
		return 0, true
	}
	return 0, false
}

// sum adds the samples of name whose labels include want.
func (f families) sum(name string, want ...string) float64 {
	mf := f[name]
	if mf == nil {
		return 0
	}
	var s float64
next:
	for _, m := range mf.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		s += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return s
}
