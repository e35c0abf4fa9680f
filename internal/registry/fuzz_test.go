package registry

import (
	"strings"
	"testing"
)

// FuzzSubjectDN: the DN parser never panics, and its canonical form is a
// fixed point (normalizing it again changes nothing): auth-ids of x509
// credentials are compared in that form.
func FuzzSubjectDN(f *testing.F) {
	for _, s := range []string{
		"CN=Device 1,O=ACME Corporation",
		"cn=dev1, ou=iot , o=acme",
		`CN=a\,b,O=x\+y`,
		"CN=#0403616263,O=x",
		"2.5.4.3=dev,1.2.840.113549.1.9.1=a@b.c",
		"CN=a+OU=b,O=c",
		`CN=" quoted ",O=q`,
		"", ",", "=", "CN=", `CN=\`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dn string) {
		n, err := NormalizeSubjectDN(dn)
		if err != nil {
			return
		}
		n2, err := NormalizeSubjectDN(n)
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", n, dn, err)
		}
		if n2 != n {
			t.Fatalf("not a fixed point: %q → %q → %q", dn, n, n2)
		}
	})
}

// FuzzDeviceIDKey: every valid device id encodes to one KV key token
// that decodes back to it.
func FuzzDeviceIDKey(f *testing.F) {
	for _, s := range []string{"4711", "dev.1", "a:b=c", "_-_", "x==2E", "=", ".", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if ValidateDeviceID(id) != nil {
			return
		}
		k := encodeID(id)
		if k == "" || strings.ContainsAny(k, ".*> ") {
			t.Fatalf("id %q → key token %q", id, k)
		}
		for i := 0; i < len(k); i++ {
			if !plainByte(k[i]) && k[i] != '=' {
				t.Fatalf("id %q → key token %q with %q", id, k, k[i])
			}
		}
		if back, ok := decodeID(k); !ok || back != id {
			t.Fatalf("id %q → %q → %q %v", id, k, back, ok)
		}
	})
}
