package auth

// Client certificates.
//
// Two kinds of client certificate reach the TLS listeners: users'
// (issued by the node's tls.clientCA; AMQP SASL EXTERNAL maps the common
// name to a user) and devices' (issued by a trust anchor of an
// IoT-enabled tenant, Hono's "trusted-ca"; the subject DN is the auth-id
// of an x509-cert credential). Trust anchors change at run time through
// the tenant API, so they cannot be a fixed tls.Config.ClientCAs pool:
// with devices, ConfigureTLS asks for a certificate without having the
// TLS stack verify it, and VerifyPeerCertificate lets the handshake go on
// only for a chain that the node's CA verifies or whose issuer is a trust
// anchor of some tenant (anything else fails the handshake, as before).
// The protocol layer then authenticates it (UserCert, AuthenticateCert)
// and refuses with the protocol's own code (MQTT 0x86, SASL auth), so an
// expired certificate, a disabled device or an unknown auth-id is counted
// and answered like a wrong password.
//
// The tenant of a device certificate is found, as Hono does, from TLS SNI
// (a server name whose first label is the tenant's name or alias), else
// from the issuer: the subject DN of a trust anchor (Hono requires trust
// anchors of different tenants to have different subject DNs).

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// ErrNoDeviceCert is returned by AuthenticateCert when the connection
// has no client certificate issued by a tenant's trust anchor: the caller
// goes on with other credentials.
var ErrNoDeviceCert = errors.New("no device client certificate")

// TenantLister is implemented by the tenant store (*tenant.Store); the
// trust-anchor index needs it.
type TenantLister interface {
	Tenants() []*tenant.Tenant
}

// ConfigureTLS sets up a listener's TLS configuration for client
// certificates; clientCAs is the node's tls.clientCA (users' certificates,
// may be nil). Without a device source it is that CA alone, as before
// (VerifyClientCertIfGiven). With devices, a certificate is requested and
// checked by VerifyPeerCertificate (see the file comment); no CA names are
// sent (an empty list lets clients send whatever certificate they have).
// Call it before the listeners serve.
func (a *Authenticator) ConfigureTLS(conf *tls.Config, clientCAs *x509.CertPool) {
	a.clientCAs = clientCAs
	if a.devices == nil {
		if a.clientCAs != nil {
			conf.ClientCAs = a.clientCAs
			conf.ClientAuth = tls.VerifyClientCertIfGiven
		}
		return
	}
	conf.ClientCAs = nil
	conf.ClientAuth = tls.RequestClientCert
	conf.VerifyPeerCertificate = a.verifyPeer
}

// verifyPeer is the handshake's check of a client certificate (see
// ConfigureTLS): a chain the node's CA verifies, or whose issuer is a
// tenant's trust anchor, goes on; another certificate fails the handshake
// if the node has a client CA (as VerifyClientCertIfGiven did) and is
// ignored otherwise (it authenticates nothing).
func (a *Authenticator) verifyPeer(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 {
		return nil
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return fmt.Errorf("auth: client certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if a.userChain(certs) != nil {
		return nil
	}
	if len(a.anchors.lookup(a.users, issuerOf(certs))) > 0 {
		return nil
	}
	if a.clientCAs != nil {
		return errors.New("auth: client certificate not issued by the node's client CA or a tenant's trust anchor")
	}
	return nil
}

// UserCert returns the leaf of a connection's client certificate if the
// node's client CA verifies it (a user's certificate, SASL EXTERNAL),
// else nil.
func (a *Authenticator) UserCert(cs *tls.ConnectionState) *x509.Certificate {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return nil
	}
	if len(cs.VerifiedChains) > 0 {
		return cs.VerifiedChains[0][0]
	}
	if a == nil {
		return nil
	}
	if c := a.userChain(cs.PeerCertificates); c != nil {
		return c
	}
	return nil
}

// userChain verifies certs against the node's client CA as the TLS stack
// does for VerifyClientCertIfGiven.
func (a *Authenticator) userChain(certs []*x509.Certificate) *x509.Certificate {
	if a.clientCAs == nil || len(certs) == 0 {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots: a.clientCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil
	}
	return certs[0]
}

// HasDeviceCert reports whether the connection presented a client
// certificate whose issuer is a tenant's trust anchor (not whether it is
// valid: AuthenticateCert decides).
func (a *Authenticator) HasDeviceCert(cs *tls.ConnectionState) bool {
	if a == nil || a.devices == nil || cs == nil || len(cs.PeerCertificates) == 0 {
		return false
	}
	if a.UserCert(cs) != nil {
		return false
	}
	return len(a.anchors.lookup(a.users, issuerOf(cs.PeerCertificates))) > 0
}

// issuerOf returns the certificate that names the trust anchor: the last
// one the client sent (the leaf, or the top of the intermediates).
func issuerOf(certs []*x509.Certificate) *x509.Certificate { return certs[len(certs)-1] }

// AuthenticateCert authenticates a device by its TLS client certificate
// for a protocol adapter: the chain must lead to a trust anchor of the
// tenant (found by SNI or by issuer), valid now; the auth-id is the
// subject DN (RFC 2253) or the anchor's auth-id-template applied to it,
// and must be an x509-cert credential of an enabled device, or, if the
// anchor auto-provisions, a new device is registered. ErrNoDeviceCert if
// the connection has no certificate of a trust anchor's issuer; other
// errors as AuthenticateFor.
func (a *Authenticator) AuthenticateCert(ctx context.Context, adapter string, cs *tls.ConnectionState) (*Principal, error) {
	if a.devices == nil || cs == nil || len(cs.PeerCertificates) == 0 || a.UserCert(cs) != nil {
		return nil, ErrNoDeviceCert
	}
	certs := cs.PeerCertificates
	leaf := certs[0]
	refs := a.anchors.lookup(a.users, issuerOf(certs))
	if len(refs) == 0 {
		return nil, ErrNoDeviceCert
	}
	// SNI names the tenant if its first label is a tenant (or alias) that
	// has an anchor of this issuer; otherwise the issuer alone decides.
	if sni := sniTenant(cs.ServerName, refs); sni != "" {
		var only []anchorRef
		for _, r := range refs {
			if r.tenant.Name == sni {
				only = append(only, r)
			}
		}
		refs = only
	}
	t := refs[0].tenant
	dn := SubjectDN(leaf.RawSubject)
	if r := tenantOpen(t, adapter); r != "" {
		return nil, a.refuse(adapter, r, t, dn, nil)
	}
	now := a.now()
	ca, err := verifyDeviceChain(certs, refs, t.Name, now)
	if err != nil {
		return nil, a.refuse(adapter, ReasonUntrustedCert, t, dn, err)
	}
	authID := dn
	if ca.AuthIDTemplate != "" {
		authID = registry.ApplyTemplate(ca.AuthIDTemplate, dn, leaf)
	}
	id, err := a.devices.Lookup(ctx, t.Name, registry.TypeX509, authID)
	if errors.Is(err, registry.ErrNotFound) && ca.AuthIDTemplate == "" {
		// The registry takes the auth-id of an uploaded certificate in
		// Go's canonical attribute order, which differs from the
		// certificate's own order in unusual subjects.
		if alt := registry.SubjectDN(leaf); alt != authID {
			if id2, err2 := a.devices.Lookup(ctx, t.Name, registry.TypeX509, alt); err2 == nil {
				id, err, authID = id2, nil, alt
			}
		}
	}
	if errors.Is(err, registry.ErrNotFound) && ca.AutoProvisioningEnabled {
		id, err = a.autoProvision(ctx, t.Name, ca, leaf, dn, authID)
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return nil, a.refuse(adapter, ReasonRegistryError, t, authID, err)
		}
	}
	if errors.Is(err, registry.ErrNotFound) {
		return nil, a.refuse(adapter, ReasonUnknownAuthID, t, authID, nil)
	}
	if err != nil {
		return nil, a.refuse(adapter, ReasonRegistryError, t, authID, err)
	}
	switch {
	case id.Device != nil && !id.Device.IsEnabled():
		return nil, a.refuse(adapter, ReasonDeviceDisabled, t, authID, nil)
	case id.Credential == nil || !id.Credential.IsEnabled():
		return nil, a.refuse(adapter, ReasonCredentialDisabled, t, authID, nil)
	case !x509SecretValid(id.Credential, now):
		return nil, a.refuse(adapter, ReasonCredentialExpired, t, authID, nil)
	}
	a.m.deviceOK.WithLabelValues(adapter, "x509-cert").Inc()
	return &Principal{Tenant: t.Name, Device: id.DeviceID, AuthID: authID, AuthType: registry.TypeX509}, nil
}

// x509SecretValid: an x509-cert credential's secrets carry the
// certificate's validity window; one enabled secret valid now is needed
// (none at all: the certificate's own validity, checked with the chain,
// is all there is).
func x509SecretValid(c *registry.Credential, now time.Time) bool {
	if len(c.Secrets) == 0 {
		return true
	}
	for i := range c.Secrets {
		if s := &c.Secrets[i]; s.IsEnabled() && s.ValidAt(now) {
			return true
		}
	}
	return false
}

// autoProvision registers the device of a certificate on its first
// connection (Hono's auto-provisioning-enabled trust anchor). The device
// id is the anchor's auto-provisioning-device-id-template applied to the
// certificate, else a random UUID (Hono: "a random unique device
// identifier"). The credential's secret holds the certificate's validity.
func (a *Authenticator) autoProvision(ctx context.Context, tenantName string, ca *tenant.TrustedCA, leaf *x509.Certificate, dn, authID string) (*registry.Identity, error) {
	devID := registry.NewUUID()
	if ca.AutoProvisioningDeviceIDTemplate != "" {
		devID = registry.ApplyTemplate(ca.AutoProvisioningDeviceIDTemplate, dn, leaf)
	}
	nb, na := leaf.NotBefore.UTC(), leaf.NotAfter.UTC()
	cred := registry.Credential{
		Type: registry.TypeX509, AuthID: authID,
		Secrets: []registry.Secret{{NotBefore: &nb, NotAfter: &na}},
	}
	id, err := a.devices.AutoProvision(ctx, tenantName, devID, cred, ca.AutoProvisionAsGateway)
	if errors.Is(err, registry.ErrExists) {
		// Another connection of the same certificate provisioned it.
		return a.devices.Lookup(ctx, tenantName, registry.TypeX509, authID)
	}
	if err == nil {
		a.log.Info("device auto-provisioned", "tenant", tenantName, "device_id", id.DeviceID, "auth_id", authID, "gateway", ca.AutoProvisionAsGateway)
	}
	return id, err
}

// sniTenant returns the tenant among refs that the TLS server name's
// first label names (tenant name or Hono alias), or "".
func sniTenant(serverName string, refs []anchorRef) string {
	if serverName == "" {
		return ""
	}
	label, _, _ := strings.Cut(strings.ToLower(serverName), ".")
	for _, r := range refs {
		if r.tenant.Name == label || r.tenant.IoT.Alias != "" && strings.EqualFold(r.tenant.IoT.Alias, label) {
			return r.tenant.Name
		}
	}
	return ""
}

// verifyDeviceChain verifies certs (leaf first) against the anchors of
// one tenant, each within its validity window; it returns the anchor.
func verifyDeviceChain(certs []*x509.Certificate, refs []anchorRef, tenantName string, now time.Time) (*tenant.TrustedCA, error) {
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	top := issuerOf(certs)
	var errs []error
	for _, r := range refs {
		if r.tenant.Name != tenantName {
			continue
		}
		if r.ca.NotBefore != nil && now.Before(*r.ca.NotBefore) || r.ca.NotAfter != nil && now.After(*r.ca.NotAfter) {
			errs = append(errs, fmt.Errorf("trust anchor %q is outside its validity period", r.ca.ID))
			continue
		}
		root := r.root
		if root == nil {
			continue
		}
		if r.synthetic {
			// A public-key anchor: a stand-in certificate with the
			// anchor's key under the issuer name the chain asks for.
			cp := *root
			cp.RawSubject = top.RawIssuer
			root = &cp
		}
		roots := x509.NewCertPool()
		roots.AddCert(root)
		_, err := certs[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, CurrentTime: now,
			// Java's PKIX validation (Hono) does not require the
			// client-authentication extended key usage.
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err == nil {
			return r.ca, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no usable trust anchor"))
	}
	return nil, errors.Join(errs...)
}

// ---- the trust-anchor index

// anchorRef is one trust anchor of one tenant.
type anchorRef struct {
	tenant    *tenant.Tenant
	ca        *tenant.TrustedCA
	root      *x509.Certificate // parsed cert, or a stand-in for a public-key anchor
	synthetic bool
}

// anchorIndex maps issuer names to the trust anchors of every
// IoT-enabled tenant. It is rebuilt from the tenant store when a lookup
// finds a tenant it was built from replaced (tenants are immutable values
// in the store: an update replaces the pointer) or misses while the
// store's tenants differ from those it was built from.
type anchorIndex struct {
	mu      sync.Mutex
	from    map[string]*tenant.Tenant // the tenants the index was built from
	byName  map[string][]anchorRef    // key: dnKey of the anchor's subject
	parsed  map[*tenant.TrustedCA]anchorRef
	refresh int // rebuilds, for tests
}

// lookup returns the anchors whose subject is the issuer of c.
func (x *anchorIndex) lookup(users Users, c *x509.Certificate) []anchorRef {
	tl, ok := users.(TenantLister)
	if !ok {
		return nil
	}
	keys := []string{dnKey(SubjectDN(c.RawIssuer))}
	if alt := dnKey(c.Issuer.String()); alt != keys[0] {
		keys = append(keys, alt)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	find := func() []anchorRef {
		var out []anchorRef
		for _, k := range keys {
			out = append(out, x.byName[k]...)
		}
		return out
	}
	refs := find()
	stale := false
	for _, r := range refs {
		if cur, ok := users.Tenant(r.tenant.Name); !ok || cur != r.tenant {
			stale = true
		}
	}
	if stale || len(refs) == 0 && x.changed(tl) {
		x.build(tl)
		refs = find()
	}
	return refs
}

// changed reports whether the store's tenants differ from those the index
// was built from.
func (x *anchorIndex) changed(tl TenantLister) bool {
	ts := tl.Tenants()
	if x.from == nil || len(ts) != len(x.from) {
		return true
	}
	for _, t := range ts {
		if x.from[t.Name] != t {
			return true
		}
	}
	return false
}

func (x *anchorIndex) build(tl TenantLister) {
	x.refresh++
	from := map[string]*tenant.Tenant{}
	byName := map[string][]anchorRef{}
	parsed := map[*tenant.TrustedCA]anchorRef{}
	for _, t := range tl.Tenants() {
		from[t.Name] = t
		if t.IoT == nil {
			continue
		}
		for i := range t.IoT.TrustedCA {
			ca := &t.IoT.TrustedCA[i]
			r, ok := x.parsed[ca]
			if !ok {
				r = parseAnchor(t, ca)
			}
			r.tenant = t
			parsed[ca] = r
			var name string
			switch {
			case r.root != nil && !r.synthetic:
				name = SubjectDN(r.root.RawSubject)
			default:
				name = ca.SubjectDN
			}
			if name == "" {
				continue
			}
			byName[dnKey(name)] = append(byName[dnKey(name)], r)
		}
	}
	x.from, x.byName, x.parsed = from, byName, parsed
}

// parseAnchor prepares a trust anchor: its certificate, or for an anchor
// given as subject-dn and public-key, a stand-in certificate carrying the
// key (only roots' keys and validity matter to chain verification).
func parseAnchor(t *tenant.Tenant, ca *tenant.TrustedCA) anchorRef {
	r := anchorRef{tenant: t, ca: ca}
	if len(ca.Cert) > 0 {
		if c, err := x509.ParseCertificate(ca.Cert); err == nil {
			r.root = c
			return r
		}
	}
	if len(ca.PublicKey) == 0 {
		return r
	}
	pub, err := x509.ParsePKIXPublicKey(ca.PublicKey)
	if err != nil {
		return r
	}
	c := &x509.Certificate{
		Raw:                   append([]byte("anchor:"+t.Name+":"+ca.ID+":"), ca.PublicKey...),
		PublicKey:             pub,
		Version:               3,
		BasicConstraintsValid: true,
		IsCA:                  true,
		NotBefore:             time.Unix(0, 0),
		NotAfter:              time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
	}
	c.PublicKeyAlgorithm = publicKeyAlgorithm(pub)
	if ca.NotBefore != nil {
		c.NotBefore = *ca.NotBefore
	}
	if ca.NotAfter != nil {
		c.NotAfter = *ca.NotAfter
	}
	r.root, r.synthetic = c, true
	return r
}

// ---- distinguished names

// SubjectDN formats a DER-encoded name (a certificate's RawSubject or
// RawIssuer) in RFC 2253 form as Java's X500Principal.getName() does,
// which is what Hono stores as an x509-cert auth-id: RDNs last to first,
// the keywords CN, C, L, ST, O, OU, STREET, DC and UID, other attributes
// as OID=#hex of their DER value.
func SubjectDN(raw []byte) string {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(raw, &seq); err != nil || len(rest) > 0 {
		return ""
	}
	var raws rawRDNSequence // the same, with each value's DER as sent
	if _, err := asn1.Unmarshal(raw, &raws); err != nil || len(raws) != len(seq) {
		return ""
	}
	var b strings.Builder
	for i := len(seq) - 1; i >= 0; i-- {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		for j, atv := range seq[i] {
			if j > 0 {
				b.WriteByte('+')
			}
			kw, ok := dnKeywords[atv.Type.String()]
			s, isStr := atv.Value.(string)
			if ok && isStr {
				b.WriteString(kw)
				b.WriteByte('=')
				b.WriteString(escapeDN(s))
				continue
			}
			b.WriteString(atv.Type.String())
			b.WriteString("=#")
			if j < len(raws[i]) {
				b.WriteString(hex.EncodeToString(raws[i][j].Value.FullBytes))
			}
		}
	}
	return b.String()
}

// rawRDNSequence is pkix.RDNSequence with raw values (a type name ending
// in SET makes encoding/asn1 read a SET OF).
type (
	rawRDNSequence []rawRDNSET
	rawRDNSET      []rawATV
	rawATV         struct {
		Type  asn1.ObjectIdentifier
		Value asn1.RawValue
	}
)

func publicKeyAlgorithm(pub any) x509.PublicKeyAlgorithm {
	switch pub.(type) {
	case *rsa.PublicKey:
		return x509.RSA
	case *ecdsa.PublicKey:
		return x509.ECDSA
	case ed25519.PublicKey:
		return x509.Ed25519
	}
	return x509.UnknownPublicKeyAlgorithm
}

var dnKeywords = map[string]string{
	"2.5.4.3":                    "CN",
	"2.5.4.6":                    "C",
	"2.5.4.7":                    "L",
	"2.5.4.8":                    "ST",
	"2.5.4.10":                   "O",
	"2.5.4.11":                   "OU",
	"2.5.4.9":                    "STREET",
	"0.9.2342.19200300.100.1.25": "DC",
	"0.9.2342.19200300.100.1.1":  "UID",
}

// escapeDN escapes an attribute value (RFC 2253 section 2.4).
func escapeDN(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case strings.ContainsRune(",+\"\\<>;", r),
			i == 0 && (r == ' ' || r == '#'),
			i == len(s)-utf8.RuneLen(r) && r == ' ':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// dnKey normalizes an RFC 2253 string for comparison: attribute types
// upper case, values lower case, no blanks around separators (a DN
// typed into a tenant's subject-dn, "CN=devices, O=ACME", matches the
// certificate's "CN=devices,O=ACME").
func dnKey(dn string) string {
	var b strings.Builder
	inValue, esc, started := false, false, false
	pending := 0 // blanks inside a value, written if more of it follows
	put := func(r rune) {
		b.WriteString(strings.Repeat(" ", pending))
		pending = 0
		if inValue {
			r = unicode.ToLower(r)
		} else {
			r = unicode.ToUpper(r)
		}
		b.WriteRune(r)
	}
	for _, r := range dn {
		switch {
		case esc:
			esc = false
			put(r)
		case r == '\\':
			esc, started = true, true
			put(r)
		case (r == ',' || r == '+' || r == ';') && inValue:
			inValue, pending, started = false, 0, false
			if r == ';' {
				r = ','
			}
			b.WriteRune(r)
		case r == '=' && !inValue:
			inValue, pending, started = true, 0, false
			b.WriteRune(r)
		case r == ' ':
			if inValue && started {
				pending++
			}
		default:
			started = true
			put(r)
		}
	}
	return b.String()
}
