package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// signJWT signs claims with key (method m), typ JWT unless typ says
// otherwise ("-" leaves it out).
func signJWT(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims, typ string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	switch typ {
	case "-":
		delete(tok.Header, "typ")
	case "":
	default:
		tok.Header["typ"] = typ
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func spki(t *testing.T, pub any) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJWT(t *testing.T) {
	f := newDeviceFixture(t)
	now := time.Now().Truncate(time.Second)
	f.a.now = func() time.Time { return now }
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.dev.put("iot", "jwt-dev", registry.Device{}, registry.Credential{Type: registry.TypeRPK, AuthID: "jwt-dev", Secrets: []registry.Secret{
		{Key: spki(t, &ec.PublicKey), Algorithm: "EC"}, {Key: spki(t, &rk.PublicKey), Algorithm: "RSA"}}})
	f.dev.put("iot", "old-dev", registry.Device{}, registry.Credential{Type: registry.TypeRPK, AuthID: "old-dev", Secrets: []registry.Secret{
		{Key: spki(t, &ec.PublicKey), NotAfter: ptr(now.Add(-time.Hour))}}})
	f.dev.put("iot", "off-dev", registry.Device{Enabled: ptr(false)}, registry.Credential{Type: registry.TypeRPK, AuthID: "off-dev",
		Secrets: []registry.Secret{{Key: spki(t, &ec.PublicKey)}}})
	claims := func(sub string, mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"aud": []string{"hono-adapter"}, "tid": "iot", "sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	ctx := context.Background()

	// The claims name tenant and auth-id (aud hono-adapter): ES256 and
	// PS256 against the credential's two keys; the adapter's names are
	// ignored then.
	for _, tc := range []struct {
		m   jwt.SigningMethod
		key any
	}{{jwt.SigningMethodES256, ec}, {jwt.SigningMethodPS256, rk}, {jwt.SigningMethodRS512, rk}} {
		tok := signJWT(t, tc.m, tc.key, claims("jwt-dev", nil), "")
		p, err := f.a.AuthenticateJWT(ctx, AdapterHTTP, "other", "nobody", tok)
		if err != nil {
			t.Fatalf("%s: %v", tc.m.Alg(), err)
		}
		if p.Tenant != "iot" || p.Device != "jwt-dev" || p.AuthID != "jwt-dev" || p.AuthType != registry.TypeRPK {
			t.Fatalf("%s: principal %+v", tc.m.Alg(), p)
		}
		if p.Expired(now.Add(time.Hour+9*time.Minute)) || !p.Expired(now.Add(time.Hour+jwtSkew)) {
			t.Fatalf("expiry %d (exp + skew)", p.expires)
		}
	}

	// MQTT: the password is the token, the user name ignored; without
	// the audience the client id names tenant and auth-id.
	tok := signJWT(t, jwt.SigningMethodES256, ec, claims("", func(c jwt.MapClaims) { delete(c, "aud"); delete(c, "tid"); delete(c, "sub") }), "")
	p, err := f.a.AuthenticateFor(WithClientID(ctx, "tenants/iot/devices/jwt-dev"), AdapterMQTT, "default", "ignored", tok)
	if err != nil || p.Device != "jwt-dev" {
		t.Fatalf("client id: %+v %v", p, err)
	}
	if _, err := f.a.AuthenticateFor(WithClientID(ctx, "jwt-dev"), AdapterMQTT, "iot", "jwt-dev", tok); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("client id without tenant: %v", err)
	}
	// The audience is there: the claims decide, not the client id.
	tok = signJWT(t, jwt.SigningMethodES256, ec, claims("jwt-dev", nil), "")
	if p, err := f.a.AuthenticateFor(WithClientID(ctx, "tenants/x/devices/y"), AdapterMQTT, "default", "", tok); err != nil || p.Device != "jwt-dev" {
		t.Fatalf("claims: %+v %v", p, err)
	}
	// AMQP does not take tokens (Hono neither): a password as any other.
	if _, err := f.a.AuthenticateFor(ctx, AdapterAMQP, "iot", "jwt-dev", tok); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("amqp: %v", err)
	}

	for name, tc := range map[string]struct {
		tok    string
		reason string
		err    error
	}{
		"another key": {signJWT(t, jwt.SigningMethodES256, other, claims("jwt-dev", nil), ""), ReasonInvalidToken, ErrBadCredentials},
		"no typ":      {signJWT(t, jwt.SigningMethodES256, ec, claims("jwt-dev", nil), "-"), ReasonInvalidToken, ErrBadCredentials},
		"typ JOSE":    {signJWT(t, jwt.SigningMethodES256, ec, claims("jwt-dev", nil), "JOSE"), ReasonInvalidToken, ErrBadCredentials},
		"HS256":       {signJWT(t, jwt.SigningMethodHS256, []byte("shared secret of 32 bytes at least"), claims("jwt-dev", nil), ""), ReasonInvalidToken, ErrBadCredentials},
		"no iat":      {signJWT(t, jwt.SigningMethodES256, ec, claims("jwt-dev", func(c jwt.MapClaims) { delete(c, "iat") }), ""), ReasonInvalidToken, ErrBadCredentials},
		"no exp":      {signJWT(t, jwt.SigningMethodES256, ec, claims("jwt-dev", func(c jwt.MapClaims) { delete(c, "exp") }), ""), ReasonInvalidToken, ErrBadCredentials},
		"expired": {signJWT(t, jwt.SigningMethodES256, ec, claims("jwt-dev", func(c jwt.MapClaims) {
			c["iat"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-11*time.Minute).Unix()
		}), ""), ReasonInvalidToken, ErrBadCredentials},
		"iat in the future": {signJWT(t, jwt.SigningMethodES256, ec, claims("jwt-dev", func(c jwt.MapClaims) { c["iat"], c["exp"] = now.Add(11*time.Minute).Unix(), now.Add(time.Hour).Unix() }), ""), ReasonInvalidToken, ErrBadCredentials},
		"lives 25 hours":    {signJWT(t, jwt.SigningMethodES256, ec, claims("jwt-dev", func(c jwt.MapClaims) { c["exp"] = now.Add(25 * time.Hour).Unix() }), ""), ReasonInvalidToken, ErrBadCredentials},
		"exp before iat":    {signJWT(t, jwt.SigningMethodES256, ec, claims("jwt-dev", func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() }), ""), ReasonInvalidToken, ErrBadCredentials},
		"no sub":            {signJWT(t, jwt.SigningMethodES256, ec, claims("", nil), ""), ReasonInvalidToken, ErrBadCredentials},
		"unknown auth-id":   {signJWT(t, jwt.SigningMethodES256, ec, claims("nobody", nil), ""), ReasonUnknownAuthID, ErrBadCredentials},
		"secret expired":    {signJWT(t, jwt.SigningMethodES256, ec, claims("old-dev", nil), ""), ReasonCredentialExpired, ErrBadCredentials},
		"device disabled":   {signJWT(t, jwt.SigningMethodES256, ec, claims("off-dev", nil), ""), ReasonDeviceDisabled, ErrBadCredentials},
		"not a token":       {"a.b.c", ReasonInvalidToken, ErrBadCredentials},
	} {
		before := f.failures(AdapterHTTP, tc.reason)
		p, err := f.a.AuthenticateJWT(ctx, AdapterHTTP, "", "", tc.tok)
		var de *DeviceError
		if p != nil || !errors.Is(err, tc.err) || !errors.As(err, &de) || de.Reason != tc.reason {
			t.Errorf("%s: %+v %v, want %s", name, p, err, tc.reason)
			continue
		}
		if got := f.failures(AdapterHTTP, tc.reason); got != before+1 {
			t.Errorf("%s: failures{%s} %v, want %v", name, tc.reason, got, before+1)
		}
	}
	if _, err := f.a.AuthenticateJWT(ctx, AdapterHTTP, "", "", signJWT(t, jwt.SigningMethodES256, ec, claims("x", func(c jwt.MapClaims) { c["tid"] = "nope" }), "")); !errors.Is(err, ErrUnknownTenant) {
		t.Fatalf("unknown tenant: %v", err)
	}
	// The tenant's adapter switch comes first (Hono).
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{Adapters: []tenant.Adapter{{Type: AdapterHTTP, Enabled: ptr(false)}}}}
	if _, err := f.a.AuthenticateJWT(ctx, AdapterHTTP, "", "", tok); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("adapter disabled: %v", err)
	}
}

func TestLooksLikeJWT(t *testing.T) {
	for s, want := range map[string]bool{
		"eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4In0.c2ln": true,
		"eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2ln":                   false, // no alg
		"secret1":                    false,
		"a.b.c":                      false,
		"not.base64!.at-all-really":  false,
		"eyJhbGciOiJub25lIn0.e30.":   true, // alg none: taken for a token, and refused
		"eyJhbGciOiJFUzI1NiJ9.e30.x": true,
	} {
		if got := LooksLikeJWT(s); got != want {
			t.Errorf("%q: %v", s, got)
		}
	}
	for id, want := range map[string][2]string{
		"tenants/acme/devices/dev1": {"acme", "dev1"},
		"acme/x/dev1":               {"acme", "dev1"},
		"a/b/acme/x/dev1":           {"acme", "dev1"},
	} {
		if tn, a, ok := JWTClientID(id); !ok || tn != want[0] || a != want[1] {
			t.Errorf("%q: %q %q %v", id, tn, a, ok)
		}
	}
	if _, _, ok := JWTClientID("acme/dev1"); ok {
		t.Error("two levels read as a client id with tenant and auth-id")
	}
}

func TestLiveTokenExpiry(t *testing.T) {
	f := newDeviceFixture(t)
	l := f.a.Live()
	soon := &Principal{Tenant: "iot", Device: "d1", AuthType: registry.TypeRPK, AuthID: "d1", expires: time.Now().Add(100 * time.Millisecond).UnixNano()}
	c := &recConn{}
	l.Register(c, soon, AdapterMQTT)
	waitRevoked(t, c, CauseTokenExpired)
	l.Unregister(c, soon)

	// A connection that ended first is not revoked; one without expiry
	// never is.
	gone, plain := &recConn{}, &recConn{}
	p2 := &Principal{Tenant: "iot", Device: "d2", expires: time.Now().Add(100 * time.Millisecond).UnixNano()}
	l.Register(gone, p2, AdapterMQTT)
	l.Unregister(gone, p2)
	p3 := &Principal{Tenant: "iot", Device: "d3"}
	l.Register(plain, p3, AdapterMQTT)
	time.Sleep(300 * time.Millisecond)
	if len(gone.revoked()) != 0 || len(plain.revoked()) != 0 {
		t.Fatalf("revoked: %v %v", gone.revoked(), plain.revoked())
	}
	l.Unregister(plain, p3)
}
