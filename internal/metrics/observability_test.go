package metrics_test

import (
	"testing"
)

// TestObservability runs the tests of the per-tenant series, the Grafana
// dashboard and the anomaly finder on one platform, one after the other
// (each role on its own connection): a platform's start and its users'
// password hashes (bcrypt, seconds each under the race detector) are
// most of their time. Each part makes the traffic it checks; the first
// one's counts are exact, so it runs first.
func TestObservability(t *testing.T) {
	e := start(t)
	// acme: its devices and applications (dev), a device that may only
	// receive telemetry (ro); orders' rejects go to orders-dlq.
	e.tenant("acme", "jobs", "orders-dlq")
	e.api("POST", "/api/tenants/acme/addresses", map[string]any{"name": "orders", "type": "queue", "deadLetter": "orders-dlq"}, 201)
	e.api("POST", "/api/tenants/acme/users", map[string]any{"name": "ro", "password": "pw-ro", "roles": []string{"app"},
		"permissions": []map[string]any{{"pattern": "telemetry/#", "actions": []string{"receive"}}}}, 201)
	// beta: its devices (dev) and its operator (watch).
	e.tenant("beta", "orders")
	e.api("POST", "/api/tenants/beta/users", map[string]any{"name": "watch", "password": "pw-watch", "roles": []string{"operator"}}, 201)

	t.Run("TenantMetrics", func(t *testing.T) { testTenantMetrics(t, e.with(t)) })
	t.Run("GrafanaDashboard", func(t *testing.T) { testGrafanaDashboard(t, e.with(t)) })
	t.Run("Anomalies", func(t *testing.T) { testAnomalies(t, e.with(t)) })
	t.Run("SilentDevices", func(t *testing.T) { testSilentDevices(t, e.with(t)) })
}
