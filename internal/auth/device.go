package auth

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// Devices is what the authenticator needs from the device registry
// (*registry.Store).
type Devices interface {
	// Lookup finds the device holding a credential (type, auth-id) in a
	// tenant, disabled ones included; registry.ErrNotFound if none.
	Lookup(ctx context.Context, tenantName, typ, authID string) (*registry.Identity, error)
	// AutoProvision registers a device with one credential on its first
	// connection (client certificates of an auto-provisioning anchor).
	AutoProvision(ctx context.Context, tenantName, deviceID string, c registry.Credential, gateway bool) (*registry.Identity, error)
	// OnCredentialsChange registers f, called on every node when a
	// device's credentials or registration change.
	OnCredentialsChange(f func(tenantName, deviceID string))
}

// Reasons a device is refused, the "reason" label of
// throng_auth_device_failures_total and the text of a *DeviceError.
const (
	ReasonUnknownAuthID      = "unknown-auth-id"
	ReasonWrongSecret        = "wrong-secret"
	ReasonDeviceDisabled     = "device-disabled"
	ReasonCredentialDisabled = "credential-disabled"
	ReasonCredentialExpired  = "credential-expired"
	ReasonTenantDisabled     = "tenant-disabled"
	ReasonAdapterDisabled    = "adapter-disabled"
	ReasonUntrustedCert      = "untrusted-certificate"
	ReasonRegistryError      = "registry-error"
)

// DeviceError is a refused device authentication. Its text names the
// reason and the auth-id, for logs; front-ends send the client only the
// protocol's code (what Unwrap returns decides it: ErrBadCredentials,
// ErrNotAuthorized or ErrUnavailable), so a client cannot tell an unknown
// auth-id from a wrong password or a disabled device.
type DeviceError struct {
	Reason string
	Tenant string
	AuthID string
	Err    error // ErrBadCredentials, ErrNotAuthorized or ErrUnavailable
	Cause  error // the registry's error, for ReasonRegistryError
}

func (e *DeviceError) Error() string {
	s := fmt.Sprintf("%v: device auth-id %q in tenant %q: %s", e.Err, e.AuthID, e.Tenant, e.Reason)
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

func (e *DeviceError) Unwrap() error { return e.Err }

// refuse counts a refused device and returns its error (logged at debug
// level here; the front-ends log the error, which names the reason).
func (a *Authenticator) refuse(adapter, reason string, t *tenant.Tenant, authID string, cause error) error {
	err := ErrBadCredentials
	switch reason {
	case ReasonTenantDisabled, ReasonAdapterDisabled:
		err = ErrNotAuthorized
	case ReasonRegistryError:
		err = ErrUnavailable
	}
	a.m.deviceFail.WithLabelValues(adapter, reason).Inc()
	e := &DeviceError{Reason: reason, Tenant: t.Name, AuthID: authID, Err: err, Cause: cause}
	a.log.Debug("device refused", "tenant", t.Name, "auth_id", authID, "adapter", adapter, "reason", reason, "err", cause)
	return e
}

// adapterEnabled applies Hono's rule: without an adapters list every
// adapter is enabled; with one, only those listed with enabled true. An
// empty adapter name (no protocol named) is not checked.
func adapterEnabled(iot *tenant.IoT, adapter string) bool {
	if adapter == "" || iot.Adapters == nil {
		return true
	}
	for _, ad := range iot.Adapters {
		if ad.Type == adapter {
			return ad.Enabled != nil && *ad.Enabled
		}
	}
	return false
}

// tenantOpen checks an IoT tenant and adapter before any credential; the
// reason if refused.
func tenantOpen(t *tenant.Tenant, adapter string) string {
	switch {
	case !t.IoT.IsEnabled():
		return ReasonTenantDisabled
	case !adapterEnabled(t.IoT, adapter):
		return ReasonAdapterDisabled
	}
	return ""
}

// devVerified is a cached successful password verification of a device.
type devVerified struct {
	sum [32]byte // SHA-256 of the password
}

// authenticateDevice checks a hashed-password credential with auth-id
// name. Whatever the reason of a refusal, it takes as long as a bcrypt
// comparison (a real one, or for an unknown or disabled device an
// imitation that costs no CPU: Authenticator.imitate), so that timing
// tells an unknown or disabled device from a wrong password no better
// than the answer does.
func (a *Authenticator) authenticateDevice(ctx context.Context, adapter string, t *tenant.Tenant, authID, password string) (*Principal, error) {
	if r := tenantOpen(t, adapter); r != "" {
		return nil, a.refuse(adapter, r, t, authID, nil)
	}
	id, err := a.devices.Lookup(ctx, t.Name, registry.TypePassword, authID)
	if errors.Is(err, registry.ErrNotFound) {
		a.imitate(ctx, "device\x00"+t.Name+"\x00"+authID, password)
		return nil, a.refuse(adapter, ReasonUnknownAuthID, t, authID, nil)
	}
	if err != nil {
		return nil, a.refuse(adapter, ReasonRegistryError, t, authID, err)
	}
	now := a.now()
	var candidates []*registry.Secret
	reason := ""
	switch {
	case id.Device != nil && !id.Device.IsEnabled():
		reason = ReasonDeviceDisabled
	case id.Credential == nil || !id.Credential.IsEnabled():
		reason = ReasonCredentialDisabled
	default:
		for i := range id.Credential.Secrets {
			if s := &id.Credential.Secrets[i]; s.IsEnabled() && s.ValidAt(now) {
				candidates = append(candidates, s)
			}
		}
		if len(candidates) == 0 {
			reason = ReasonCredentialExpired
		}
	}
	if reason != "" {
		a.imitate(ctx, "device\x00"+t.Name+"\x00"+authID, password)
		return nil, a.refuse(adapter, reason, t, authID, nil)
	}
	ok, err := a.matchSecrets(ctx, t.Name, id.DeviceID, authID, candidates, password)
	if err != nil {
		return nil, a.refuse(adapter, ReasonRegistryError, t, authID, err)
	}
	if !ok {
		return nil, a.refuse(adapter, ReasonWrongSecret, t, authID, nil)
	}
	a.m.deviceOK.WithLabelValues(adapter, "password").Inc()
	return &Principal{Tenant: t.Name, Device: id.DeviceID, AuthID: authID, AuthType: registry.TypePassword}, nil
}

// matchSecrets reports whether password matches one of the secrets.
// Salted SHA-2 hashes are cheap and checked directly; bcrypt hashes go
// through the cache, then the pool.
func (a *Authenticator) matchSecrets(ctx context.Context, tenantName, deviceID, authID string, secrets []*registry.Secret, password string) (bool, error) {
	sum := sha256.Sum256([]byte(password))
	var slow []*registry.Secret
	for _, s := range secrets {
		switch hf := strings.ToLower(s.HashFunction); {
		case hf == "sha-256" || hf == "sha-512":
			if shaMatches(hf, s, password) {
				return true, nil
			}
		case isBcrypt(s.PwdHash):
			key := devCacheKey(tenantName, authID, s.PwdHash)
			a.devMu.Lock()
			v, hit := a.devCache[key]
			a.devMu.Unlock()
			if hit && subtle.ConstantTimeCompare(v.sum[:], sum[:]) == 1 {
				a.m.cacheHits.Inc()
				return true, nil
			}
			slow = append(slow, s)
		default:
			// An unknown hash function matches nothing (Hono would try
			// bcrypt, which fails on anything that is not a bcrypt hash).
			a.log.Warn("device secret with an unsupported hash function", "tenant", tenantName, "auth_id", authID, "hash_function", s.HashFunction)
		}
	}
	for _, s := range slow {
		match, err := a.compare(ctx, []byte(s.PwdHash), password)
		if err != nil {
			return false, err
		}
		if match {
			a.remember(tenantName, deviceID, devCacheKey(tenantName, authID, s.PwdHash), sum)
			return true, nil
		}
	}
	return false, nil
}

func isBcrypt(h string) bool {
	return strings.HasPrefix(h, "$2a$") || strings.HasPrefix(h, "$2b$") || strings.HasPrefix(h, "$2y$")
}

// shaMatches checks Hono's salted SHA-2 secrets: pwd-hash is the base64
// of hash(salt bytes ‖ UTF-8 password bytes), the salt (optional) is
// stored decoded (base64 in JSON). See Hono's MessageDigestPasswordEncoder.
func shaMatches(hf string, s *registry.Secret, password string) bool {
	want, err := base64.StdEncoding.DecodeString(s.PwdHash)
	if err != nil {
		if want, err = base64.RawStdEncoding.DecodeString(s.PwdHash); err != nil {
			return false
		}
	}
	b := make([]byte, 0, len(s.Salt)+len(password))
	b = append(append(b, s.Salt...), password...)
	var got []byte
	if hf == "sha-256" {
		h := sha256.Sum256(b)
		got = h[:]
	} else {
		h := sha512.Sum512(b)
		got = h[:]
	}
	return subtle.ConstantTimeCompare(got, want) == 1
}

func devCacheKey(tenantName, authID, hash string) string {
	return tenantName + "\x00" + authID + "\x00" + hash
}

// remember caches a verified bcrypt secret for the device.
func (a *Authenticator) remember(tenantName, deviceID, key string, sum [32]byte) {
	dk := tenantName + "\x00" + deviceID
	a.devMu.Lock()
	defer a.devMu.Unlock()
	if len(a.devCache) >= maxCache {
		a.devCache = map[string]devVerified{}
		a.devKeys = map[string][]string{}
	}
	if _, ok := a.devCache[key]; !ok {
		a.devKeys[dk] = append(a.devKeys[dk], key)
	}
	a.devCache[key] = devVerified{sum: sum}
}

// forgetDevice drops what the cache holds for a device (the registry's
// OnCredentialsChange, on every node). The cache would not accept a
// changed secret anyway (its key holds the stored hash); dropping makes a
// removed or disabled password unusable from memory at once and frees it.
func (a *Authenticator) forgetDevice(tenantName, deviceID string) {
	dk := tenantName + "\x00" + deviceID
	a.devMu.Lock()
	for _, k := range a.devKeys[dk] {
		delete(a.devCache, k)
	}
	delete(a.devKeys, dk)
	a.devMu.Unlock()
}
