package tenant

import (
	"encoding/json"
	"time"
)

// IoT is a tenant's Eclipse Hono configuration: the fields of Hono's
// Tenant resource (Device Registry Management API, schema "Tenant"), with
// Hono's JSON names, so the /v1/tenants API marshals it as is. An
// IoT-enabled tenant is an ordinary throng tenant whose IoT field is set;
// there is no second tenant list (docs/registry.md).
//
// Pointers and nil slices mean "not given": Hono's defaults apply
// (enabled true, adapters all enabled, no limits).
type IoT struct {
	Enabled            *bool                      `json:"enabled,omitempty"`
	Alias              string                     `json:"alias,omitempty"`
	Ext                map[string]json.RawMessage `json:"ext,omitempty"`
	Adapters           []Adapter                  `json:"adapters,omitempty"`
	Defaults           map[string]json.RawMessage `json:"defaults,omitempty"`
	MinimumMessageSize int                        `json:"minimum-message-size,omitempty"`
	RegistrationLimits *RegistrationLimits        `json:"registration-limits,omitempty"`
	ResourceLimits     json.RawMessage            `json:"resource-limits,omitempty"` // see IoT.MaxConnections, MaxTTL
	Tracing            json.RawMessage            `json:"tracing,omitempty"`
	TrustAnchorGroup   string                     `json:"trust-anchor-group,omitempty"`
	TrustedCA          []TrustedCA                `json:"trusted-ca,omitempty"`
}

// IsEnabled reports Hono's "enabled" (default true).
func (t *IoT) IsEnabled() bool { return t == nil || t.Enabled == nil || *t.Enabled }

// Adapter is a protocol adapter's per-tenant configuration
// ("hono-mqtt", "hono-http", "hono-amqp", ...).
type Adapter struct {
	Type    string `json:"type"`
	Enabled *bool  `json:"enabled,omitempty"` // Hono's default: false when listed
	// DeviceAuthenticationRequired defaults to true.
	DeviceAuthenticationRequired *bool                      `json:"device-authentication-required,omitempty"`
	Ext                          map[string]json.RawMessage `json:"ext,omitempty"`
}

// RegistrationLimits bounds a tenant's registry (-1 or absent: unlimited).
type RegistrationLimits struct {
	MaxDevices              *int `json:"max-devices,omitempty"`
	MaxCredentialsPerDevice *int `json:"max-credentials-per-device,omitempty"`
}

// TrustedCA is a trust anchor for device client certificates. Given a
// "cert" (base64 DER), the registry derives subject-dn, public-key,
// algorithm, not-before and not-after from it.
type TrustedCA struct {
	ID                               string     `json:"id,omitempty"`
	SubjectDN                        string     `json:"subject-dn,omitempty"`
	PublicKey                        []byte     `json:"public-key,omitempty"`
	Algorithm                        string     `json:"algorithm,omitempty"`
	NotBefore                        *time.Time `json:"not-before,omitempty"`
	NotAfter                         *time.Time `json:"not-after,omitempty"`
	Cert                             []byte     `json:"cert,omitempty"`
	AuthIDTemplate                   string     `json:"auth-id-template,omitempty"`
	AutoProvisioningEnabled          bool       `json:"auto-provisioning-enabled,omitempty"`
	AutoProvisionAsGateway           bool       `json:"auto-provision-as-gateway,omitempty"`
	AutoProvisioningDeviceIDTemplate string     `json:"auto-provisioning-device-id-template,omitempty"`
}
