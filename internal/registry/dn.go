package registry

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"strings"
)

// x509 auth-ids are subject DNs in the string form of RFC 2253. Clients
// write them by hand ("CN=dev1, O=ACME"), Go renders certificates'
// subjects its own way: both go through NormalizeSubjectDN, at
// registration and at Lookup, so they meet in one canonical form.

// attribute type names by OID, and the names accepted as aliases.
var dnNames = map[string]string{
	"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
	"2.5.4.11": "OU", "2.5.4.9": "STREET", "2.5.4.5": "SERIALNUMBER", "2.5.4.17": "POSTALCODE",
	"0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
	"1.2.840.113549.1.9.1": "EMAILADDRESS",
	"S":                    "ST", "E": "EMAILADDRESS",
}

// NormalizeSubjectDN returns the canonical RFC 2253 form of a subject DN:
// attribute types upper-case (known OIDs by their names), no spaces
// around separators, values unescaped and escaped again the RFC 2253 way.
// RDN order is kept (RFC 2253 order is the reverse of the certificate's).
func NormalizeSubjectDN(dn string) (string, error) {
	var out strings.Builder
	rdns, err := parseDN(dn)
	if err != nil {
		return "", err
	}
	for i, rdn := range rdns {
		if i > 0 {
			out.WriteByte(',')
		}
		for j, ava := range rdn {
			if j > 0 {
				out.WriteByte('+')
			}
			out.WriteString(ava[0])
			out.WriteByte('=')
			out.WriteString(ava[1])
		}
	}
	return out.String(), nil
}

// SubjectDN is a certificate's subject as an x509-cert auth-id: its RDNs
// as the certificate orders them (cert.Subject would reorder them Go's
// way), in RFC 2253 string order (the reverse), normalized.
func SubjectDN(cert *x509.Certificate) string {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(cert.RawSubject, &rdns); err != nil || len(rest) != 0 {
		rdns = cert.Subject.ToRDNSequence()
	}
	s := rdnString(rdns)
	if n, err := NormalizeSubjectDN(s); err == nil {
		return n
	}
	return s
}

// parseDN splits a DN into RDNs of (type, escaped value) pairs.
func parseDN(dn string) ([][][2]string, error) {
	bad := func(why string) error { return fmt.Errorf("%w: subject DN %q: %s", ErrInvalid, dn, why) }
	var rdns [][][2]string
	var rdn [][2]string
	i := 0
	n := len(dn)
	for {
		// attribute type
		for i < n && dn[i] == ' ' {
			i++
		}
		start := i
		for i < n && dn[i] != '=' && dn[i] != ',' && dn[i] != '+' && dn[i] != ';' {
			i++
		}
		if i >= n || dn[i] != '=' {
			return nil, bad("attribute without '='")
		}
		typ := strings.ToUpper(strings.TrimSpace(dn[start:i]))
		typ = strings.TrimPrefix(typ, "OID.")
		if typ == "" {
			return nil, bad("empty attribute type")
		}
		for _, c := range typ {
			if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
				return nil, bad("attribute type " + typ)
			}
		}
		if name, ok := dnNames[typ]; ok {
			typ = name
		}
		i++ // '='
		for i < n && dn[i] == ' ' {
			i++
		}
		// value
		var val []byte
		hexForm := false
		switch {
		case i < n && dn[i] == '#':
			hexForm = true
			start := i
			for i < n && dn[i] != ',' && dn[i] != '+' && dn[i] != ';' && dn[i] != ' ' {
				i++
			}
			val = []byte(strings.ToLower(dn[start:i]))
			for i < n && dn[i] == ' ' {
				i++
			}
		case i < n && dn[i] == '"':
			i++
			for i < n && dn[i] != '"' {
				if dn[i] == '\\' && i+1 < n {
					i++
				}
				val = append(val, dn[i])
				i++
			}
			if i >= n {
				return nil, bad("unterminated quoted value")
			}
			i++
			for i < n && dn[i] == ' ' {
				i++
			}
		default:
			trailing := 0 // unescaped trailing spaces to drop
			for i < n && dn[i] != ',' && dn[i] != '+' && dn[i] != ';' {
				c := dn[i]
				if c == '\\' {
					if i+1 >= n {
						return nil, bad("trailing backslash")
					}
					if h1, ok1 := unhexAny(dn[i+1]); ok1 && i+2 < n {
						if h2, ok2 := unhexAny(dn[i+2]); ok2 {
							val = append(val, h1<<4|h2)
							i += 3
							trailing = 0
							continue
						}
					}
					val = append(val, dn[i+1])
					i += 2
					trailing = 0
					continue
				}
				if c == ' ' {
					trailing++
				} else {
					trailing = 0
				}
				val = append(val, c)
				i++
			}
			val = val[:len(val)-trailing]
		}
		v := string(val)
		if !hexForm {
			v = escapeDNValue(v)
		}
		rdn = append(rdn, [2]string{typ, v})
		if i >= n {
			rdns = append(rdns, rdn)
			return rdns, nil
		}
		switch dn[i] {
		case '+':
		case ',', ';':
			rdns = append(rdns, rdn)
			rdn = nil
		default:
			return nil, bad("unexpected character")
		}
		i++
	}
}

func unhexAny(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// escapeDNValue escapes a value as RFC 2253 section 2.4 asks.
func escapeDNValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case strings.IndexByte(",+\"\\<>;", c) >= 0,
			c == '#' && i == 0,
			c == ' ' && (i == 0 || i == len(v)-1):
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// rdnString writes an RDN sequence as RFC 2253 does (last RDN first):
// known attribute types by name with their string values, others as the
// dotted OID with the hex of the value's DER encoding.
func rdnString(rdns pkix.RDNSequence) string {
	var b strings.Builder
	for i := len(rdns) - 1; i >= 0; i-- {
		if i < len(rdns)-1 {
			b.WriteByte(',')
		}
		for j, atv := range rdns[i] {
			if j > 0 {
				b.WriteByte('+')
			}
			oid := atv.Type.String()
			name, known := dnNames[oid]
			if str, ok := atv.Value.(string); ok && known {
				b.WriteString(name + "=" + escapeDNValue(str))
				continue
			}
			der, _ := asn1.Marshal(atv.Value)
			b.WriteString(oid + "=#" + hex.EncodeToString(der))
		}
	}
	return b.String()
}

// ApplyTemplate replaces Hono's identity template placeholders
// ({{subject-dn}}, {{subject-cn}}, {{subject-ou}}, {{subject-o}}) in a
// trust anchor's auth-id-template or auto-provisioning-device-id-template
// with the client certificate's values; dn is its subject DN (SubjectDN).
func ApplyTemplate(tmpl, dn string, cert *x509.Certificate) string {
	first := func(v []string) string {
		if len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return strings.NewReplacer(
		"{{subject-dn}}", dn,
		"{{subject-cn}}", cert.Subject.CommonName,
		"{{subject-ou}}", first(cert.Subject.OrganizationalUnit),
		"{{subject-o}}", first(cert.Subject.Organization),
	).Replace(tmpl)
}
