package auth

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/throngmq/throng/internal/registry"
)

// JSON Web Token device authentication (Hono's "JSON Web Token based
// Authentication", concepts/device-identity; docs/device-auth.md, "JSON
// Web Tokens"): a device of an IoT-enabled tenant presents a signed JWT
// (a compact JWS) instead of a password — in the MQTT CONNECT's password
// field, or as an HTTP Bearer token — and the adapter verifies it with
// the public keys of the device's rpk (raw public key) credential.
//
// The tenant and auth-id come from the token's claims "tid" and "sub"
// when its "aud" contains "hono-adapter", else from the adapter: the
// MQTT client identifier (`*/<tenant>/*/<auth-id>`) or the HTTP URI
// (`/<endpoint>/<tenant>/<auth-id>`). The JOSE header must say typ JWT;
// RS256, PS256, ES256 and their stronger variants are accepted; iat and
// exp are required, iat no later than 10 minutes from now, exp after iat
// and at most 24 hours (plus the 10 minutes' skew) after it, and not
// passed (with the skew). As in Hono, nbf is ignored, and iss is not
// checked.

// AudienceHonoAdapter is the "aud" value that makes the token's claims
// name the tenant ("tid") and auth-id ("sub").
const AudienceHonoAdapter = "hono-adapter"

// ReasonInvalidToken: the token is malformed, not signed by a key of the
// device's rpk credential, or its claims break Hono's rules (expired,
// too long-lived, no iat or exp, typ not JWT).
const ReasonInvalidToken = "invalid-token"

const (
	// jwtSkew is the clock skew allowed (Hono: 10 minutes).
	jwtSkew = 10 * time.Minute
	// jwtMaxLifetime bounds exp - iat (Hono: 24 hours, plus the skew).
	jwtMaxLifetime = 24 * time.Hour
)

// jwtMethods are the signature algorithms accepted (Hono: RS256, PS256,
// ES256 and their stronger variants).
var jwtMethods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

// deviceClaims are the claims read from a device's token.
type deviceClaims struct {
	jwt.RegisteredClaims
	TenantID string `json:"tid,omitempty"`
}

// LooksLikeJWT reports whether s is a compact JWS whose JOSE header
// parses and names an algorithm: what a device sends in place of a
// password. A password that happens to look like one is taken for a
// token (and refused unless it is one).
func LooksLikeJWT(s string) bool {
	if len(s) < 16 || strings.Count(s, ".") != 2 {
		return false
	}
	h, _, _ := strings.Cut(s, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return false
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	return json.Unmarshal(b, &hdr) == nil && hdr.Alg != ""
}

// JWTClientID reads the tenant and auth-id from an MQTT client identifier
// in Hono's form for token authentication, `*/<tenant>/[^/]*/<auth-id>`
// (e.g. tenants/acme/devices/sensor1): the third-last and the last
// level. ok is false when it has fewer than three levels.
func JWTClientID(clientID string) (tenantName, authID string, ok bool) {
	lv := strings.Split(clientID, "/")
	if len(lv) < 3 {
		return "", "", false
	}
	return lv[len(lv)-3], lv[len(lv)-1], true
}

// clientIDKey carries an MQTT client identifier (WithClientID).
type clientIDKey struct{}

// WithClientID returns ctx carrying the connection's MQTT client
// identifier: AuthenticateFor takes the tenant and auth-id of a token
// without the hono-adapter audience from it.
func WithClientID(ctx context.Context, clientID string) context.Context {
	return context.WithValue(ctx, clientIDKey{}, clientID)
}

// authenticateMQTTToken is AuthenticateFor's path for an MQTT password
// that is a token: the user name is ignored (Hono), the tenant and
// auth-id come from the claims or the client identifier.
func (a *Authenticator) authenticateMQTTToken(ctx context.Context, token string) (*Principal, error) {
	id, _ := ctx.Value(clientIDKey{}).(string)
	tn, authID, _ := JWTClientID(id)
	return a.AuthenticateJWT(ctx, AdapterMQTT, tn, authID, token)
}

// AuthenticateJWT authenticates a device by a signed JWT against the
// public keys of its rpk credential. tenantName and authID are the
// adapter's (MQTT client identifier, HTTP URI), used when the token's
// audience does not contain AudienceHonoAdapter; they may be empty.
// The principal expires with the token (Principal.Expired; Live closes
// its connection then). Errors are those of AuthenticateFor:
// ErrBadCredentials (a *DeviceError naming the reason), ErrNotAuthorized
// (tenant or adapter disabled), ErrUnknownTenant, ErrUnavailable.
func (a *Authenticator) AuthenticateJWT(ctx context.Context, adapter, tenantName, authID, token string) (*Principal, error) {
	var claims deviceClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		a.m.deviceFail.WithLabelValues(adapter, ReasonInvalidToken).Inc()
		return nil, &DeviceError{Reason: ReasonInvalidToken, Tenant: tenantName, AuthID: authID, Err: ErrBadCredentials,
			Cause: err}
	}
	if slices.Contains(claims.Audience, AudienceHonoAdapter) {
		tenantName, authID = claims.TenantID, claims.Subject
	}
	if tenantName == "" || authID == "" {
		a.m.deviceFail.WithLabelValues(adapter, ReasonInvalidToken).Inc()
		return nil, &DeviceError{Reason: ReasonInvalidToken, Tenant: tenantName, AuthID: authID, Err: ErrBadCredentials,
			Cause: errors.New("no tenant and auth-id: the claims tid and sub with aud hono-adapter, or the adapter's client identifier or URI")}
	}
	t, ok := a.users.Tenant(tenantName)
	if !ok {
		return nil, ErrUnknownTenant
	}
	if t.IoT == nil {
		return nil, a.refuse(adapter, ReasonUnknownAuthID, t, authID, errors.New("not an IoT tenant"))
	}
	if r := tenantOpen(t, adapter); r != "" {
		return nil, a.refuse(adapter, r, t, authID, nil)
	}
	if a.devices == nil {
		return nil, a.refuse(adapter, ReasonUnknownAuthID, t, authID, nil)
	}
	id, err := a.devices.Lookup(ctx, t.Name, registry.TypeRPK, authID)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, a.refuse(adapter, ReasonUnknownAuthID, t, authID, nil)
	}
	if err != nil {
		return nil, a.refuse(adapter, ReasonRegistryError, t, authID, err)
	}
	now := a.now()
	var keys []jwt.VerificationKey
	switch {
	case id.Device != nil && !id.Device.IsEnabled():
		return nil, a.refuse(adapter, ReasonDeviceDisabled, t, authID, nil)
	case id.Credential == nil || !id.Credential.IsEnabled():
		return nil, a.refuse(adapter, ReasonCredentialDisabled, t, authID, nil)
	}
	for i := range id.Credential.Secrets {
		s := &id.Credential.Secrets[i]
		if !s.IsEnabled() || !s.ValidAt(now) || len(s.Key) == 0 {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(s.Key)
		if err != nil {
			a.log.Warn("rpk secret with an unreadable key", "tenant", t.Name, "auth_id", authID, "secret", s.ID, "err", err)
			continue
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, a.refuse(adapter, ReasonCredentialExpired, t, authID, nil)
	}
	exp, err := verifyToken(token, keys, now)
	if err != nil {
		return nil, a.refuse(adapter, ReasonInvalidToken, t, authID, err)
	}
	a.m.deviceOK.WithLabelValues(adapter, "jwt").Inc()
	return &Principal{Tenant: t.Name, Device: id.DeviceID, AuthID: authID, AuthType: registry.TypeRPK,
		expires: exp.Add(jwtSkew).UnixNano()}, nil
}

// verifyToken checks the token's signature against keys (any one) and
// Hono's rules for its header and claims; it returns the expiry.
func verifyToken(token string, keys []jwt.VerificationKey, now time.Time) (time.Time, error) {
	var claims deviceClaims
	tok, err := jwt.NewParser(
		jwt.WithValidMethods(jwtMethods),
		jwt.WithLeeway(jwtSkew),
		jwt.WithIssuedAt(),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	).ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) {
		return jwt.VerificationKeySet{Keys: keys}, nil
	})
	if err != nil {
		return time.Time{}, err
	}
	if typ, _ := tok.Header["typ"].(string); typ != "JWT" {
		return time.Time{}, fmt.Errorf("the JOSE header's typ is %q, not JWT", typ)
	}
	if claims.IssuedAt == nil {
		return time.Time{}, errors.New("the token has no iat claim")
	}
	iat, exp := claims.IssuedAt.Time, claims.ExpiresAt.Time
	if !exp.After(iat) {
		return time.Time{}, errors.New("exp is not after iat")
	}
	if exp.After(iat.Add(jwtMaxLifetime + jwtSkew)) {
		return time.Time{}, fmt.Errorf("exp is more than %s after iat", jwtMaxLifetime)
	}
	return exp, nil
}
