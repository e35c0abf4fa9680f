package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// testCA is a certificate authority for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name pkix.Name, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: name,
		NotBefore: notBefore, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

func (ca *testCA) issue(t *testing.T, name pkix.Name, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: name,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func state(certs ...*x509.Certificate) *tls.ConnectionState {
	return &tls.ConnectionState{PeerCertificates: certs}
}

func TestSubjectDN(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, pkix.Name{CommonName: "ca"}, now.Add(-time.Hour), now.Add(time.Hour))
	c := ca.issue(t, pkix.Name{
		Country: []string{"DE"}, Organization: []string{"ACME, Inc."}, OrganizationalUnit: []string{"iot"},
		CommonName: " dev+1 ",
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: "d@acme.example"}},
	}, now.Add(-time.Hour), now.Add(time.Hour))
	got := SubjectDN(c.RawSubject)
	want := `1.2.840.113549.1.9.1=#0c0e644061636d652e6578616d706c65,CN=\ dev\+1\ ,OU=iot,O=ACME\, Inc.,C=DE`
	if got != want {
		t.Fatalf("SubjectDN\n got %s\nwant %s", got, want)
	}
	if SubjectDN(ca.cert.RawSubject) != "CN=ca" {
		t.Fatal(SubjectDN(ca.cert.RawSubject))
	}
	for in, want := range map[string]string{
		"CN=devices, OU=iot ,O=ACME":  "CN=devices,OU=iot,O=acme",
		"cn=Devices,o=Two  Words":     "CN=devices,O=two  words",
		`CN=a\, b,O=x`:                `CN=a\, b,O=x`,
		"CN=devices;O=ACME":           "CN=devices,O=acme",
		"CN=a+OU=b,O=c":               "CN=a+OU=b,O=c",
		"  CN =  spaced value  , O=x": "CN=spaced value,O=x",
	} {
		if got := dnKey(in); got != want {
			t.Errorf("dnKey(%q) = %q, want %q", in, got, want)
		}
	}
}

type certFixture struct {
	*deviceFixture
	ca, other *testCA
	now       time.Time
}

func newCertFixture(t *testing.T) *certFixture {
	f := newDeviceFixture(t)
	now := time.Now()
	ca := newTestCA(t, pkix.Name{CommonName: "devices", OrganizationalUnit: []string{"iot"}, Organization: []string{"ACME"}}, now.Add(-time.Hour), now.Add(24*time.Hour))
	other := newTestCA(t, pkix.Name{CommonName: "other"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{Alias: "acme-iot", TrustedCA: []tenant.TrustedCA{{ID: "ca1", Cert: ca.cert.Raw}}}}
	return &certFixture{deviceFixture: f, ca: ca, other: other, now: now}
}

func x509Cred(authID string, secrets ...registry.Secret) registry.Credential {
	return registry.Credential{Type: registry.TypeX509, AuthID: authID, Secrets: secrets}
}

func TestDeviceCert(t *testing.T) {
	f := newCertFixture(t)
	ctx := context.Background()
	valid := func(cn string) *x509.Certificate {
		return f.ca.issue(t, pkix.Name{CommonName: cn, Organization: []string{"ACME"}}, f.now.Add(-time.Minute), f.now.Add(time.Hour))
	}
	f.dev.put("iot", "dev1", registry.Device{}, x509Cred("CN=dev1,O=ACME", registry.Secret{}))
	p, err := f.a.AuthenticateCert(ctx, AdapterMQTT, state(valid("dev1")))
	if err != nil || p.Device != "dev1" || p.Tenant != "iot" || p.AuthType != registry.TypeX509 {
		t.Fatalf("%+v %v", p, err)
	}
	// The TLS pre-check lets a trust anchor's certificate through.
	if err := f.a.verifyPeer([][]byte{valid("dev1").Raw}, nil); err != nil {
		t.Fatal(err)
	}
	if !f.a.HasDeviceCert(state(valid("dev1"))) {
		t.Fatal("HasDeviceCert")
	}

	// Certificates of an unknown issuer are not device certificates.
	foreign := f.other.issue(t, pkix.Name{CommonName: "dev1", Organization: []string{"ACME"}}, f.now.Add(-time.Minute), f.now.Add(time.Hour))
	if _, err := f.a.AuthenticateCert(ctx, AdapterMQTT, state(foreign)); !errors.Is(err, ErrNoDeviceCert) {
		t.Fatalf("foreign issuer: %v", err)
	}
	if f.a.HasDeviceCert(state(foreign)) {
		t.Fatal("HasDeviceCert of a foreign issuer")
	}
	// The pre-check ignores it without a node client CA ...
	if err := f.a.verifyPeer([][]byte{foreign.Raw}, nil); err != nil {
		t.Fatal(err)
	}
	// ... and fails the handshake with one, as VerifyClientCertIfGiven did.
	userCA := newTestCA(t, pkix.Name{CommonName: "node users"}, f.now.Add(-time.Hour), f.now.Add(time.Hour))
	pool := x509.NewCertPool()
	pool.AddCert(userCA.cert)
	f.a.clientCAs = pool
	if err := f.a.verifyPeer([][]byte{foreign.Raw}, nil); err == nil {
		t.Fatal("foreign certificate passed with a node client CA")
	}
	userTpl := userCA.issue(t, pkix.Name{CommonName: "app", Organization: []string{"iot"}}, f.now.Add(-time.Minute), f.now.Add(time.Hour))
	if err := f.a.verifyPeer([][]byte{userTpl.Raw}, nil); err != nil {
		t.Fatalf("user certificate: %v", err)
	}
	if f.a.UserCert(state(userTpl)) == nil {
		t.Fatal("UserCert")
	}
	if _, err := f.a.AuthenticateCert(ctx, AdapterMQTT, state(userTpl)); !errors.Is(err, ErrNoDeviceCert) {
		t.Fatalf("user certificate as device: %v", err)
	}
	f.a.clientCAs = nil

	// Refusals.
	expired := f.ca.issue(t, pkix.Name{CommonName: "dev1", Organization: []string{"ACME"}}, f.now.Add(-2*time.Hour), f.now.Add(-time.Hour))
	f.dev.put("iot", "dev2", registry.Device{Enabled: ptr(false)}, x509Cred("CN=dev2,O=ACME"))
	f.dev.put("iot", "dev3", registry.Device{}, registry.Credential{Type: registry.TypeX509, AuthID: "CN=dev3,O=ACME", Enabled: ptr(false)})
	past := f.now.Add(-time.Minute)
	f.dev.put("iot", "dev4", registry.Device{}, x509Cred("CN=dev4,O=ACME", registry.Secret{NotAfter: &past}))
	for _, c := range []struct {
		cert   *x509.Certificate
		reason string
	}{
		{expired, ReasonUntrustedCert},
		{valid("dev2"), ReasonDeviceDisabled},
		{valid("dev3"), ReasonCredentialDisabled},
		{valid("dev4"), ReasonCredentialExpired},
		{valid("nobody"), ReasonUnknownAuthID},
	} {
		_, err := f.a.AuthenticateCert(ctx, AdapterAMQP, state(c.cert))
		var de *DeviceError
		if !errors.As(err, &de) || de.Reason != c.reason || !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%s: %v, want %s", c.cert.Subject, err, c.reason)
		}
		if f.failures(AdapterAMQP, c.reason) != 1 {
			t.Errorf("%s not counted", c.reason)
		}
	}
	// A trust anchor outside its validity window.
	nb := f.now.Add(time.Hour)
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{TrustedCA: []tenant.TrustedCA{{ID: "ca1", Cert: f.ca.cert.Raw, NotBefore: &nb}}}}
	if _, err := f.a.AuthenticateCert(ctx, AdapterAMQP, state(valid("dev1"))); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("anchor not yet valid: %v", err)
	}
	// Disabled tenant and adapter.
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{Enabled: ptr(false), TrustedCA: []tenant.TrustedCA{{ID: "ca1", Cert: f.ca.cert.Raw}}}}
	if _, err := f.a.AuthenticateCert(ctx, AdapterAMQP, state(valid("dev1"))); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("disabled tenant: %v", err)
	}
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{Adapters: []tenant.Adapter{{Type: AdapterMQTT, Enabled: ptr(true)}}, TrustedCA: []tenant.TrustedCA{{ID: "ca1", Cert: f.ca.cert.Raw}}}}
	if _, err := f.a.AuthenticateCert(ctx, AdapterAMQP, state(valid("dev1"))); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("disabled adapter: %v", err)
	}
	if _, err := f.a.AuthenticateCert(ctx, AdapterMQTT, state(valid("dev1"))); err != nil {
		t.Fatalf("enabled adapter: %v", err)
	}
}

// TestDeviceCertPublicKeyAnchor: an anchor given as subject-dn and
// public-key (no certificate), the DN typed with blanks.
func TestDeviceCertPublicKeyAnchor(t *testing.T) {
	f := newCertFixture(t)
	pub, err := x509.MarshalPKIXPublicKey(&f.ca.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	nb, na := f.now.Add(-time.Hour), f.now.Add(time.Hour)
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{TrustedCA: []tenant.TrustedCA{{
		ID: "pk", SubjectDN: "CN=devices, OU=iot, O=ACME", PublicKey: pub, Algorithm: "EC", NotBefore: &nb, NotAfter: &na}}}}
	f.dev.put("iot", "dev1", registry.Device{}, x509Cred("CN=dev1"))
	leaf := f.ca.issue(t, pkix.Name{CommonName: "dev1"}, f.now.Add(-time.Minute), f.now.Add(time.Hour))
	p, err := f.a.AuthenticateCert(context.Background(), AdapterMQTT, state(leaf))
	if err != nil || p.Device != "dev1" {
		t.Fatalf("%+v %v", p, err)
	}
	// Same name, another key: refused.
	imposter := newTestCA(t, f.ca.cert.Subject, f.now.Add(-time.Hour), f.now.Add(time.Hour))
	bad := imposter.issue(t, pkix.Name{CommonName: "dev1"}, f.now.Add(-time.Minute), f.now.Add(time.Hour))
	if _, err := f.a.AuthenticateCert(context.Background(), AdapterMQTT, state(bad)); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("imposter: %v", err)
	}
}

func TestDeviceCertAutoProvisioning(t *testing.T) {
	f := newCertFixture(t)
	ctx := context.Background()
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{TrustedCA: []tenant.TrustedCA{{
		ID: "ca1", Cert: f.ca.cert.Raw, AutoProvisioningEnabled: true, AutoProvisioningDeviceIDTemplate: "device-{{subject-cn}}",
		AuthIDTemplate: "{{subject-cn}}.{{subject-o}}"}}}}
	leaf := f.ca.issue(t, pkix.Name{CommonName: "sensor7", Organization: []string{"ACME"}}, f.now.Add(-time.Minute), f.now.Add(time.Hour))
	p, err := f.a.AuthenticateCert(ctx, AdapterMQTT, state(leaf))
	if err != nil || p.Device != "device-sensor7" || p.AuthID != "sensor7.ACME" {
		t.Fatalf("%+v %v", p, err)
	}
	id, err := f.dev.Lookup(ctx, "iot", registry.TypeX509, "sensor7.ACME")
	if err != nil || !id.Device.Status.AutoProvisioned || len(id.Credential.Secrets) != 1 || !id.Credential.Secrets[0].NotAfter.Equal(leaf.NotAfter) {
		t.Fatalf("provisioned %+v %v", id, err)
	}
	// Second connect: found, not provisioned again.
	if p, err := f.a.AuthenticateCert(ctx, AdapterMQTT, state(leaf)); err != nil || p.Device != "device-sensor7" || len(f.dev.provision) != 1 {
		t.Fatalf("%+v %v %v", p, err, f.dev.provision)
	}
	// Without a device-id template, a UUID.
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{TrustedCA: []tenant.TrustedCA{{ID: "ca1", Cert: f.ca.cert.Raw, AutoProvisioningEnabled: true}}}}
	leaf2 := f.ca.issue(t, pkix.Name{CommonName: "sensor8"}, f.now.Add(-time.Minute), f.now.Add(time.Hour))
	if p, err := f.a.AuthenticateCert(ctx, AdapterMQTT, state(leaf2)); err != nil || len(p.Device) != 36 || p.AuthID != "CN=sensor8" {
		t.Fatalf("%+v %v", p, err)
	}
}

// TestDeviceCertSNI: two tenants whose anchors share a subject DN (which
// Hono forbids, but SNI must still pick the tenant it names).
func TestDeviceCertSNI(t *testing.T) {
	f := newCertFixture(t)
	f.ten.tenants["iot2"] = &tenant.Tenant{Name: "iot2", IoT: &tenant.IoT{TrustedCA: []tenant.TrustedCA{{ID: "ca1", Cert: f.ca.cert.Raw}}}}
	f.dev.put("iot", "in-iot", registry.Device{}, x509Cred("CN=d"))
	f.dev.put("iot2", "in-iot2", registry.Device{}, x509Cred("CN=d"))
	leaf := f.ca.issue(t, pkix.Name{CommonName: "d"}, f.now.Add(-time.Minute), f.now.Add(time.Hour))
	for sni, want := range map[string]string{"iot2.mqtt.example.com": "in-iot2", "acme-iot.example.com": "in-iot", "iot": "in-iot"} {
		cs := state(leaf)
		cs.ServerName = sni
		p, err := f.a.AuthenticateCert(context.Background(), AdapterMQTT, cs)
		if err != nil || p.Device != want {
			t.Errorf("SNI %s: %+v %v", sni, p, err)
		}
	}
}

// TestAnchorIndexRefresh: a tenant created or updated after the index was
// built is seen at the next connect.
func TestAnchorIndexRefresh(t *testing.T) {
	f := newCertFixture(t)
	ca2 := newTestCA(t, pkix.Name{CommonName: "second"}, f.now.Add(-time.Hour), f.now.Add(time.Hour))
	leaf := ca2.issue(t, pkix.Name{CommonName: "d"}, f.now.Add(-time.Minute), f.now.Add(time.Hour))
	if f.a.HasDeviceCert(state(leaf)) {
		t.Fatal("unknown anchor")
	}
	f.ten.tenants["new"] = &tenant.Tenant{Name: "new", IoT: &tenant.IoT{TrustedCA: []tenant.TrustedCA{{Cert: ca2.cert.Raw}}}}
	if !f.a.HasDeviceCert(state(leaf)) {
		t.Fatal("new tenant's anchor not seen")
	}
	n := f.a.anchors.refresh
	for range 3 {
		f.a.HasDeviceCert(state(leaf))
	}
	if f.a.anchors.refresh != n {
		t.Fatal("index rebuilt without a change")
	}
	f.ten.tenants["new"] = &tenant.Tenant{Name: "new", IoT: &tenant.IoT{}}
	if f.a.HasDeviceCert(state(leaf)) {
		t.Fatal("removed anchor still seen")
	}
}
