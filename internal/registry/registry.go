// Package registry is throng's device registry: the devices and
// credentials of IoT-enabled tenants, stored in JetStream KV buckets of
// the engine's system account, with the indexes that keep a device's
// connect O(1) in the number of devices (auth-id → device) and a page of
// a million-device tenant cheap (an ordered id index per tenant).
//
// The resource shapes are Eclipse Hono's (Device Registry Management API
// 1.x, ../shared/reference/hono-device-registry-v1.yaml): the JSON names,
// defaults and rules of Hono, so that Hono tooling works unchanged. The
// tenants themselves are throng tenants (package tenant, field IoT).
//
// Writers: *Store is the one owner of the buckets. Front-ends (through
// auth) only read credentials; the admin API writes.
//
// Storage, in short (docs/registry.md, "Storage", has the reasons and the
// measured costs):
//
//   - Three KV buckets: throng_devices and throng_credentials keyed
//     "<tenant>.<id>" (the id escaped: bytes outside [A-Za-z0-9_-] as
//     "=XX"), and the auth-id index throng_authids keyed
//     "<tenant>.<type>.<base64url auth-id>" → device id.
//   - Resource versions (ETags) are KV revisions; every write is
//     conditional on the revision read (kv.Create, kv.Update, deletes with
//     the expected last sequence), so concurrent writers cannot both win.
//   - An auth-id is claimed with kv.Create before the credentials naming
//     it are written; Lookup (three gets, cached) trusts an index key only
//     if the device's credentials hold the auth-id, so a crash between the
//     writes leaves nothing that authenticates, and a later claim repairs
//     the key. A device's "incarnation" (a random id in its record and in
//     its credentials) keeps credentials left by a deleted device from
//     passing to a new device of the same id.
//   - Per tenant, an in-memory index (a counted B-tree of ids, and the
//     gateway relations) built at Open from a watch of the devices bucket
//     and kept current by it, on every node; writers wait until their own
//     watch applied their write. Pages sorted by id (with or without
//     isGateway) come from it; other filters and sorts scan the tenant.
//   - DeleteDevices purges the tenant's keys (one request per bucket) and
//     writes a purge marker that the watches act on.
package registry

import (
	"encoding/json"
	"errors"
	"time"
)

// Sentinel errors; the admin API maps them to Hono's status codes.
var (
	ErrNotFound        = errors.New("not found")                 // 404
	ErrExists          = errors.New("already exists")            // 409
	ErrInvalid         = errors.New("invalid")                   // 400
	ErrVersionMismatch = errors.New("resource version mismatch") // 412 (If-Match)
	ErrLimit           = errors.New("limit exceeded")            // 403 as Hono (registration-limits)
)

// Credential types.
const (
	TypePassword = "hashed-password"
	TypeX509     = "x509-cert"
	TypePSK      = "psk"
	TypeRPK      = "rpk"
)

// Device is Hono's Device resource. Status is read-only for clients: the
// store sets it.
type Device struct {
	Enabled                 *bool                      `json:"enabled,omitempty"` // default true
	Defaults                map[string]json.RawMessage `json:"defaults,omitempty"`
	Via                     []string                   `json:"via,omitempty"`
	ViaGroups               []string                   `json:"viaGroups,omitempty"`
	MemberOf                []string                   `json:"memberOf,omitempty"`
	Authorities             []string                   `json:"authorities,omitempty"`
	Mapper                  string                     `json:"mapper,omitempty"`
	DownstreamMessageMapper string                     `json:"downstream-message-mapper,omitempty"`
	UpstreamMessageMapper   string                     `json:"upstream-message-mapper,omitempty"`
	CommandEndpoint         json.RawMessage            `json:"command-endpoint,omitempty"`
	Ext                     map[string]json.RawMessage `json:"ext,omitempty"`
	Status                  *Status                    `json:"status,omitempty"`
}

// IsEnabled reports Hono's "enabled" (default true).
func (d *Device) IsEnabled() bool { return d.Enabled == nil || *d.Enabled }

// Status is the read-only metadata of a device.
type Status struct {
	Created                          time.Time  `json:"created"`
	Updated                          *time.Time `json:"updated,omitempty"`
	LastUser                         string     `json:"last-user,omitempty"`
	AutoProvisioned                  bool       `json:"auto-provisioned,omitempty"`
	AutoProvisioningNotificationSent bool       `json:"auto-provisioning-notification-sent,omitempty"`
}

// Credential is one entry of a device's credentials set: a type and an
// auth-id (unique per tenant and type) with its secrets.
type Credential struct {
	Type    string                     `json:"type"`
	AuthID  string                     `json:"auth-id"`
	Enabled *bool                      `json:"enabled,omitempty"` // default true
	Ext     map[string]json.RawMessage `json:"ext,omitempty"`
	Secrets []Secret                   `json:"secrets"`

	// Cert (x509-cert, input only): a device certificate (DER, base64 in
	// JSON) from which the store takes the auth-id (the subject DN) and
	// the secret's validity; it is not stored (Hono's "cert").
	Cert []byte `json:"cert,omitempty"`
}

// IsEnabled reports Hono's "enabled" (default true).
func (c *Credential) IsEnabled() bool { return c.Enabled == nil || *c.Enabled }

// Secret is one secret of a credential. Which fields apply depends on the
// credential type. PwdPlain is input only: the store hashes it (bcrypt)
// and never stores or returns it; stored password hashes are not returned
// by GET either (Hono returns secrets' metadata only).
type Secret struct {
	ID        string     `json:"id,omitempty"`
	Enabled   *bool      `json:"enabled,omitempty"`
	NotBefore *time.Time `json:"not-before,omitempty"`
	NotAfter  *time.Time `json:"not-after,omitempty"`
	Comment   string     `json:"comment,omitempty"`

	// hashed-password: bcrypt ("$2a$…" in PwdHash), sha-256 or sha-512
	// (base64 of hash(salt + password) in PwdHash, Salt base64).
	HashFunction string `json:"hash-function,omitempty"`
	PwdHash      string `json:"pwd-hash,omitempty"`
	Salt         []byte `json:"salt,omitempty"`
	PwdPlain     string `json:"pwd-plain,omitempty"`

	// psk and rpk: the key (base64 in JSON); rpk: algorithm ("EC", "RSA")
	// or a certificate to take the key from.
	Key       []byte `json:"key,omitempty"`
	Algorithm string `json:"algorithm,omitempty"`
	Cert      []byte `json:"cert,omitempty"`
}

// IsEnabled reports Hono's "enabled" (default true).
func (s *Secret) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// ValidAt reports whether t lies in the secret's validity window.
func (s *Secret) ValidAt(t time.Time) bool {
	return (s.NotBefore == nil || !t.Before(*s.NotBefore)) && (s.NotAfter == nil || !t.After(*s.NotAfter))
}

// Query selects a page of devices (Hono's search devices operation).
type Query struct {
	PageSize   int      // default 30, at most 200 (Hono)
	PageOffset int      // default 0
	Filters    []Filter // all must match (filterJson)
	Sort       []Sort   // sortJson; default by id ascending
	IsGateway  *bool    // only gateways (devices some other device names in via/viaGroups) or only non-gateways
}

// Filter is one element of Hono's filterJson: a JSON pointer into the
// device, an operator ("eq", the default) and a value; string values may
// use '*' and '?' wildcards.
type Filter struct {
	Field string          `json:"field"`
	Op    string          `json:"op,omitempty"`
	Value json.RawMessage `json:"value"`
}

// Sort is one element of Hono's sortJson.
type Sort struct {
	Field     string `json:"field"`
	Direction string `json:"direction,omitempty"` // "asc" (default) or "desc"
}

// DeviceWithID is an element of a search result.
type DeviceWithID struct {
	ID string `json:"id"`
	Device
}

// Page is a search result (Hono's SearchDevicesResult).
type Page struct {
	Total  int            `json:"total"`
	Result []DeviceWithID `json:"result"`
}

// Identity is what authentication needs about a credential's device:
// found by (tenant, type, auth-id) in O(1).
type Identity struct {
	Tenant     string
	DeviceID   string
	Device     *Device     // the device's current registration
	Credential *Credential // the matching credential, secrets with hashes
}
