package auth

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/tenant"
)

func TestSASLprep(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string // want "" for an error
	}{
		// RFC 4013 section 3, the examples in its order.
		{"soft hyphen mapped to nothing", "I\u00ADX", "IX"},
		{"no transformation", "user", "user"},
		{"case preserved", "USER", "USER"},
		{"NFKC, input in ISO 8859-1", "\u00AA", "a"},
		{"NFKC, matches the first", "\u2168", "IX"},
		{"prohibited character", "\u0007", ""},
		{"bidirectional check", "\u0627\u0031", ""},

		// Beyond the RFC's table.
		{"printable ASCII unchanged", " !\"#$%&'()*+,-./0123456789:;<=>?@AZ[\\]^_`az{|}~", " !\"#$%&'()*+,-./0123456789:;<=>?@AZ[\\]^_`az{|}~"},
		{"no-break space to space", "pass\u00A0word", "pass word"},
		{"other non-ASCII spaces", "a\u2002b\u3000c", "a b c"},
		{"zero-width joiner mapped to nothing", "pass\u200Dword", "password"},
		{"zero-width space mapped to nothing (B.1 before C.1.2)", "a\u200Bb", "ab"},
		{"fullwidth letters and at sign", "\uFF41\uFF4C\uFF49\uFF43\uFF45\uFF20acme", "alice@acme"},
		{"composed and decomposed agree", "cafe\u0301", "caf\u00E9"},
		{"right-to-left throughout", "\u0627\u0031\u0628", "\u0627\u0031\u0628"},
		{"ASCII control (tab)", "pass\tword", ""},
		{"DEL", "pass\x7Fword", ""},
		{"private use", "pass\uE000word", ""},
		{"non-character", "pass\uFFFEword", ""},
		{"unassigned (stored string)", "pass\U000E0080word", ""},
		{"left-to-right and right-to-left mixed", "a\u0627b", ""},
		{"empty", "", ""},
		{"empty after mapping", "\u00AD\u200B", ""},
		{"invalid UTF-8", "pass\xffword", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SASLprep(tc.in)
			if tc.want == "" {
				if !errors.Is(err, ErrSASLprep) || got != "" {
					t.Fatalf("SASLprep(%+q) = %+q, %v; want an ErrSASLprep error", tc.in, got, err)
				}
				// The message may end up in a log or an API answer: it
				// must not quote what may be a password.
				if msg := err.Error(); tc.in != "" && strings.Contains(msg, tc.in) || strings.Contains(msg, `\u`) {
					t.Fatalf("error quotes the input: %q", msg)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("SASLprep(%+q) = %+q, %v; want %+q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestScramVerifierOfASCIIUnchanged(t *testing.T) {
	// SASLprep is the identity on printable ASCII: verifiers are those of
	// the raw bytes, as before it was applied, so stored ones keep working.
	salt := []byte("0123456789abcdef")
	for _, pw := range []string{"pencil", "s3cret", "pass word", " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"} {
		c, err := ScramCredentialFor(pw, salt, 4096)
		if err != nil {
			t.Fatal(err)
		}
		salted, err := pbkdf2.Key(sha256.New, pw, salt, 4096, sha256.Size)
		if err != nil {
			t.Fatal(err)
		}
		stored := sha256.Sum256(hmacSHA256(salted, "Client Key"))
		if !bytes.Equal(c.StoredKey, stored[:]) || !bytes.Equal(c.ServerKey, hmacSHA256(salted, "Server Key")) {
			t.Errorf("%q: verifier differs from the raw password's", pw)
		}
	}
}

func TestScramVerifierOfPreparedPassword(t *testing.T) {
	salt := []byte("0123456789abcdef")
	want, err := ScramCredentialFor("pass word", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"pass\u00A0wo\u00ADrd", "pass\u2002word", "pass word"} {
		c, err := ScramCredentialFor(pw, salt, 4096)
		if err != nil || !bytes.Equal(c.StoredKey, want.StoredKey) || !bytes.Equal(c.ServerKey, want.ServerKey) {
			t.Errorf("%+q: not the verifier of its preparation (%v)", pw, err)
		}
		if !ScramMatches(want, pw) {
			t.Errorf("ScramMatches(%+q) = false", pw)
		}
	}
	if ScramMatches(want, "password") {
		t.Error("ScramMatches accepts a different password")
	}
}

func TestSetPasswordRefusedBySASLprep(t *testing.T) {
	for _, pw := range []string{"pass\u0007word", "\u0627\u0031", "\u00AD", "pass\tword"} {
		u := &tenant.User{Name: "u", Tenant: "t", Roles: []tenant.Role{tenant.RoleApp}}
		if err := SetPassword(u, pw); !errors.Is(err, ErrSASLprep) || !strings.HasPrefix(err.Error(), "password refused by SASLprep") {
			t.Errorf("SetPassword(%+q): %v", pw, err)
		}
		if u.PasswordHash != "" || u.Scram != nil {
			t.Errorf("SetPassword(%+q) changed the user", pw)
		}
		if _, err := NewScramCredential(pw); !errors.Is(err, ErrSASLprep) {
			t.Errorf("NewScramCredential(%+q): %v", pw, err)
		}
	}
	// A verifier cannot match a password SASLprep refuses.
	c, err := ScramCredentialFor("pencil", []byte("0123456789abcdef"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if ScramMatches(c, "pencil\u0007") {
		t.Error("ScramMatches accepts a refused password")
	}
}
