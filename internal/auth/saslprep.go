package auth

// SASLprep (RFC 4013), the stringprep profile (RFC 3454) that SCRAM (RFC
// 5802 section 5.1, RFC 7677) requires for user names and passwords: it
// maps non-ASCII spaces to U+0020 and "commonly mapped to nothing"
// characters (soft hyphen, zero-width joiners, variation selectors) away,
// normalizes to NFKC, and refuses control, private-use, non-character and
// unassigned code points and strings that mix right-to-left and
// left-to-right text.
//
// Where throng applies it:
//   - the password of every SCRAM verifier (ScramCredentialFor, hence
//     SetPassword, NewScramCredential and ScramMatches): the client
//     prepares the password before hashing it, so a verifier of the raw
//     string would refuse a compliant client whenever preparation changes
//     it;
//   - the user name of a SCRAM client-first message, after =2C/=3D are
//     decoded and before the lookup.
//
// Not to the bcrypt hash that PLAIN, MQTT, HTTP Basic and the admin API
// check (Authenticate): those receive the password in clear and compare
// it byte for byte, as before, so every stored hash keeps working; see
// docs/amqp.md.

import (
	"errors"
	"fmt"

	"github.com/xdg-go/stringprep"
)

// ErrSASLprep is wrapped by the errors of SASLprep: the string contains a
// character RFC 4013 prohibits, breaks its bidirectional-text rule, or
// prepares to the empty string.
var ErrSASLprep = errors.New("refused by SASLprep (RFC 4013)")

// SASLprep returns s prepared with the SASLprep profile (RFC 4013) as a
// stored string (unassigned code points are refused). Printable ASCII is
// returned unchanged, so ASCII names and passwords hash as they did before
// SASLprep was applied. Errors wrap ErrSASLprep and never quote s: it may
// be a password.
func SASLprep(s string) (string, error) {
	if printableASCII(s) {
		return s, nil
	}
	out, err := stringprep.SASLprep.Prepare(s)
	if err != nil {
		var e stringprep.Error
		if errors.As(err, &e) {
			// e.Msg names the rule; e.Rune is left out (a password's).
			return "", fmt.Errorf("%w: %s", ErrSASLprep, e.Msg)
		}
		return "", fmt.Errorf("%w: %v", ErrSASLprep, err)
	}
	if out == "" {
		return "", fmt.Errorf("%w: empty after preparation", ErrSASLprep)
	}
	return out, nil
}

// printableASCII reports whether s is non-empty and all of U+0020..U+007E,
// on which SASLprep is the identity (no mapping, NFKC leaves ASCII alone,
// nothing prohibited, no right-to-left characters).
func printableASCII(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
