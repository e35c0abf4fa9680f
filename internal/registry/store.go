package registry

// CONTRACT STUB (session 10 lead): the signatures below are the agreed
// interface between the registry store (helper "registry-store"), the
// Hono HTTP API in package admin and device authentication in package
// auth. The store helper replaces the bodies and this comment; signature
// changes must be agreed first.

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/tenant"
)

var errTODO = errors.New("registry: not implemented yet")

// Tenants is what the store needs to know about tenants (*tenant.Store):
// existence, and Hono's registration-limits.
type Tenants interface {
	Tenant(name string) (*tenant.Tenant, bool)
}

// Store keeps devices and credentials.
type Store struct{}

// Open creates the buckets if needed and loads the indexes. nc must be a
// connection to the engine's system account.
func Open(ctx context.Context, nc *nats.Conn, tenants Tenants, log *slog.Logger) (*Store, error) {
	return nil, errTODO
}

// Close stops the watches.
func (s *Store) Close() {}

// CreateDevice registers a device; an empty id asks for a generated one
// (a UUID). It returns the id and the new resource version (the ETag).
// ErrExists if the id is taken, ErrNotFound for an unknown tenant,
// ErrLimit beyond registration-limits.max-devices.
func (s *Store) CreateDevice(ctx context.Context, tenantName, id string, d *Device) (string, string, error) {
	return "", "", errTODO
}

// Device returns a device and its resource version.
func (s *Store) Device(ctx context.Context, tenantName, id string) (*Device, string, error) {
	return nil, "", errTODO
}

// UpdateDevice replaces a device's registration (status is kept and its
// "updated" set). ifMatch, when not empty, must equal the current version
// (ErrVersionMismatch otherwise).
func (s *Store) UpdateDevice(ctx context.Context, tenantName, id string, d *Device, ifMatch string) (string, error) {
	return "", errTODO
}

// DeleteDevice removes a device and its credentials.
func (s *Store) DeleteDevice(ctx context.Context, tenantName, id, ifMatch string) error {
	return errTODO
}

// DeleteDevices removes every device of a tenant (Hono's DELETE
// /v1/devices/{tenant}; also called when a tenant is deleted).
func (s *Store) DeleteDevices(ctx context.Context, tenantName string) error {
	return errTODO
}

// Devices returns a page of a tenant's devices.
func (s *Store) Devices(ctx context.Context, tenantName string, q Query) (Page, error) {
	return Page{}, errTODO
}

// DeviceCount returns how many devices a tenant has.
func (s *Store) DeviceCount(tenantName string) int { return 0 }

// Credentials returns a device's credentials set and its version (the
// device's credentials resource version). Secrets come without pwd-hash,
// salt, pwd-plain and key (Hono returns secrets' metadata only).
func (s *Store) Credentials(ctx context.Context, tenantName, id string) ([]Credential, string, error) {
	return nil, "", errTODO
}

// SetCredentials replaces a device's credentials set, Hono's way: a
// secret given with only an "id" keeps the stored secret of that id, a
// secret without an id is new (an id is generated), stored secrets not
// named are removed; pwd-plain is hashed with bcrypt. auth-ids are unique
// per tenant and type (ErrExists when another device holds one).
func (s *Store) SetCredentials(ctx context.Context, tenantName, id string, cs []Credential, ifMatch string) (string, error) {
	return "", errTODO
}

// Lookup finds the device holding the credential (type, auth-id) in a
// tenant, in time independent of the number of devices. ErrNotFound if
// none. The result includes disabled devices and credentials: the caller
// decides (and counts) why it refuses.
func (s *Store) Lookup(ctx context.Context, tenantName, typ, authID string) (*Identity, error) {
	return nil, errTODO
}

// AutoProvision registers a device with one credential on its first
// connection (Hono's auto-provisioning from a client certificate), with
// status auto-provisioned. It is idempotent: a concurrent provisioning of
// the same device returns the stored identity.
func (s *Store) AutoProvision(ctx context.Context, tenantName, deviceID string, c Credential, gateway bool) (*Identity, error) {
	return nil, errTODO
}

// OnCredentialsChange registers a function called (on every node, from
// the store's watch) when a device's credentials or registration change or
// are deleted, so that authentication caches drop what they hold for it.
func (s *Store) OnCredentialsChange(f func(tenantName, deviceID string)) {}
