package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/xdg-go/stringprep"

	"github.com/throngmq/throng/internal/tenant"
)

// scramClient is the client side of SCRAM-SHA-256, just enough to drive
// the server in tests. It prepares the password with SASLprep, as RFC 5802
// requires, and sends the user name as given (preparing it is only a
// SHOULD for the client, and the server's preparation is under test).
type scramClient struct {
	user, pw, authzid, cnonce string

	gs2, bare, authMsg string
	salted             []byte
}

func scramEscape(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

func (c *scramClient) first() string {
	c.gs2 = "n,,"
	if c.authzid != "" {
		c.gs2 = "n,a=" + scramEscape(c.authzid) + ","
	}
	c.bare = "n=" + scramEscape(c.user) + ",r=" + c.cnonce
	return c.gs2 + c.bare
}

func (c *scramClient) final(t testing.TB, serverFirst string) string {
	t.Helper()
	var nonce, salt string
	iter := 0
	for _, a := range strings.Split(serverFirst, ",") {
		switch {
		case strings.HasPrefix(a, "r="):
			nonce = a[2:]
		case strings.HasPrefix(a, "s="):
			salt = a[2:]
		case strings.HasPrefix(a, "i="):
			iter, _ = strconv.Atoi(a[2:])
		}
	}
	if !strings.HasPrefix(nonce, c.cnonce) || iter <= 0 {
		t.Fatalf("bad server-first %q", serverFirst)
	}
	s, err := base64.StdEncoding.DecodeString(salt)
	if err != nil {
		t.Fatal(err)
	}
	// SaltedPassword := Hi(Normalize(password), salt, i), Normalize being
	// SASLprep (RFC 5802 section 3): the library itself, not the server's
	// SASLprep, so that a fault there cannot cancel out.
	pw, err := stringprep.SASLprep.Prepare(c.pw)
	if err != nil {
		t.Fatalf("client SASLprep: %v", err)
	}
	c.salted, err = pbkdf2.Key(sha256.New, pw, s, iter, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	without := "c=" + base64.StdEncoding.EncodeToString([]byte(c.gs2)) + ",r=" + nonce
	c.authMsg = c.bare + "," + serverFirst + "," + without
	clientKey := hmacSHA256(c.salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	sig := hmacSHA256(stored[:], c.authMsg)
	for i := range clientKey {
		clientKey[i] ^= sig[i]
	}
	return without + ",p=" + base64.StdEncoding.EncodeToString(clientKey)
}

func (c *scramClient) verify(serverFinal string) bool {
	want := "v=" + base64.StdEncoding.EncodeToString(hmacSHA256(hmacSHA256(c.salted, "Server Key"), c.authMsg))
	return hmac.Equal([]byte(want), []byte(serverFinal))
}

// RFC 7677 section 3.
const (
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

// rfcCredential is the verifier of "pencil" with the RFC's salt, computed
// once (PBKDF2 would dominate the fuzz target).
var rfcCredential = sync.OnceValues(func() (*tenant.ScramCredential, error) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	return ScramCredentialFor("pencil", salt, 4096)
})

func rfcUser(t testing.TB) *tenant.User {
	t.Helper()
	c, err := rfcCredential()
	if err != nil {
		t.Fatal(err)
	}
	return &tenant.User{Name: "user", Tenant: "default", Scram: c, Roles: []tenant.Role{tenant.RoleApp}}
}

// rfcServer is a server whose users are the RFC's "user" in tenant
// default and a legacy user without a verifier, with the RFC's server
// nonce.
func rfcServer(t testing.TB) *ScramServer {
	t.Helper()
	f := &fakeUsers{
		tenants: map[string]*tenant.Tenant{"default": {Name: "default"}, "acme": {Name: "acme"}},
		users: map[string]*tenant.User{
			"default/user":   rfcUser(t),
			"default/legacy": {Name: "legacy", Tenant: "default", PasswordHash: "x", Roles: []tenant.Role{tenant.RoleApp}},
		},
	}
	s := NewScramServer(New(f).ScramLookup(tenant.Default))
	s.nonce = func() string { return rfcServerNonce }
	return s
}

func TestScramRFC7677Vector(t *testing.T) {
	s := rfcServer(t)
	out, done, err := s.Step([]byte(rfcClientFirst))
	if err != nil || done || string(out) != rfcServerFirst {
		t.Fatalf("server-first %q done=%v err=%v", out, done, err)
	}
	if p := s.Principal(); p != nil {
		t.Fatal("principal before the proof")
	}
	out, done, err = s.Step([]byte(rfcClientFinal))
	if err != nil || !done || string(out) != rfcServerFinal {
		t.Fatalf("server-final %q done=%v err=%v", out, done, err)
	}
	p := s.Principal()
	if p == nil || p.User != "user" || p.Tenant != "default" {
		t.Fatalf("principal %+v", p)
	}
	if _, _, err := s.Step([]byte(rfcClientFinal)); !errors.Is(err, ErrScramMalformed) {
		t.Fatalf("step after completion: %v", err)
	}
}

func TestScramCredentialVector(t *testing.T) {
	// The stored verifier alone reproduces the RFC's server signature.
	u := rfcUser(t)
	authMsg := "n=user,r=rOprNGfwEbeRWgbNEkqO," + rfcServerFirst + ",c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	sig := base64.StdEncoding.EncodeToString(hmacSHA256(u.Scram.ServerKey, authMsg))
	if "v="+sig != rfcServerFinal {
		t.Fatalf("signature %s", sig)
	}
}

func TestScramFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		final   func(string) string // client-final from the correct one
		user    string
		wantErr error
	}{
		{"wrong password", func(string) string {
			return "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
		}, "user", ErrBadCredentials},
		{"wrong nonce", func(s string) string {
			return strings.Replace(s, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", "r=rOprNGfwEbeRWgbNEkqO%other", 1)
		}, "user", ErrBadCredentials},
		{"client nonce only", func(s string) string {
			return strings.Replace(s, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", "r=rOprNGfwEbeRWgbNEkqO", 1)
		}, "user", ErrBadCredentials},
		{"channel binding", func(s string) string { return strings.Replace(s, "c=biws", "c=eSws", 1) }, "user", ErrScramMalformed},
		{"proof not last", func(s string) string { return s + ",x=1" }, "user", ErrScramMalformed},
		{"unknown user", func(s string) string { return s }, "nobody", ErrBadCredentials},
		{"legacy user", func(s string) string { return s }, "legacy", ErrNoScramCredential},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := rfcServer(t)
			first := strings.Replace(rfcClientFirst, "n=user", "n="+tc.user, 1)
			sf, _, err := s.Step([]byte(first))
			if err != nil {
				t.Fatal(err)
			}
			final := rfcClientFinal
			if tc.user != "user" {
				c := &scramClient{user: tc.user, pw: "pencil", cnonce: "rOprNGfwEbeRWgbNEkqO"}
				c.first()
				final = c.final(t, string(sf))
			}
			out, done, err := s.Step([]byte(tc.final(final)))
			if !errors.Is(err, tc.wantErr) || !done || out != nil || s.Principal() != nil {
				t.Fatalf("out %q done=%v err=%v, want %v", out, done, err, tc.wantErr)
			}
		})
	}
}

func TestScramUnknownUserLooksReal(t *testing.T) {
	// Same shape as a real user's server-first, and the same salt on every
	// attempt for the same name.
	salts := map[string]string{}
	for i := 0; i < 2; i++ {
		for _, u := range []string{"nobody", "legacy", "nobody@acme", "x@nope"} {
			s := rfcServer(t)
			out, done, err := s.Step([]byte("n,,n=" + u + ",r=abc"))
			if err != nil || done {
				t.Fatalf("%s: %v", u, err)
			}
			attrs := strings.Split(string(out), ",")
			if len(attrs) != 3 || attrs[0] != "r=abc"+rfcServerNonce || len(attrs[1]) != len("s=W22ZaJ0SNY7soEsUEjb6gQ==") || attrs[2] != "i=4096" {
				t.Fatalf("%s: server-first %q", u, out)
			}
			if prev, ok := salts[u]; ok && prev != attrs[1] {
				t.Fatalf("%s: salt changed %s → %s", u, prev, attrs[1])
			}
			salts[u] = attrs[1]
		}
	}
	if salts["nobody"] == salts["nobody@acme"] {
		t.Fatal("fake salts do not depend on the tenant")
	}
}

func TestScramRoundTripTenantsAndEscapes(t *testing.T) {
	f := &fakeUsers{tenants: map[string]*tenant.Tenant{"default": {Name: "default"}, "acme": {Name: "acme"}}, users: map[string]*tenant.User{}}
	for _, k := range []string{"acme/alice", "default/alice", "acme/a=b,c"} {
		ten, name, _ := strings.Cut(k, "/")
		// Verifiers only: bcrypt (SetPassword) is slow under -race.
		c, err := NewScramCredential("pw-" + k)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Salt) != 16 || c.Iterations != ScramIterations {
			t.Fatalf("credential %+v", c)
		}
		f.users[k] = &tenant.User{Name: name, Tenant: ten, Scram: c, Roles: []tenant.Role{tenant.RoleApp}}
	}
	a := New(f)
	for _, tc := range []struct{ user, authzid, pw, wantTenant, wantUser string }{
		{"alice@acme", "", "pw-acme/alice", "acme", "alice"},
		{"alice", "acme", "pw-acme/alice", "acme", "alice"},
		{"alice", "", "pw-default/alice", "default", "alice"},
		{"a=b,c@acme", "", "pw-acme/a=b,c", "acme", "a=b,c"},
	} {
		s := NewScramServer(a.ScramLookup(tenant.Default))
		c := &scramClient{user: tc.user, authzid: tc.authzid, pw: tc.pw, cnonce: "c-nonce"}
		sf, _, err := s.Step([]byte(c.first()))
		if err != nil {
			t.Fatal(err)
		}
		sfin, done, err := s.Step([]byte(c.final(t, string(sf))))
		if err != nil || !done || !c.verify(string(sfin)) {
			t.Fatalf("%+v: %q %v", tc, sfin, err)
		}
		if p := s.Principal(); p.Tenant != tc.wantTenant || p.User != tc.wantUser {
			t.Fatalf("%+v: principal %+v", tc, p)
		}
	}
}

// scramRun runs a whole exchange with c against s and returns the error of
// the step that failed; a success's server signature is checked.
func scramRun(t *testing.T, s *ScramServer, c *scramClient) error {
	t.Helper()
	sf, done, err := s.Step([]byte(c.first()))
	if err != nil {
		return err
	}
	if done {
		t.Fatal("exchange over after client-first")
	}
	sfin, done, err := s.Step([]byte(c.final(t, string(sf))))
	if !done {
		t.Fatal("exchange not over after client-final")
	}
	if err == nil && !c.verify(string(sfin)) {
		t.Fatalf("server signature %q does not verify", sfin)
	}
	return err
}

func TestScramSASLprepRoundTrip(t *testing.T) {
	// Users whose passwords SASLprep changes; clients that write them
	// differently but equivalently get in, with their own preparation
	// (scramClient) against the server's verifier of the prepared form.
	f := &fakeUsers{tenants: map[string]*tenant.Tenant{"acme": {Name: "acme"}}, users: map[string]*tenant.User{}}
	for name, pw := range map[string]string{"carol": "pass\u00A0wo\u00ADrd", "nine": "\u2168"} {
		c, err := NewScramCredential(pw)
		if err != nil {
			t.Fatal(err)
		}
		f.users["acme/"+name] = &tenant.User{Name: name, Tenant: "acme", Scram: c, Roles: []tenant.Role{tenant.RoleApp}}
	}
	a := New(f)
	for _, tc := range []struct {
		name, user, pw, wantUser string // wantUser "" for a refusal
	}{
		{"as set", "carol@acme", "pass\u00A0wo\u00ADrd", "carol"},
		{"ASCII space, no soft hyphen", "carol@acme", "pass word", "carol"},
		{"en space", "carol@acme", "pass\u2002word", "carol"},
		{"zero-width space mapped to nothing", "carol@acme", "pass\u200B\u00A0word", "carol"},
		{"fullwidth user name", "\uFF43\uFF41\uFF52\uFF4F\uFF4C\uFF20acme", "pass word", "carol"},
		{"soft hyphen in the user name", "car\u00ADol@acme", "pass word", "carol"},
		{"roman numeral nine as letters", "nine@acme", "IX", "nine"},
		{"letters with a soft hyphen", "nine@acme", "I\u00ADX", "nine"},
		{"space removed", "carol@acme", "password", ""},
		{"two spaces", "carol@acme", "pass  word", ""},
		{"case differs", "nine@acme", "ix", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScramServer(a.ScramLookup(tenant.Default))
			err := scramRun(t, s, &scramClient{user: tc.user, pw: tc.pw, cnonce: "c-nonce"})
			if tc.wantUser == "" {
				if !errors.Is(err, ErrBadCredentials) || s.Principal() != nil {
					t.Fatalf("err %v, principal %+v; want a refusal", err, s.Principal())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p := s.Principal(); p.Tenant != "acme" || p.User != tc.wantUser {
				t.Fatalf("principal %+v", p)
			}
		})
	}
}

func TestScramUserNameRefusedBySASLprep(t *testing.T) {
	// A user name SASLprep refuses names no user: the exchange goes on
	// like an unknown user's (same server-first shape) and fails at the
	// proof with ErrBadCredentials, not at once as malformed.
	for _, name := range []string{"us\u0007er", "\u0627\u0031", "\u00AD", "us\uE000er@acme"} {
		s := rfcServer(t)
		c := &scramClient{user: name, pw: "pencil", cnonce: "abc"}
		sf, done, err := s.Step([]byte(c.first()))
		if err != nil || done {
			t.Fatalf("%+q: client-first refused: %v", name, err)
		}
		if attrs := strings.Split(string(sf), ","); len(attrs) != 3 || len(attrs[1]) != len("s=W22ZaJ0SNY7soEsUEjb6gQ==") || attrs[2] != "i=4096" {
			t.Fatalf("%+q: server-first %q", name, sf)
		}
		out, done, err := s.Step([]byte(c.final(t, string(sf))))
		if !errors.Is(err, ErrBadCredentials) || !errors.Is(err, ErrSASLprep) || errors.Is(err, ErrScramMalformed) ||
			!done || out != nil || s.Principal() != nil {
			t.Fatalf("%+q: out %q done=%v err=%v", name, out, done, err)
		}
	}
}

func TestScramVerifierStoredBeforeSASLprep(t *testing.T) {
	// A verifier computed from the raw bytes of a password that SASLprep
	// changes (as before SASLprep was applied) refuses a compliant client
	// even with the very same password, and ScramMatches says it does not
	// match: the password must be set again (docs/amqp.md). There is no
	// retry with the raw password: the server never sees one.
	const pw = "pass\u00A0word"
	salt := []byte("0123456789abcdef")
	salted, err := pbkdf2.Key(sha256.New, pw, salt, 4096, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	stored := sha256.Sum256(hmacSHA256(salted, "Client Key"))
	old := &tenant.ScramCredential{Salt: salt, Iterations: 4096, StoredKey: stored[:], ServerKey: hmacSHA256(salted, "Server Key")}
	if ScramMatches(old, pw) {
		t.Fatal("ScramMatches accepts a verifier of the unprepared password")
	}
	f := &fakeUsers{tenants: map[string]*tenant.Tenant{"acme": {Name: "acme"}},
		users: map[string]*tenant.User{"acme/old": {Name: "old", Tenant: "acme", Scram: old, Roles: []tenant.Role{tenant.RoleApp}}}}
	s := NewScramServer(New(f).ScramLookup(tenant.Default))
	if err := scramRun(t, s, &scramClient{user: "old@acme", pw: pw, cnonce: "n"}); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("err %v", err)
	}
}

func TestScramMalformedClientFirst(t *testing.T) {
	for _, m := range []string{
		"", "n", "n,", "n,,", "x,,n=user,r=abc", "p=tls-unique,,n=user,r=abc",
		"n,b=x,n=user,r=abc", "n,a=,n=user,r=abc", "n,,m=ext,n=user,r=abc",
		"n,,n=user", "n,,r=abc,n=user", "n,,n=,r=abc", "n,,n=us=er,r=abc", "n,,n=us=2,r=abc",
		"n,,n=user,r=", "n,,n=user,r=a b", "n,,n=user,r=abc,=x", "n,,n=user,r=abc,1=x",
		"n,,n=\xff,r=abc", "n,,n=a\x00b,r=abc",
	} {
		s := rfcServer(t)
		out, done, err := s.Step([]byte(m))
		if !errors.Is(err, ErrScramMalformed) || !done || out != nil {
			t.Errorf("%q: out %q done=%v err=%v", m, out, done, err)
		}
		// The exchange is over: a client-final is refused, not checked.
		if _, _, err := s.Step([]byte(rfcClientFinal)); !errors.Is(err, ErrScramMalformed) {
			t.Errorf("%q: step after failure: %v", m, err)
		}
	}
	// Extensions are ignored; "y" (client could bind, thinks we cannot) is fine.
	for _, m := range []string{"n,,n=user,r=abc,x=1", "y,,n=user,r=abc", "n,a=acme,n=user,r=abc"} {
		if _, _, err := rfcServer(t).Step([]byte(m)); err != nil {
			t.Errorf("%q: %v", m, err)
		}
	}
}

func TestSetPasswordAndJSON(t *testing.T) {
	u := &tenant.User{Name: "u", Tenant: "t", Roles: []tenant.Role{tenant.RoleApp}}
	if err := SetPassword(u, "pw"); err != nil {
		t.Fatal(err)
	}
	// Both the bcrypt hash (PLAIN) and the verifier (SCRAM) accept it.
	f := &fakeUsers{tenants: map[string]*tenant.Tenant{"t": {Name: "t"}}, users: map[string]*tenant.User{"t/u": u}}
	a := New(f)
	if _, err := a.Authenticate("t", "u", "pw"); err != nil {
		t.Fatal(err)
	}
	s := NewScramServer(a.ScramLookup(tenant.Default))
	c := &scramClient{user: "u@t", pw: "pw", cnonce: "n"}
	sf, _, err := s.Step([]byte(c.first()))
	if err != nil {
		t.Fatal(err)
	}
	if sfin, _, err := s.Step([]byte(c.final(t, string(sf)))); err != nil || !c.verify(string(sfin)) {
		t.Fatalf("scram: %q %v", sfin, err)
	}
	b, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	var back tenant.User
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Scram == nil || !bytes.Equal(back.Scram.StoredKey, u.Scram.StoredKey) || !bytes.Equal(back.Scram.ServerKey, u.Scram.ServerKey) ||
		!bytes.Equal(back.Scram.Salt, u.Scram.Salt) || back.Scram.Iterations != ScramIterations {
		t.Fatalf("round trip: %s", b)
	}
	if !strings.Contains(string(b), `"scram":{"salt":"`) {
		t.Fatalf("json %s", b)
	}
}

// FuzzScram feeds arbitrary client messages to both steps of an exchange
// for a real user: no panics, and success only with the right proof.
func FuzzScram(f *testing.F) {
	f.Add([]byte(rfcClientFirst), []byte(rfcClientFinal))
	f.Add([]byte("n,a=acme,n=us=2Cer,r=abc,x=1"), []byte("c=biwsYT1hY21lLA==,r=abc,p=AAAA"))
	f.Add([]byte("y,,n=user,r=abc"), []byte("c=eSws,r=abc%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,x=y,p="))
	f.Add([]byte("n,,n=us\u00ADer,r=rOprNGfwEbeRWgbNEkqO"), []byte(rfcClientFinal)) // SASLprep maps the name to "user"
	f.Add([]byte("n,,n=us\u0007er,r=abc"), []byte("c=biws,r=abc%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA"))
	f.Fuzz(func(t *testing.T, first, final []byte) {
		s := rfcServer(t)
		out, done, err := s.Step(first)
		if err != nil {
			if !done || out != nil {
				t.Fatalf("error without end: %v", err)
			}
			return
		}
		out, done, err = s.Step(final)
		if !done {
			t.Fatal("exchange not over after client-final")
		}
		if err == nil {
			if string(first) != rfcClientFirst || !strings.HasSuffix(string(final), ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=") ||
				string(out) != rfcServerFinal || s.Principal() == nil {
				t.Fatalf("accepted %q / %q", first, final)
			}
		} else if s.Principal() != nil {
			t.Fatal("principal after failure")
		}
	})
}
