package metrics_test

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	dto "github.com/prometheus/client_model/go"

	"github.com/throngmq/throng/internal/testkit"
)

// dashboardFile is the Grafana dashboard (docs/metrics.md).
const dashboardFile = "../../deploy/grafana/throng.json"

// metricName finds the metric names in a PromQL expression: throng's own
// and the Go runtime's and process's (the PromQL functions, keywords and
// label names the expressions use have none of these prefixes).
var metricName = regexp.MustCompile(`\b(?:throng|go|process)_[a-zA-Z0-9_:]+`)

// dashboardQueries returns every query of the dashboard (panel targets
// and template variables) by where it is.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("%s: no title, uid or panels", dashboardFile)
	}
	q := map[string]string{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
			}
			q["panel "+p.Title+" "+tg.RefID] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var qq struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &qq); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		q["variable "+v.Name] = qq.Query
	}
	return q
}

// Every metric a query of the dashboard names is exported by a running
// node once the traffic the panels show has happened (TestObservability).
func testGrafanaDashboard(t *testing.T, e *env) {
	queries := dashboardQueries(t)
	// beta publishes beyond its plan's rate.
	// (One message per 10 s: however slow the machine, the second of two
	// publishes in a row is over it.)
	e.api("PUT", "/api/tenants/beta", map[string]any{"limits": map[string]any{"maxMessagesInPerSecond": 0.1, "burst": 1}}, 200)

	// An application consumes orders (deliveries out, settled).
	sub, _ := e.mqtt("dev@acme", "pw-dev", "app")
	got := make(chan struct{}, 100)
	sub.AddOnPublishReceived(func(paho.PublishReceived) (bool, error) {
		got <- struct{}{}
		return true, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "orders", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	// A device publishes; another beyond its tenant's rate (quota refusals).
	dev, _ := e.mqtt("dev@acme", "pw-dev", "device")
	e.publish(dev, "orders", 3, 16)
	e.publish(dev, "jobs", 1, 16)
	fast, _ := e.mqtt("dev@beta", "pw-dev", "fast")
	refused := 0
	for range 5 {
		if r, err := fast.Publish(ctx, &paho.Publish{Topic: "orders", QoS: 1, Payload: []byte("flood")}); err != nil || r.ReasonCode >= 0x80 {
			refused++
		}
	}
	if refused == 0 {
		t.Error("no publish over the tenant's rate was refused")
	}
	// A principal refused an action, a refused login.
	ro, _ := e.mqtt("ro@acme", "pw-ro", "ro-dash")
	if r, err := ro.Publish(ctx, &paho.Publish{Topic: "orders", QoS: 1, Payload: []byte("x")}); err == nil && r.ReasonCode < 0x80 {
		t.Error("publish without permission accepted")
	}
	if _, rc := e.mqtt("dev@acme", "wrong", "bad"); rc == 0 {
		t.Fatal("wrong password accepted")
	}
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("the application received nothing")
	}

	want := map[string][]string{}
	for where, expr := range queries {
		names := metricName.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			want[n] = append(want[n], where)
		}
	}
	var missing []string
	testkit.Eventually(t, 30*time.Second, func() bool {
		m := e.scrape()
		missing = missing[:0]
		for n := range want {
			if _, ok := m[n]; !ok {
				// A histogram's series (_bucket, _sum, _count) are its
				// family's, which needs an observation to be exported.
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
				if f := m[base]; base == n || f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
					missing = append(missing, n)
				}
			}
		}
		return len(missing) == 0
	})
	sort.Strings(missing)
	for _, n := range missing {
		t.Errorf("%s is not exported (used by %v)", n, want[n])
	}
	t.Logf("%d queries, %d metrics, all exported", len(queries), len(want))
}
