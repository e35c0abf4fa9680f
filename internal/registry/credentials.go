package registry

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/tenant"
)

// Password hashing (Hono's rules).
const (
	BcryptCost    = 10 // cost of the hashes made from pwd-plain
	MaxBcryptCost = 10 // highest cost accepted in a given bcrypt pwd-hash (Hono's maxBcryptCostFactor default)
)

// Hash functions of hashed-password secrets.
const (
	HashBcrypt = "bcrypt"
	HashSHA256 = "sha-256"
	HashSHA512 = "sha-512"
)

// claimGrace is how old an auth-id index key must be before another
// device may take it over when the device it names does not hold the
// auth-id (a key left by a crash). A younger key may belong to a
// SetCredentials still in progress (it writes the index key first).
var claimGrace = 30 * time.Second

// Credentials returns a device's credentials set and its version (the
// device's credentials resource version; "0" for a set never written).
// Secrets come without pwd-hash, salt, hash-function, pwd-plain and key
// (Hono returns secrets' metadata only).
func (s *Store) Credentials(ctx context.Context, tenantName, id string) ([]Credential, string, error) {
	if _, err := s.tenantOK(tenantName); err != nil {
		return nil, "", err
	}
	sd, _, err := s.getDevice(ctx, tenantName, id)
	if err != nil {
		return nil, "", err
	}
	cs, rev, err := s.getCreds(ctx, tenantName, id, sd.Inc)
	if err != nil {
		return nil, "", err
	}
	out := make([]Credential, 0, len(cs))
	for _, c := range cs {
		c.Secrets = append([]Secret(nil), c.Secrets...)
		for i := range c.Secrets {
			sec := &c.Secrets[i]
			sec.PwdHash, sec.Salt, sec.PwdPlain, sec.Key, sec.Cert, sec.HashFunction = "", nil, "", nil, nil, ""
		}
		c.Cert = nil
		out = append(out, c)
	}
	return out, version(rev), nil
}

// getCreds reads a device's stored credentials; a set of another
// incarnation of the device id counts as none (its revision is returned
// all the same, for a conditional overwrite).
func (s *Store) getCreds(ctx context.Context, tenantName, id, inc string) ([]Credential, uint64, error) {
	e, err := s.creds.Get(ctx, deviceKey(tenantName, id))
	return decodeCreds(e, err, tenantName, id, inc)
}

func decodeCreds(e jetstream.KeyValueEntry, err error, tenantName, id, inc string) ([]Credential, uint64, error) {
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var sc storedCredentials
	if err := json.Unmarshal(e.Value(), &sc); err != nil {
		return nil, 0, fmt.Errorf("registry: credentials of %q in %q: %w", id, tenantName, err)
	}
	if sc.Inc != inc {
		return nil, e.Revision(), nil
	}
	return sc.Credentials, e.Revision(), nil
}

// SetCredentials replaces a device's credentials set, Hono's way: a
// secret given with only an "id" keeps the stored secret of that id, a
// secret without an id is new (an id is generated), stored secrets not
// named are removed; pwd-plain is hashed with bcrypt. auth-ids are unique
// per tenant and type (ErrExists when another device holds one).
//
// A secret with an id and new material (pwd-hash, pwd-plain, key)
// replaces the stored material; with an id and no material it keeps the
// stored material, and, when it carries none of enabled, not-before,
// not-after and comment either, the stored metadata too. An id not stored
// for that credential (type and auth-id) is ErrInvalid.
//
// Order of writes: the auth-id index keys of the new set are created
// first (kv.Create: of concurrent claimants one wins), then the set
// (conditional on the revision read), then index keys of auth-ids no
// longer in the set are removed. A crash leaves at most index keys whose
// device does not hold their auth-id: Lookup ignores them, and a later
// claim takes them over once they are claimGrace old.
func (s *Store) SetCredentials(ctx context.Context, tenantName, id string, cs []Credential, ifMatch string) (string, error) {
	t, err := s.tenantOK(tenantName)
	if err != nil {
		return "", err
	}
	if max := limit(t, func(l *tenant.RegistrationLimits) *int { return l.MaxCredentialsPerDevice }); max >= 0 && len(cs) > max {
		return "", fmt.Errorf("%w: tenant %q allows %d credentials per device", ErrLimit, tenantName, max)
	}
	in, err := prepareCredentials(cs, hasAuthIDTemplate(t))
	if err != nil {
		return "", err
	}
	key := deviceKey(tenantName, id)
	l := s.writeLock(tenantName, id)
	l.Lock()
	defer l.Unlock()
	for {
		sd, _, err := s.getDevice(ctx, tenantName, id)
		if err != nil {
			return "", err
		}
		old, rev, err := s.getCreds(ctx, tenantName, id, sd.Inc)
		if err != nil {
			return "", err
		}
		if err := checkVersion(ifMatch, rev); err != nil {
			return "", err
		}
		set, err := mergeSecrets(in, old)
		if err != nil {
			return "", err
		}
		var claimed []Credential
		release := func() {
			for _, c := range claimed {
				s.releaseAuthID(context.WithoutCancel(ctx), tenantName, c.Type, c.AuthID, id)
			}
		}
		for _, c := range set {
			created, err := s.claimAuthID(ctx, tenantName, c.Type, c.AuthID, id)
			if created {
				claimed = append(claimed, c)
			}
			if err != nil {
				release()
				return "", err
			}
		}
		b, err := json.Marshal(storedCredentials{Inc: sd.Inc, Credentials: set})
		if err != nil {
			release()
			return "", fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		var nrev uint64
		if rev == 0 {
			nrev, err = s.creds.Create(ctx, key, b)
		} else {
			nrev, err = s.creds.Update(ctx, key, b, rev)
		}
		if err != nil {
			release()
			if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSeq(err) {
				if ifMatch != "" && ifMatch != "*" {
					return "", fmt.Errorf("%w: credentials of %q changed concurrently", ErrVersionMismatch, id)
				}
				continue
			}
			return "", err
		}
		s.cache.invalidate(tenantName, id)
		keep := map[[2]string]bool{}
		for _, c := range set {
			keep[[2]string{c.Type, c.AuthID}] = true
		}
		for _, c := range old {
			if !keep[[2]string{c.Type, c.AuthID}] {
				s.releaseAuthID(ctx, tenantName, c.Type, c.AuthID, id)
			}
		}
		return version(nrev), nil
	}
}

// claimAuthID makes the index key of an auth-id name the device. created
// reports whether this call wrote the key (to undo on failure).
func (s *Store) claimAuthID(ctx context.Context, tenantName, typ, authID, id string) (created bool, err error) {
	k := authIDKey(tenantName, typ, authID)
	for attempt := 0; attempt < 5; attempt++ {
		_, err := s.authIDs.Create(ctx, k, []byte(id))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return false, err
		}
		e, err := s.authIDs.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile: try again
		}
		if err != nil {
			return false, err
		}
		owner := string(e.Value())
		if owner == id {
			return false, nil
		}
		taken := fmt.Errorf("%s auth-id %q %w (device %q)", typ, authID, ErrExists, owner)
		if held, err := s.holds(ctx, tenantName, owner, typ, authID); err != nil || held {
			if err != nil {
				return false, err
			}
			return false, taken
		}
		if time.Since(e.Created()) < claimGrace {
			return false, taken
		}
		// A dangling key (its device does not hold the auth-id): take it
		// over, conditionally, so that of two repairers one wins.
		if _, err := s.authIDs.Update(ctx, k, []byte(id), e.Revision()); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSeq(err) {
				return false, taken
			}
			return false, err
		}
		s.log.Info("auth-id index key repaired", "tenant", tenantName, "type", typ, "from", owner, "to", id)
		return true, nil
	}
	return false, fmt.Errorf("%s auth-id %q %w (contended)", typ, authID, ErrExists)
}

// holds reports whether a device's credentials hold an auth-id.
func (s *Store) holds(ctx context.Context, tenantName, id, typ, authID string) (bool, error) {
	sd, _, err := s.getDevice(ctx, tenantName, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	cs, _, err := s.getCreds(ctx, tenantName, id, sd.Inc)
	if err != nil {
		return false, err
	}
	for _, c := range cs {
		if c.Type == typ && c.AuthID == authID {
			return true, nil
		}
	}
	return false, nil
}

// Lookup finds the device holding the credential (type, auth-id) in a
// tenant, in time independent of the number of devices: three KV gets
// (the index key, then the device and its credentials in parallel). ErrNotFound if none; an index key
// whose device does not hold the auth-id (left by a crash) counts as
// none. x509-cert auth-ids are normalized (NormalizeSubjectDN) first. The
// result includes disabled devices and credentials: the caller decides
// (and counts) why it refuses.
//
// Found identities are cached (lookupCache), dropped on any change of the
// device or its credentials on any node. The Device and Credential the
// result points to are shared with the cache: read-only.
func (s *Store) Lookup(ctx context.Context, tenantName, typ, authID string) (*Identity, error) {
	if typ == TypeX509 {
		if n, err := NormalizeSubjectDN(authID); err == nil {
			authID = n
		}
	}
	if authID == "" || len(authID) > maxAuthIDLen {
		return nil, fmt.Errorf("%s auth-id %q %w", typ, authID, ErrNotFound)
	}
	notFound := func() error { return fmt.Errorf("%s auth-id %q %w", typ, authID, ErrNotFound) }
	ck := cacheKey(tenantName, typ, authID)
	cached, epoch := s.cache.get(ck)
	if cached != nil {
		cp := *cached
		return &cp, nil
	}
	e, err := s.authIDs.Get(ctx, authIDKey(tenantName, typ, authID))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
			return nil, notFound()
		}
		return nil, err
	}
	id := string(e.Value())
	// The device and its credentials are read at once: two round trips
	// to the engine instead of three.
	var ce jetstream.KeyValueEntry
	var cerr error
	got := make(chan struct{})
	go func() {
		ce, cerr = s.creds.Get(ctx, deviceKey(tenantName, id))
		close(got)
	}()
	sd, _, err := s.getDevice(ctx, tenantName, id)
	<-got
	if errors.Is(err, ErrNotFound) {
		return nil, notFound()
	}
	if err != nil {
		return nil, err
	}
	cs, _, err := decodeCreds(ce, cerr, tenantName, id, sd.Inc)
	if err != nil {
		return nil, err
	}
	for i := range cs {
		if cs[i].Type == typ && cs[i].AuthID == authID {
			idn := &Identity{Tenant: tenantName, DeviceID: id, Device: &sd.Device, Credential: &cs[i]}
			s.cache.put(ck, epoch, idn)
			cp := *idn
			return &cp, nil
		}
	}
	return nil, notFound()
}

// AutoProvision registers a device with one credential on its first
// connection (Hono's auto-provisioning from a client certificate), with
// status auto-provisioned; a gateway gets the authority
// "auto-provisioning-enabled" (Hono's auto-provision-as-gateway). It is
// idempotent: a concurrent provisioning of the same device returns the
// stored identity.
func (s *Store) AutoProvision(ctx context.Context, tenantName, deviceID string, c Credential, gateway bool) (*Identity, error) {
	t, err := s.tenantOK(tenantName)
	if err != nil {
		return nil, err
	}
	prep, err := prepareCredentials([]Credential{c}, hasAuthIDTemplate(t))
	if err != nil {
		return nil, err
	}
	d := Device{Status: &Status{Created: time.Now().UTC(), AutoProvisioned: true}}
	if gateway {
		d.Authorities = []string{"auto-provisioning-enabled"}
	}
	_, _, err = s.createDevice(ctx, tenantName, deviceID, &d)
	typ, authID := prep[0].Type, prep[0].AuthID
	switch {
	case err == nil:
		// Credentials a deleted device of the same id left are stale:
		// overwrite whatever is there.
		if _, err := s.SetCredentials(ctx, tenantName, deviceID, []Credential{c}, ""); err != nil {
			_ = s.DeleteDevice(context.WithoutCancel(ctx), tenantName, deviceID, "")
			return nil, err
		}
		return s.Lookup(ctx, tenantName, typ, authID)
	case !errors.Is(err, ErrExists):
		return nil, err
	}
	// The device exists: provisioned concurrently (wait for its
	// credentials), or registered otherwise (refuse).
	deadline := time.Now().Add(2 * time.Second)
	for {
		id, err := s.Lookup(ctx, tenantName, typ, authID)
		if err == nil && id.DeviceID != deviceID {
			return nil, fmt.Errorf("%s auth-id %q %w (device %q)", typ, authID, ErrExists, id.DeviceID)
		}
		if !errors.Is(err, ErrNotFound) {
			return id, err
		}
		dev, _, derr := s.Device(ctx, tenantName, deviceID)
		if derr != nil {
			return nil, derr
		}
		if dev.Status == nil || !dev.Status.AutoProvisioned {
			return nil, fmt.Errorf("device %q %w (not auto-provisioned)", deviceID, ErrExists)
		}
		if time.Now().After(deadline) {
			// The other provisioner did not finish: complete its work if
			// the device has no credentials yet.
			cs, v, err := s.Credentials(ctx, tenantName, deviceID)
			if err != nil {
				return nil, err
			}
			if len(cs) == 0 {
				if _, err := s.SetCredentials(ctx, tenantName, deviceID, []Credential{c}, v); err != nil && !errors.Is(err, ErrVersionMismatch) {
					return nil, err
				}
			}
			// Written by us, or by the other provisioner meanwhile.
			id, err := s.Lookup(ctx, tenantName, typ, authID)
			if err == nil && id.DeviceID == deviceID {
				return id, nil
			}
			return nil, fmt.Errorf("device %q %w with other credentials", deviceID, ErrExists)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hasAuthIDTemplate reports whether a trust anchor of the tenant has an
// auth-id-template: x509-cert auth-ids are then what the template made of
// the subject DN, not necessarily DNs themselves.
func hasAuthIDTemplate(t *tenant.Tenant) bool {
	if t == nil || t.IoT == nil {
		return false
	}
	for _, ca := range t.IoT.TrustedCA {
		if ca.AuthIDTemplate != "" {
			return true
		}
	}
	return false
}

// prepareCredentials validates a credentials set as Hono does and brings
// it into stored form: pwd-plain hashed, x509 auth-ids normalized,
// certificates replaced by what is taken from them. The result shares
// nothing with the input.
//
// An x509-cert credential with a cert and an auth-id keeps the auth-id
// (the caller applied the trust anchor's auth-id-template); with a cert
// only, the auth-id is the certificate's subject DN. A given auth-id must
// be a subject DN unless templated (a tenant trust anchor has an
// auth-id-template), and is normalized when it is one.
func prepareCredentials(cs []Credential, templated bool) ([]Credential, error) {
	out := make([]Credential, 0, len(cs))
	seen := map[[2]string]bool{}
	for i := range cs {
		c := cs[i]
		c.Secrets = append([]Secret(nil), c.Secrets...)
		bad := func(format string, a ...any) error {
			return fmt.Errorf("%w: credential %d (%s %q): %s", ErrInvalid, i, c.Type, c.AuthID, fmt.Sprintf(format, a...))
		}
		switch c.Type {
		case TypePassword, TypePSK, TypeRPK:
			if len(c.Cert) > 0 {
				return nil, bad("cert is for x509-cert credentials")
			}
			if c.AuthID == "" {
				return nil, bad("auth-id missing")
			}
			if c.Type == TypePassword && !usernameRE.MatchString(c.AuthID) {
				return nil, bad("auth-id must match %s", usernameRE)
			}
			if len(c.Secrets) == 0 {
				return nil, bad("no secrets")
			}
		case TypeX509:
			if len(c.Cert) > 0 {
				cert, err := x509.ParseCertificate(c.Cert)
				if err != nil {
					return nil, bad("cert: %v", err)
				}
				if c.AuthID == "" {
					c.AuthID = SubjectDN(cert)
				} else if n, err := NormalizeSubjectDN(c.AuthID); err == nil {
					c.AuthID = n
				}
				if len(c.Secrets) == 0 {
					c.Secrets = []Secret{{}}
				}
				for j := range c.Secrets {
					nb, na := cert.NotBefore.UTC(), cert.NotAfter.UTC()
					c.Secrets[j].NotBefore, c.Secrets[j].NotAfter = &nb, &na
				}
				c.Cert = nil
			} else {
				if c.AuthID == "" {
					return nil, bad("auth-id (subject DN) or cert missing")
				}
				n, err := NormalizeSubjectDN(c.AuthID)
				switch {
				case err == nil:
					c.AuthID = n
				case !templated:
					return nil, bad("auth-id is not an RFC 2253 subject DN")
				}
				if len(c.Secrets) == 0 {
					c.Secrets = []Secret{{}}
				}
			}
			if len(c.Secrets) > 1 {
				return nil, bad("at most one secret (the certificate's validity)")
			}
		default:
			return nil, fmt.Errorf("%w: credential %d: unknown type %q", ErrInvalid, i, c.Type)
		}
		if len(c.AuthID) > maxAuthIDLen {
			return nil, bad("auth-id longer than %d", maxAuthIDLen)
		}
		k := [2]string{c.Type, c.AuthID}
		if seen[k] {
			return nil, bad("duplicate type and auth-id")
		}
		seen[k] = true
		ids := map[string]bool{}
		for j := range c.Secrets {
			sec := &c.Secrets[j]
			if sec.ID != "" {
				if ids[sec.ID] {
					return nil, bad("duplicate secret id %q", sec.ID)
				}
				ids[sec.ID] = true
			}
			if sec.NotBefore != nil && sec.NotAfter != nil && !sec.NotBefore.Before(*sec.NotAfter) {
				return nil, bad("secret %d: not-before must be before not-after", j)
			}
			if err := prepareSecret(c.Type, sec); err != nil {
				return nil, bad("secret %d: %v", j, err)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// prepareSecret checks one secret's material for its type and brings it
// into stored form. A secret without material must name a stored secret
// (an id), checked in mergeSecrets.
func prepareSecret(typ string, sec *Secret) error {
	switch typ {
	case TypePassword:
		if len(sec.Key) > 0 || len(sec.Cert) > 0 || sec.Algorithm != "" {
			return errors.New("key, cert and algorithm are not for hashed-password")
		}
		switch {
		case sec.PwdPlain != "":
			// Hono: pwd-plain wins, the given hash fields are ignored.
			h, err := bcrypt.GenerateFromPassword([]byte(sec.PwdPlain), BcryptCost)
			if err != nil {
				return err
			}
			sec.PwdHash, sec.HashFunction, sec.Salt, sec.PwdPlain = string(h), HashBcrypt, nil, ""
		case sec.PwdHash != "":
			if sec.HashFunction == "" {
				sec.HashFunction = HashSHA256 // Hono's default
			}
			switch sec.HashFunction {
			case HashBcrypt:
				if !strings.HasPrefix(sec.PwdHash, "$2a$") && !strings.HasPrefix(sec.PwdHash, "$2b$") && !strings.HasPrefix(sec.PwdHash, "$2y$") {
					return errors.New("bcrypt pwd-hash must start with $2a$, $2b$ or $2y$")
				}
				cost, err := bcrypt.Cost([]byte(sec.PwdHash))
				if err != nil || len(sec.PwdHash) != 60 {
					return errors.New("malformed bcrypt pwd-hash")
				}
				if cost > MaxBcryptCost {
					return fmt.Errorf("bcrypt cost %d above the maximum %d", cost, MaxBcryptCost)
				}
				sec.Salt = nil
			case HashSHA256, HashSHA512:
				want := 32
				if sec.HashFunction == HashSHA512 {
					want = 64
				}
				h, err := base64.StdEncoding.DecodeString(sec.PwdHash)
				if err != nil || len(h) != want {
					return fmt.Errorf("pwd-hash must be the base64 of a %d-byte %s hash", want, sec.HashFunction)
				}
			default:
				return fmt.Errorf("hash-function %q (bcrypt, sha-256 or sha-512)", sec.HashFunction)
			}
		case sec.ID == "":
			return errors.New("pwd-plain or pwd-hash missing")
		default:
			if sec.HashFunction != "" || len(sec.Salt) > 0 {
				return errors.New("hash-function or salt without pwd-hash")
			}
		}
	case TypePSK:
		if sec.PwdHash != "" || sec.PwdPlain != "" || len(sec.Cert) > 0 {
			return errors.New("only key for psk")
		}
		if len(sec.Key) == 0 && sec.ID == "" {
			return errors.New("key missing")
		}
	case TypeRPK:
		if sec.PwdHash != "" || sec.PwdPlain != "" {
			return errors.New("key or cert for rpk")
		}
		switch {
		case len(sec.Cert) > 0:
			cert, err := x509.ParseCertificate(sec.Cert)
			if err != nil {
				return fmt.Errorf("cert: %v", err)
			}
			alg, err := KeyAlgorithm(cert.PublicKey)
			if err != nil {
				return err
			}
			sec.Key, sec.Algorithm, sec.Cert = cert.RawSubjectPublicKeyInfo, alg, nil
			if sec.NotBefore == nil && sec.NotAfter == nil {
				nb, na := cert.NotBefore.UTC(), cert.NotAfter.UTC()
				sec.NotBefore, sec.NotAfter = &nb, &na
			}
		case len(sec.Key) > 0:
			pub, err := x509.ParsePKIXPublicKey(sec.Key)
			if err != nil {
				return fmt.Errorf("key is not a DER SubjectPublicKeyInfo: %v", err)
			}
			alg, err := KeyAlgorithm(pub)
			if err != nil {
				return err
			}
			if sec.Algorithm != "" && !strings.EqualFold(sec.Algorithm, alg) {
				return fmt.Errorf("algorithm %q does not match the key (%s)", sec.Algorithm, alg)
			}
			sec.Algorithm = alg
		case sec.ID == "":
			return errors.New("key or cert missing")
		}
	case TypeX509:
		if sec.PwdHash != "" || sec.PwdPlain != "" || len(sec.Key) > 0 || len(sec.Cert) > 0 {
			return errors.New("an x509-cert secret holds only its validity")
		}
	}
	return nil
}

// KeyAlgorithm names a public key's algorithm as Java does ("RSA", "EC",
// "Ed25519"): the algorithm of trust anchors and rpk secrets.
func KeyAlgorithm(pub any) (string, error) {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return "EC", nil
	case *rsa.PublicKey:
		return "RSA", nil
	case ed25519.PublicKey:
		return "Ed25519", nil
	}
	return "", fmt.Errorf("unsupported public key type %T (want RSA or EC)", pub)
}

func hasMaterial(sec *Secret) bool {
	return sec.PwdHash != "" || len(sec.Key) > 0
}

func hasMetadata(sec *Secret) bool {
	return sec.Enabled != nil || sec.NotBefore != nil || sec.NotAfter != nil || sec.Comment != ""
}

// mergeSecrets applies Hono's secret-id rules against the stored set and
// gives new secrets their ids.
func mergeSecrets(in, old []Credential) ([]Credential, error) {
	oldBy := map[[2]string]*Credential{}
	for i := range old {
		oldBy[[2]string{old[i].Type, old[i].AuthID}] = &old[i]
	}
	out := make([]Credential, len(in))
	for i, c := range in {
		c.Secrets = append([]Secret(nil), c.Secrets...)
		oc := oldBy[[2]string{c.Type, c.AuthID}]
		for j := range c.Secrets {
			sec := &c.Secrets[j]
			if sec.ID == "" {
				sec.ID = NewUUID()
				continue
			}
			var stored *Secret
			if oc != nil {
				for k := range oc.Secrets {
					if oc.Secrets[k].ID == sec.ID {
						stored = &oc.Secrets[k]
						break
					}
				}
			}
			if stored == nil {
				return nil, fmt.Errorf("%w: %s %q: no stored secret with id %q", ErrInvalid, c.Type, c.AuthID, sec.ID)
			}
			if !hasMaterial(sec) {
				sec.PwdHash, sec.HashFunction, sec.Key, sec.Algorithm = stored.PwdHash, stored.HashFunction, stored.Key, stored.Algorithm
				sec.Salt = bytes.Clone(stored.Salt)
				if !hasMetadata(sec) {
					sec.Enabled, sec.NotBefore, sec.NotAfter, sec.Comment = stored.Enabled, stored.NotBefore, stored.NotAfter, stored.Comment
				}
			}
		}
		out[i] = c
	}
	return out, nil
}
