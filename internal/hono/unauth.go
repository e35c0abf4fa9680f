package hono

import (
	"context"
	"errors"
	"fmt"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// Unauthenticated devices (Hono: a tenant's adapter entry with
// "device-authentication-required": false; Hono's MQTT adapter also
// needs HONO_MQTT_AUTHENTICATIONREQUIRED=false): a connection without
// credentials whose topics name the tenant and the device,
// telemetry/T/<device>, event/T/<device>, command/T/<device>/res/…,
// command/T/<device>/req/#, error/T/<device>/#. Each message or
// subscription is checked against the registry: the tenant must still
// waive authentication for the adapter, the device must be registered
// and enabled.

// unauthDevice marks the principal of an unauthenticated device
// connection (and is what logs and the audit log show as its device). A
// registry device id cannot hold parentheses (ValidDeviceID), so it
// never names a device.
const unauthDevice = "(unauthenticated)"

// Unauthenticated returns the principal of a connection of devices that
// did not authenticate, bound to tenant tenantName (the tenant that
// waives authentication). It is a device principal (IsDevice), so the
// front-ends give it Hono's topics; Upstream and Subscribe take the
// device from each topic.
func Unauthenticated(tenantName string) *auth.Principal {
	return &auth.Principal{Tenant: tenantName, Device: unauthDevice}
}

// IsUnauthenticated reports whether p is an Unauthenticated principal.
func IsUnauthenticated(p *auth.Principal) bool { return p != nil && p.Device == unauthDevice }

// AllowsUnauthenticated reports whether tenant t lets devices use
// adapter without authenticating: it is IoT-enabled and enabled, and
// lists the adapter enabled with "device-authentication-required":
// false (absent means true, as in Hono).
func AllowsUnauthenticated(t *tenant.Tenant, adapter string) bool {
	if t == nil || t.IoT == nil || !t.IoT.IsEnabled() {
		return false
	}
	for _, a := range t.IoT.Adapters {
		if a.Type == adapter {
			return a.Enabled != nil && *a.Enabled && a.DeviceAuthenticationRequired != nil && !*a.DeviceAuthenticationRequired
		}
	}
	return false
}

// WaivingTenant names the tenant whose devices may use adapter without
// credentials (AllowsUnauthenticated): hint, when it names such a tenant
// (an AMQP client's SASL or open hostname), else the only tenant that
// waives authentication for the adapter; "" if none does, or several do
// and hint names none of them (which tenant's device the connection is
// could not be told: its limits and metrics are a tenant's).
func WaivingTenant(ts []*tenant.Tenant, adapter, hint string) string {
	name, n := "", 0
	for _, t := range ts {
		if !AllowsUnauthenticated(t, adapter) {
			continue
		}
		if hint != "" && t.Name == hint {
			return t.Name
		}
		name, n = t.Name, n+1
	}
	if n != 1 {
		return ""
	}
	return name
}

// unauthenticated resolves the device of an unauthenticated principal's
// topic: it must name the connection's tenant and a device (else
// ErrMalformed: Hono's unauthenticated topics have both), the tenant must
// still waive authentication for the adapter (else ErrNotAuthorized),
// and the device must be registered and enabled (else ErrUnknownDevice).
func (s *Service) unauthenticated(ctx context.Context, p *auth.Principal, adapter, topicTenant, device string) (*auth.Principal, error) {
	if topicTenant == "" || topicTenant == "+" || device == "" || device == "+" {
		return nil, fmt.Errorf("%w: an unauthenticated device names its tenant and device in the topic", ErrMalformed)
	}
	if topicTenant != p.Tenant {
		return nil, fmt.Errorf("%w: tenant %q does not waive device authentication here", ErrNotAuthorized, topicTenant)
	}
	var t *tenant.Tenant
	if s.tenants != nil {
		t, _ = s.tenants.Tenant(topicTenant)
	}
	if !AllowsUnauthenticated(t, adapter) {
		return nil, fmt.Errorf("%w: tenant %q requires devices to authenticate", ErrNotAuthorized, topicTenant)
	}
	d, _, err := s.reg.Device(ctx, topicTenant, device)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, fmt.Errorf("%w: device %q", ErrUnknownDevice, device)
	case err != nil:
		return nil, fmt.Errorf("hono: registry: %w", err)
	case !d.IsEnabled():
		return nil, fmt.Errorf("%w: device %q is disabled", ErrUnknownDevice, device)
	}
	return &auth.Principal{Tenant: topicTenant, Device: device}, nil
}

// CheckUnauthenticated checks an unauthenticated principal's use of a
// tenant and device (an error subscription's): as for its messages.
func (s *Service) CheckUnauthenticated(ctx context.Context, p *auth.Principal, adapter, tenantName, device string) error {
	_, err := s.unauthenticated(ctx, p, adapter, tenantName, device)
	return err
}
