package admin

// Hono tenant validation and the X.509 side of the /v1 API: trust anchors
// given as certificates, device certificates (x509-cert credentials) and
// raw public keys (rpk).

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

var aliasRE = regexp.MustCompile(`^[a-z0-9-]+$`)

// templatePlaceholders are those of Hono's IdentityTemplate.
var templatePlaceholders = []string{"{{subject-dn}}", "{{subject-cn}}", "{{subject-ou}}", "{{subject-o}}"}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{tenant.ErrInvalid}, args...)...)
}

// checkHonoTenant validates a Hono tenant body (Hono's Tenant.isValid and
// setters, and its registries' conflict rules) and completes it: trust
// anchors given as certificates get their derived fields, anchors without
// an id get one. old is the tenant's current settings on update.
func (s *Server) checkHonoTenant(id string, iot *tenant.IoT, old *tenant.IoT) error {
	if err := tenant.ValidateName(id); err != nil {
		return invalidf("invalid tenant id %q: throng tenant ids are 1 to 63 lower-case letters, digits, '-' and '_', starting with a letter or digit", id)
	}
	if iot.Alias != "" && !aliasRE.MatchString(iot.Alias) {
		return invalidf("alias must be a valid LDH label ([a-z0-9-]+)")
	}
	if iot.Adapters != nil && len(iot.Adapters) == 0 {
		return invalidf("at least one adapter must be configured when adapters is given")
	}
	types := map[string]bool{}
	for i, a := range iot.Adapters {
		if a.Type == "" {
			return invalidf("adapters[%d]: type is required", i)
		}
		if types[a.Type] {
			return invalidf("each adapter must have a unique type (%q given twice)", a.Type)
		}
		types[a.Type] = true
	}
	if iot.MinimumMessageSize < 0 {
		return invalidf("minimum message size must be >= 0")
	}
	if l := iot.RegistrationLimits; l != nil {
		if (l.MaxDevices != nil && *l.MaxDevices < -1) || (l.MaxCredentialsPerDevice != nil && *l.MaxCredentialsPerDevice < -1) {
			return invalidf("registration-limits must be -1 (unlimited) or more")
		}
	}
	if err := checkResourceLimits(iot.ResourceLimits); err != nil {
		return err
	}
	if len(iot.Tracing) > 0 {
		var tr struct {
			SamplingMode          string            `json:"sampling-mode"`
			SamplingModePerAuthID map[string]string `json:"sampling-mode-per-auth-id"`
		}
		if err := strictJSON(string(iot.Tracing), &tr); err != nil {
			return invalidf("tracing: %v", err)
		}
		modes := map[string]bool{"": true, "default": true, "all": true, "none": true}
		if !modes[tr.SamplingMode] {
			return invalidf("tracing: sampling-mode %q (want default, all or none)", tr.SamplingMode)
		}
		for k, m := range tr.SamplingModePerAuthID {
			if !modes[m] || m == "" {
				return invalidf("tracing: sampling mode %q of %q (want default, all or none)", m, k)
			}
		}
	}
	ids := map[string]bool{}
	for i := range iot.TrustedCA {
		ca := &iot.TrustedCA[i]
		if err := completeTrustAnchor(ca, old); err != nil {
			return invalidf("trusted-ca[%d]: %v", i, err)
		}
		if ca.ID == "" {
			ca.ID = registry.NewUUID()
		}
		if ids[ca.ID] {
			return invalidf("trusted anchor IDs must be unique within each tenant (%q given twice)", ca.ID)
		}
		ids[ca.ID] = true
	}
	// Across tenants: a unique alias, and a trust anchor's subject DN
	// names one tenant (unless both are in the same trust-anchor-group),
	// so that a device certificate's issuer finds its tenant.
	for _, other := range s.cfg.Store.Tenants() {
		if other.Name == id || other.IoT == nil {
			continue
		}
		if iot.Alias != "" && other.IoT.Alias == iot.Alias {
			return fmt.Errorf("%w: tenant alias %q already in use", tenant.ErrExists, iot.Alias)
		}
		for _, oca := range other.IoT.TrustedCA {
			for _, ca := range iot.TrustedCA {
				if oca.SubjectDN == ca.SubjectDN && (iot.TrustAnchorGroup == "" || iot.TrustAnchorGroup != other.IoT.TrustAnchorGroup) {
					return fmt.Errorf("%w: Root Certificate Authority %q is already used by another tenant", tenant.ErrExists, ca.SubjectDN)
				}
			}
		}
	}
	return nil
}

// checkResourceLimits checks Hono's ResourceLimit object (kept as JSON).
func checkResourceLimits(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var rl struct {
		MaxConnections        *int64          `json:"max-connections"`
		MaxTTL                *int64          `json:"max-ttl"`
		MaxTTLTelemetryQoS0   *int64          `json:"max-ttl-telemetry-qos0"`
		MaxTTLTelemetryQoS1   *int64          `json:"max-ttl-telemetry-qos1"`
		MaxTTLCommandResponse *int64          `json:"max-ttl-command-response"`
		DataVolume            json.RawMessage `json:"data-volume"`
		ConnectionDuration    json.RawMessage `json:"connection-duration"`
		Ext                   json.RawMessage `json:"ext"`
	}
	if err := strictJSON(string(raw), &rl); err != nil {
		return invalidf("resource-limits: %v", err)
	}
	for _, v := range []*int64{rl.MaxConnections, rl.MaxTTL, rl.MaxTTLTelemetryQoS0, rl.MaxTTLTelemetryQoS1, rl.MaxTTLCommandResponse} {
		if v != nil && *v < -1 {
			return invalidf("resource-limits: values must be -1 (unlimited) or more")
		}
	}
	for name, p := range map[string]json.RawMessage{"data-volume": rl.DataVolume, "connection-duration": rl.ConnectionDuration} {
		if len(p) == 0 || string(p) == "null" {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(p, &m); err != nil {
			return invalidf("resource-limits: %s must be an object", name)
		}
		if _, ok := m["effective-since"]; !ok {
			return invalidf("resource-limits: %s needs effective-since", name)
		}
	}
	return nil
}

// completeTrustAnchor derives a trust anchor's subject-dn, public-key,
// algorithm, not-before and not-after from its certificate, as Hono
// does, or checks that they are all given. The certificate is kept (the
// device authentication builds its pool from it) but not returned. An
// anchor updated without its certificate keeps the stored one when it
// names the same key.
func completeTrustAnchor(ca *tenant.TrustedCA, old *tenant.IoT) error {
	if ca.AuthIDTemplate != "" && !hasPlaceholder(ca.AuthIDTemplate) {
		return fmt.Errorf("auth-id-template must contain one of %s", strings.Join(templatePlaceholders, ", "))
	}
	if ca.AutoProvisioningDeviceIDTemplate != "" && !hasPlaceholder(ca.AutoProvisioningDeviceIDTemplate) {
		return fmt.Errorf("auto-provisioning-device-id-template must contain one of %s", strings.Join(templatePlaceholders, ", "))
	}
	if len(ca.Cert) > 0 {
		cert, err := x509.ParseCertificate(ca.Cert)
		if err != nil {
			return fmt.Errorf("cert is not a DER X.509 certificate: %v", err)
		}
		alg, err := registry.KeyAlgorithm(cert.PublicKey)
		if err != nil {
			return err
		}
		nb, na := cert.NotBefore.UTC(), cert.NotAfter.UTC()
		ca.SubjectDN = registry.SubjectDN(cert)
		ca.PublicKey = cert.RawSubjectPublicKeyInfo
		ca.Algorithm = alg
		ca.NotBefore, ca.NotAfter = &nb, &na
		return nil
	}
	if ca.SubjectDN == "" || len(ca.PublicKey) == 0 || ca.NotBefore == nil || ca.NotAfter == nil {
		return errors.New("either cert, or subject-dn, public-key, not-before and not-after are required")
	}
	if ca.NotAfter.Before(*ca.NotBefore) {
		return errors.New("not-after is before not-before")
	}
	// The canonical form, as device certificates' issuers are matched in.
	dn, err := registry.NormalizeSubjectDN(ca.SubjectDN)
	if err != nil {
		return fmt.Errorf("subject-dn %q is not an RFC 2253 distinguished name", ca.SubjectDN)
	}
	ca.SubjectDN = dn
	pub, err := x509.ParsePKIXPublicKey(ca.PublicKey)
	if err != nil {
		return fmt.Errorf("public-key is not a DER SubjectPublicKeyInfo: %v", err)
	}
	alg, err := registry.KeyAlgorithm(pub)
	if err != nil {
		return err
	}
	want := ca.Algorithm
	if want == "" {
		want = "RSA" // Hono's default
	}
	if want != alg {
		return fmt.Errorf("algorithm %q does not match the %s public key", ca.Algorithm, alg)
	}
	ca.Algorithm = alg
	if old != nil {
		for _, o := range old.TrustedCA {
			if len(o.Cert) > 0 && o.SubjectDN == ca.SubjectDN && string(o.PublicKey) == string(ca.PublicKey) {
				ca.Cert = o.Cert
				break
			}
		}
	}
	return nil
}

func hasPlaceholder(tmpl string) bool {
	for _, p := range templatePlaceholders {
		if strings.Contains(tmpl, p) {
			return true
		}
	}
	return false
}

// issuerDN is a certificate's issuer in the canonical form of
// registry.SubjectDN (that of trust anchors' subject-dn).
func issuerDN(cert *x509.Certificate) string {
	s := cert.Issuer.ToRDNSequence().String()
	if n, err := registry.NormalizeSubjectDN(s); err == nil {
		return n
	}
	return s
}

// fromClientCert fills an x509-cert credential from the device's
// certificate, as Hono does: the auth-id is the subject DN, or the tenant
// trust anchor's auth-id-template applied to it, and the one secret holds
// the certificate's validity. The certificate itself is not stored.
func fromClientCert(t *tenant.Tenant, c *registry.Credential, der []byte) error {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("cert is not a DER X.509 certificate: %v", err)
	}
	dn := registry.SubjectDN(cert)
	c.AuthID = dn
	if t != nil && t.IoT != nil {
		issuer := issuerDN(cert)
		for _, ca := range t.IoT.TrustedCA {
			if ca.SubjectDN == issuer && ca.AuthIDTemplate != "" {
				c.AuthID = registry.ApplyTemplate(ca.AuthIDTemplate, dn, cert)
				break
			}
		}
	}
	nb, na := cert.NotBefore.UTC(), cert.NotAfter.UTC()
	switch len(c.Secrets) {
	case 0:
		c.Secrets = []registry.Secret{{}}
	case 1:
	default:
		return errors.New("x509-cert credentials have exactly one secret")
	}
	c.Secrets[0].NotBefore, c.Secrets[0].NotAfter = &nb, &na
	return nil
}

// rpkSecret checks a raw public key secret; given a certificate, the key,
// algorithm and validity are taken from it and the certificate dropped.
func rpkSecret(sec *registry.Secret) error {
	if len(sec.Cert) > 0 {
		cert, err := x509.ParseCertificate(sec.Cert)
		if err != nil {
			return fmt.Errorf("cert is not a DER X.509 certificate: %v", err)
		}
		alg, err := registry.KeyAlgorithm(cert.PublicKey)
		if err != nil {
			return err
		}
		sec.Key, sec.Algorithm, sec.Cert = cert.RawSubjectPublicKeyInfo, alg, nil
		if sec.NotBefore == nil {
			nb := cert.NotBefore.UTC()
			sec.NotBefore = &nb
		}
		if sec.NotAfter == nil {
			na := cert.NotAfter.UTC()
			sec.NotAfter = &na
		}
		return nil
	}
	if len(sec.Key) == 0 {
		return nil // an id-only secret: the stored key is kept
	}
	pub, err := x509.ParsePKIXPublicKey(sec.Key)
	if err != nil {
		return fmt.Errorf("key is not a DER SubjectPublicKeyInfo: %v", err)
	}
	alg, err := registry.KeyAlgorithm(pub)
	if err != nil {
		return err
	}
	if sec.Algorithm == "" {
		sec.Algorithm = "RSA" // Hono's default
	}
	if sec.Algorithm != alg {
		return fmt.Errorf("algorithm %q does not match the %s key", sec.Algorithm, alg)
	}
	return nil
}
