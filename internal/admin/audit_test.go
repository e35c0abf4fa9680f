package admin

import "testing"

func TestAuditResourceOf(t *testing.T) {
	for path, want := range map[string]string{
		"/api/tenants":                            "tenants",
		"/api/tenants/acme":                       "tenant acme",
		"/api/tenants/acme/addresses":             "addresses of tenant acme",
		"/api/tenants/acme/addresses/orders/eu":   "address acme/orders/eu",
		"/api/tenants/acme/addresses/orders%2Feu": "address acme/orders/eu",
		"/api/tenants/acme/users/app1":            "user acme/app1",
		"/v1/tenants/iot":                         "tenant iot",
		"/v1/devices/iot":                         "devices of tenant iot",
		"/v1/devices/iot/d1":                      "device iot/d1",
		"/v1/credentials/iot/d1":                  "credentials iot/d1",
		"/metrics":                                "/metrics",
	} {
		if got := resourceOf(path); got != want {
			t.Errorf("resourceOf(%q) = %q, want %q", path, got, want)
		}
	}
}
