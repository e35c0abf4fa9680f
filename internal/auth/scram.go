package auth

// SCRAM-SHA-256 (RFC 5802, RFC 7677), the server side.
//
// Each user stores a verifier (tenant.ScramCredential: salt, iteration
// count, StoredKey, ServerKey), computed when its password is set
// (SetPassword). The exchange never reveals whether a user exists: an
// unknown user, or one without a verifier, gets a server-first message with
// a salt derived from its name under a per-process key, and fails only at
// the client-final message, like a wrong password.
//
// Passwords and user names are prepared with SASLprep (RFC 4013) as RFC
// 5802 section 5.1 requires (saslprep.go): the verifier is computed from
// the prepared password, the user is looked up by the prepared name.
// SASLprep is the identity on printable ASCII, so verifiers of ASCII
// passwords are the same as before it was applied.

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/throngmq/throng/internal/tenant"
)

// ScramIterations is the PBKDF2 iteration count of new verifiers (the
// minimum RFC 7677 allows).
const ScramIterations = 4096

const scramSaltLen = 16

// ErrNoScramCredential is returned at the end of a SCRAM exchange for a user
// whose password was set before SCRAM support: it has no verifier until the
// password is set again, and may use PLAIN meanwhile.
var ErrNoScramCredential = errors.New("user has no SCRAM-SHA-256 verifier (password set before SCRAM support: set it again, or use PLAIN)")

// ErrScramMalformed is returned for a SCRAM message that does not follow
// RFC 5802, or one sent out of turn.
var ErrScramMalformed = errors.New("malformed SCRAM message")

// SetPassword sets the user's password: the bcrypt hash (of the password
// as given, see saslprep.go) and the SCRAM verifier (of the password
// prepared with SASLprep). Every place that sets a password uses it, so
// the two agree. A password SASLprep refuses is an error wrapping
// ErrSASLprep, and u is left unchanged.
func SetPassword(u *tenant.User, pw string) error {
	// The verifier first: it is the one that can refuse the password, and
	// bcrypt is the slower of the two.
	c, err := NewScramCredential(pw)
	if err != nil {
		return err
	}
	h, err := HashPassword(pw)
	if err != nil {
		return err
	}
	u.PasswordHash, u.Scram = h, c
	return nil
}

// NewScramCredential returns a verifier for pw with a random salt and
// ScramIterations.
func NewScramCredential(pw string) (*tenant.ScramCredential, error) {
	salt := make([]byte, scramSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	return ScramCredentialFor(pw, salt, ScramIterations)
}

// ScramCredentialFor returns the verifier for pw with the given salt and
// iteration count (RFC 5802 section 3): SaltedPassword is
// Hi(SASLprep(pw), salt, iter). A password SASLprep refuses is an error
// wrapping ErrSASLprep.
func ScramCredentialFor(pw string, salt []byte, iter int) (*tenant.ScramCredential, error) {
	prepared, err := SASLprep(pw)
	if err != nil {
		return nil, fmt.Errorf("password %w", err)
	}
	salted, err := pbkdf2.Key(sha256.New, prepared, salt, iter, sha256.Size)
	if err != nil {
		return nil, err
	}
	stored := sha256.Sum256(hmacSHA256(salted, "Client Key"))
	return &tenant.ScramCredential{
		Salt:       append([]byte(nil), salt...),
		Iterations: iter,
		StoredKey:  stored[:],
		ServerKey:  hmacSHA256(salted, "Server Key"),
	}, nil
}

// ScramMatches reports whether c is a verifier of pw, prepared with
// SASLprep (false for nil, and for a password SASLprep refuses).
func ScramMatches(c *tenant.ScramCredential, pw string) bool {
	if c == nil || len(c.Salt) == 0 || c.Iterations <= 0 {
		return false
	}
	want, err := ScramCredentialFor(pw, c.Salt, c.Iterations)
	return err == nil && hmac.Equal(want.StoredKey, c.StoredKey) && hmac.Equal(want.ServerKey, c.ServerKey)
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// ScramLookup resolves the identity a SCRAM client names — authcid is its
// user name with escapes decoded and prepared with SASLprep, authzid its
// authorization identity ("" when absent) — to a tenant and user name,
// and returns the stored user, nil when there is none (unknown tenant or
// user).
type ScramLookup func(authcid, authzid string) (tenantName, name string, u *tenant.User)

// ScramLookup returns the lookup of SCRAM exchanges against the
// authenticator's users. The tenant is the "@tenant" suffix of the user
// name, else a non-empty authzid, else defaultTenant.
func (a *Authenticator) ScramLookup(defaultTenant string) ScramLookup {
	return func(authcid, authzid string) (string, string, *tenant.User) {
		name, ten := SplitUser(authcid, "")
		if ten == "" {
			ten = authzid
		}
		if ten == "" {
			ten = defaultTenant
		}
		if _, ok := a.users.Tenant(ten); !ok {
			return ten, name, nil
		}
		u, _ := a.users.User(ten, name)
		return ten, name, u
	}
}

// fakeSaltKey keys the salts made up for unknown users. It is per process:
// the same unknown name gets the same salt until a restart, as a real user
// would; a prober who compares salts across restarts or nodes can still
// tell, which a shared secret in the store would fix.
var fakeSaltKey = func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}()

// ScramServer is one SCRAM-SHA-256 exchange, server side: Step takes the
// client-first message and returns server-first, then takes client-final
// and returns server-final. Not safe for concurrent use.
type ScramServer struct {
	lookup ScramLookup
	nonce  func() string // the server nonce; tests replace it

	// a and ctx count the exchange in a's login backoff
	// (NewScramExchange); a nil: not counted.
	a         *Authenticator
	ctx       context.Context
	ten, name string // the tenant and user the client named

	step        int // messages consumed
	gs2         string
	clientBare  string
	serverFirst string
	fullNonce   string
	cred        *tenant.ScramCredential
	user        *tenant.User
	deferred    error // decided at client-first, reported at client-final
	ok          bool
	over        bool // an error or client-final ended the exchange
}

// NewScramServer starts an exchange that finds users with lookup.
func NewScramServer(lookup ScramLookup) *ScramServer {
	return &ScramServer{lookup: lookup, nonce: randomNonce}
}

// NewScramExchange starts an exchange against the authenticator's users
// (ScramLookup(defaultTenant)) that is counted in the login backoff like
// a password check (backoff.go): a failed proof counts a failure of the
// user and of the source address ctx carries (WithSource), a check of a
// key in backoff waits its turn before the proof is checked, and a
// refusal is answered after the backoff's delay. ctx bounds those waits:
// a turn not reached before it ends fails with ErrUnavailable.
//
// SCRAM costs the server no bcrypt (the client computes the salted
// password), so the backoff here is not about CPU: without it an online
// guesser would get an answer per round trip over SCRAM while PLAIN
// slows it down.
func (a *Authenticator) NewScramExchange(ctx context.Context, defaultTenant string) *ScramServer {
	s := NewScramServer(a.ScramLookup(defaultTenant))
	s.a, s.ctx = a, ctx
	return s
}

// backoffCheck returns the exchange's place in the login backoff, nil
// when it is not counted (no backoff, or an unknown tenant: not counted,
// as for passwords).
func (s *ScramServer) backoffCheck() *checkState {
	if s.a == nil || s.a.backoff == nil || s.ctx == nil {
		return nil
	}
	if _, ok := s.a.users.Tenant(s.ten); !ok {
		return nil
	}
	return &checkState{keys: s.a.backoff.keysFor(s.ctx, s.ten, s.name)}
}

func randomNonce() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b) // printable, no ','
}

// Step consumes the client's next message and returns the server's. done
// is true once the exchange is over: with err nil, out is the
// server-final message and Principal names the user. Any error ends the
// exchange; it wraps ErrBadCredentials, ErrNoScramCredential or
// ErrScramMalformed.
func (s *ScramServer) Step(in []byte) (out []byte, done bool, err error) {
	s.step++
	switch {
	case s.over:
	case s.step == 1:
		out, err = s.clientFirst(string(in))
		s.over = err != nil
		return out, s.over, err
	case s.step == 2:
		out, err = s.clientFinal(string(in))
		s.over = true
		return out, true, err
	}
	s.over = true
	return nil, true, fmt.Errorf("%w: exchange already over", ErrScramMalformed)
}

// User returns the authenticated user after a successful exchange.
func (s *ScramServer) User() (*tenant.User, bool) {
	if !s.ok {
		return nil, false
	}
	return s.user, true
}

// Principal returns the authenticated principal after a successful
// exchange, else nil.
func (s *ScramServer) Principal() *Principal {
	if !s.ok {
		return nil
	}
	u := s.user
	return &Principal{Tenant: u.Tenant, User: u.Name, Roles: u.Roles, Perms: u.Permissions, hash: u.PasswordHash}
}

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrScramMalformed, fmt.Sprintf(format, a...))
}

// clientFirst parses
//
//	client-first-message = gs2-header client-first-message-bare
//	gs2-header = gs2-cbind-flag "," [ authzid ] ","
//	client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
//
// and answers server-first-message = nonce "," salt "," iteration-count.
func (s *ScramServer) clientFirst(msg string) ([]byte, error) {
	var rest string
	switch {
	case strings.HasPrefix(msg, "n,"), strings.HasPrefix(msg, "y,"):
		// "y": the client supports channel binding but thinks we do not,
		// which is true (we offer no -PLUS mechanism).
		rest = msg[2:]
	case strings.HasPrefix(msg, "p="):
		return nil, malformed("channel binding requested, but SCRAM-SHA-256-PLUS is not offered")
	default:
		return nil, malformed("bad gs2-cbind-flag")
	}
	az, bare, ok := strings.Cut(rest, ",")
	if !ok {
		return nil, malformed("gs2 header not terminated")
	}
	authzid := ""
	if az != "" {
		v, ok := strings.CutPrefix(az, "a=")
		if !ok {
			return nil, malformed("bad authzid")
		}
		var err error
		if authzid, err = decodeSaslname(v); err != nil {
			return nil, err
		}
	}
	attrs := strings.Split(bare, ",")
	if strings.HasPrefix(attrs[0], "m=") {
		return nil, malformed("unsupported mandatory extension")
	}
	if len(attrs) < 2 {
		return nil, malformed("client-first message needs a user name and a nonce")
	}
	v, ok := strings.CutPrefix(attrs[0], "n=")
	if !ok {
		return nil, malformed("user name expected")
	}
	authcid, err := decodeSaslname(v)
	if err != nil {
		return nil, err
	}
	cnonce, ok := strings.CutPrefix(attrs[1], "r=")
	if !ok || !validNonce(cnonce) {
		return nil, malformed("bad client nonce")
	}
	if err := checkExtensions(attrs[2:]); err != nil {
		return nil, err
	}

	// RFC 5802 section 5.1: the server prepares the user name with
	// SASLprep before comparing it with stored ones (which are ASCII,
	// tenant.User.Validate, hence their own preparation). A name it
	// refuses names no user: it fails like an unknown one, at
	// client-final, with no answer that tells the two apart.
	var ten, name string
	var u *tenant.User
	if prepared, err := SASLprep(authcid); err != nil {
		ten, name = authzid, authcid
		s.deferred = fmt.Errorf("%w: user name %w", ErrBadCredentials, err)
	} else {
		ten, name, u = s.lookup(prepared, authzid)
	}
	s.ten, s.name = ten, name
	switch {
	case s.deferred != nil:
	case u == nil:
		s.deferred = ErrBadCredentials
	case u.Scram == nil || len(u.Scram.Salt) == 0 || u.Scram.Iterations <= 0:
		s.deferred = fmt.Errorf("%w: user %q of tenant %q", ErrNoScramCredential, name, ten)
	default:
		s.user, s.cred = u, u.Scram
	}
	if s.cred == nil {
		// Carry on with a made-up verifier so that the exchange looks the
		// same as for a real user with a wrong password.
		m := hmac.New(sha256.New, fakeSaltKey)
		m.Write([]byte(ten + "\x00" + name))
		s.cred = &tenant.ScramCredential{Salt: m.Sum(nil)[:scramSaltLen], Iterations: ScramIterations,
			StoredKey: make([]byte, sha256.Size), ServerKey: make([]byte, sha256.Size)}
	}
	s.gs2 = msg[:len(msg)-len(bare)]
	s.clientBare = bare
	s.fullNonce = cnonce + s.nonce()
	s.serverFirst = "r=" + s.fullNonce + ",s=" + base64.StdEncoding.EncodeToString(s.cred.Salt) +
		",i=" + strconv.Itoa(s.cred.Iterations)
	return []byte(s.serverFirst), nil
}

// clientFinal parses
//
//	client-final-message = channel-binding "," nonce ["," extensions] "," proof
//
// checks the proof and answers server-final-message = "v=" signature.
func (s *ScramServer) clientFinal(msg string) ([]byte, error) {
	attrs := strings.Split(msg, ",")
	if len(attrs) < 3 {
		return nil, malformed("client-final message needs channel binding, nonce and proof")
	}
	cb, ok := strings.CutPrefix(attrs[0], "c=")
	if !ok {
		return nil, malformed("channel binding expected")
	}
	gs2, err := base64.StdEncoding.Strict().DecodeString(cb)
	if err != nil || string(gs2) != s.gs2 {
		// Without channel binding, c= is the gs2 header of client-first
		// ("biws" for "n,,").
		return nil, malformed("channel binding does not match the gs2 header")
	}
	nonce, ok := strings.CutPrefix(attrs[1], "r=")
	if !ok || subtle.ConstantTimeCompare([]byte(nonce), []byte(s.fullNonce)) != 1 {
		return nil, fmt.Errorf("%w: nonce mismatch", ErrBadCredentials)
	}
	last := attrs[len(attrs)-1]
	p, ok := strings.CutPrefix(last, "p=")
	if !ok {
		return nil, malformed("proof expected last")
	}
	if err := checkExtensions(attrs[2 : len(attrs)-1]); err != nil {
		return nil, err
	}
	proof, err := base64.StdEncoding.Strict().DecodeString(p)
	if err != nil || len(proof) != sha256.Size {
		return nil, malformed("bad proof")
	}
	st := s.backoffCheck()
	if st != nil {
		// A user or source address with failures waits its turn, as a
		// password check does.
		if err := s.a.backoff.turn(s.ctx, st); err != nil {
			return nil, err
		}
	}
	withoutProof := msg[:len(msg)-len(last)-1]
	authMsg := s.clientBare + "," + s.serverFirst + "," + withoutProof
	// ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the proof
	// holds if H(ClientKey) = StoredKey.
	key := hmacSHA256(s.cred.StoredKey, authMsg)
	for i := range key {
		key[i] ^= proof[i]
	}
	sum := sha256.Sum256(key)
	match := subtle.ConstantTimeCompare(sum[:], s.cred.StoredKey) == 1
	err = s.deferred
	if err == nil && !match {
		err = ErrBadCredentials
	}
	if st != nil {
		switch {
		case err == nil:
			s.a.backoff.succeeded(st)
		case errors.Is(err, ErrBadCredentials):
			// An unknown user or a wrong proof; not a user without a
			// verifier (ErrNoScramCredential: no guess was checked).
			s.a.loginFailed(s.ctx, st)
		default:
			s.a.backoff.release(st)
		}
	}
	if err != nil {
		return nil, err
	}
	s.ok = true
	sig := hmacSHA256(s.cred.ServerKey, authMsg)
	return []byte("v=" + base64.StdEncoding.EncodeToString(sig)), nil
}

// decodeSaslname decodes saslname = 1*(value-safe-char / "=2C" / "=3D").
func decodeSaslname(v string) (string, error) {
	if v == "" || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
		return "", malformed("bad saslname")
	}
	if !strings.Contains(v, "=") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '=' {
			b.WriteByte(v[i])
			continue
		}
		switch {
		case strings.HasPrefix(v[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(v[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", malformed("bad escape in saslname")
		}
		i += 2
	}
	return b.String(), nil
}

// validNonce: printable ASCII except ',' (RFC 5802 section 7).
func validNonce(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

// checkExtensions accepts optional extensions (attr-val: a letter, '=',
// a value) and ignores them, as RFC 5802 section 5.1 requires of
// unknown ones.
func checkExtensions(attrs []string) error {
	for _, a := range attrs {
		if len(a) < 2 || a[1] != '=' || !('a' <= a[0] && a[0] <= 'z' || 'A' <= a[0] && a[0] <= 'Z') {
			return malformed("bad attribute %q", a)
		}
	}
	return nil
}
