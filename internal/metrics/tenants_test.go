package metrics_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/metrics"
	"github.com/throngmq/throng/internal/testkit"
)

// Two tenants' devices publish on their own connections; the operator
// scrapes /metrics and finds each tenant's own figures (TestObservability
// runs it first: its counts are exact).
func testTenantMetrics(t *testing.T, e *env) {

	a, _ := e.mqtt("dev@acme", "pw-dev", "acme-1")
	b, _ := e.mqtt("dev@beta", "pw-dev", "beta-1")
	e.publish(a, "orders", 5, 10)
	e.publish(b, "orders", 3, 20)
	// Refused logins: a wrong password of an acme user, and a tenant that
	// does not exist (counted under _unknown, not under its name).
	if _, rc := e.mqtt("dev@acme", "wrong", "acme-2"); rc == 0 {
		t.Fatal("wrong password accepted")
	}
	if _, rc := e.mqtt("dev@nosuch", "wrong", "x"); rc == 0 {
		t.Fatal("unknown tenant accepted")
	}

	var m families
	want := func(name string, v float64, labels ...string) {
		t.Helper()
		got, ok := m.value(name, labels...)
		if !ok || got != v {
			t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, v)
		}
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		m = e.scrape()
		v, _ := m.value("throng_tenant_backlog_messages", "tenant", "beta")
		w, _ := m.value("throng_tenant_backlog_messages", "tenant", "acme")
		return v == 3 && w == 5
	})
	want("throng_tenant_connections", 1, "tenant", "acme", "protocol", "mqtt5")
	want("throng_tenant_connections", 1, "tenant", "beta", "protocol", "mqtt5")
	want("throng_tenant_connects_total", 1, "tenant", "acme", "protocol", "mqtt5")
	want("throng_tenant_connection_messages_in_total", 5, "tenant", "acme", "protocol", "mqtt5")
	want("throng_tenant_connection_messages_in_total", 3, "tenant", "beta", "protocol", "mqtt5")
	want("throng_tenant_bytes_in_total", 50, "tenant", "acme", "protocol", "mqtt5")
	want("throng_tenant_bytes_in_total", 60, "tenant", "beta", "protocol", "mqtt5")
	want("throng_tenant_auth_attempts_total", 1, "tenant", "acme", "protocol", "mqtt", "result", "success")
	want("throng_tenant_auth_attempts_total", 1, "tenant", "acme", "protocol", "mqtt", "result", "failure")
	want("throng_tenant_auth_attempts_total", 1, "tenant", "_unknown", "protocol", "mqtt", "result", "failure")
	if _, ok := m.value("throng_tenant_auth_attempts_total", "tenant", "nosuch"); ok {
		t.Error("a claimed tenant that does not exist got its own series")
	}
	want("throng_address_backlog_messages", 5, "tenant", "acme", "address", "orders")
	want("throng_address_backlog_messages", 3, "tenant", "beta", "address", "orders")
	want("throng_address_messages_in_total", 5, "tenant", "acme", "address", "orders")
	want("throng_metrics_address_series_limit", 200)
	// The router's per-tenant series (every protocol) agree (type queue:
	// the node publishes to its tenants' topic space itself).
	if got := m.sum("throng_router_messages_in_total", "tenant", "acme", "type", "queue"); got != 5 {
		t.Errorf("throng_router_messages_in_total{tenant=acme} = %v, want 5: %v", got, m["throng_router_messages_in_total"])
	}

	// acme's device leaves: its connection is gone, its counts stay.
	if err := a.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		m = e.scrape()
		v, _ := m.value("throng_tenant_connections", "tenant", "acme")
		return v == 0
	})
	want("throng_tenant_connection_messages_in_total", 5, "tenant", "acme", "protocol", "mqtt5")
	want("throng_tenant_bytes_in_total", 50, "tenant", "acme", "protocol", "mqtt5")
	want("throng_tenant_connects_total", 1, "tenant", "acme", "protocol", "mqtt5")
	if t.Failed() {
		t.Logf("families: %d", len(m))
	}
}

// Above metrics.addressSeries addresses, no per-address series (a fake
// router: the limit is the observer's own arithmetic).
func TestAddressSeriesLimit(t *testing.T) {
	for _, tc := range []struct {
		limit, addrs int
		perAddress   bool
	}{{0, 3, true}, {3, 3, true}, {2, 3, false}, {-1, 1, false}} {
		o := metrics.NewObserver(metrics.Options{Router: fakeRouter(tc.addrs), AddressSeries: tc.limit})
		reg := prometheus.NewRegistry()
		reg.MustRegister(o)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		m := families{}
		for _, mf := range mfs {
			m[mf.GetName()] = mf
		}
		if v, _ := m.value("throng_tenant_backlog_messages", "tenant", "acme"); v != float64(tc.addrs) {
			t.Errorf("%+v: tenant backlog %v", tc, v)
		}
		if n, _ := m.value("throng_metrics_addresses"); n != float64(tc.addrs) {
			t.Errorf("%+v: throng_metrics_addresses = %v", tc, n)
		}
		for _, name := range []string{"throng_address_backlog_messages", "throng_address_messages_in_total", "throng_address_messages_out_total"} {
			if _, ok := m.value(name); ok != tc.perAddress {
				t.Errorf("%+v: %s present %v", tc, name, ok)
			}
		}
	}
}

// fakeRouter has n addresses of tenant acme, one message in each.
type fakeRouter int

func (f fakeRouter) AddressCounters(fn func(tenantName, name string, in, out uint64)) {
	for i := range int(f) {
		fn("acme", fmt.Sprint("q", i), 1, 0)
	}
}

func (f fakeRouter) StoredCounts(_ context.Context, fn func(tenantName, name string, stored int64)) error {
	for i := range int(f) {
		fn("acme", fmt.Sprint("q", i), 1)
	}
	return nil
}
