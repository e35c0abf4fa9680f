package registry

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
)

// Bucket names in the system account.
const (
	bucketDevices     = "throng_devices"
	bucketCredentials = "throng_credentials"
	bucketAuthIDs     = "throng_authids"
)

// Hono's default device-id pattern (RegistryManagementConstants
// DEFAULT_REGEX_DEVICE_ID) and its default pattern for the auth-id of
// hashed-password credentials (DEFAULT_REGEX_USERNAME: the auth-id is the
// user name part of "auth-id@tenant", so it has no '@').
var (
	deviceIDRE = regexp.MustCompile(`^[a-zA-Z0-9_.:=-]+$`)
	usernameRE = regexp.MustCompile(`^[a-zA-Z0-9_=.-]+$`)
)

// Length bounds keep every key well inside NATS's subject limits.
const (
	maxIDLen     = 256
	maxAuthIDLen = 1024
)

// ValidateDeviceID checks a device id against Hono's default pattern
// ^[a-zA-Z0-9-_\.:=]+$ (at most 256 characters).
func ValidateDeviceID(id string) error {
	if len(id) > maxIDLen || !deviceIDRE.MatchString(id) {
		return fmt.Errorf("%w: device id %q (want letters, digits and '-_.:=', at most %d)", ErrInvalid, id, maxIDLen)
	}
	return nil
}

// encodeID turns a device id into one KV key token: letters, digits, '-'
// and '_' stay, every other byte becomes "=XX" (upper-case hex). A valid
// id thus never yields an empty token or a '.', and the encoding is
// reversible and readable ("dev.1" → "dev=2E1").
func encodeID(id string) string {
	const hex = "0123456789ABCDEF"
	plain := true
	for i := 0; i < len(id); i++ {
		if !plainByte(id[i]) {
			plain = false
			break
		}
	}
	if plain {
		return id
	}
	var b strings.Builder
	b.Grow(len(id) + 8)
	for i := 0; i < len(id); i++ {
		c := id[i]
		if plainByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func plainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func decodeID(s string) (string, bool) {
	if strings.IndexByte(s, '=') < 0 {
		return s, s != ""
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), len(b) > 0
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// deviceKey is the key of a device in the devices and credentials buckets.
func deviceKey(tenant, id string) string { return tenant + "." + encodeID(id) }

// splitDeviceKey parses "<tenant>.<encoded id>"; a key without a '.' is
// a tenant's purge marker (DeleteDevices) and yields ok with id "".
func splitDeviceKey(k string) (tenant, id string, ok bool) {
	t, enc, found := strings.Cut(k, ".")
	if !found {
		return k, "", true
	}
	id, ok = decodeID(enc)
	return t, id, ok
}

// authIDKey is the key of the auth-id index: "<tenant>.<type>.<base64url
// of the auth-id without padding>" (auth-ids hold anything, x509 subject
// DNs spaces and commas).
func authIDKey(tenant, typ, authID string) string {
	return tenant + "." + typ + "." + base64.RawURLEncoding.EncodeToString([]byte(authID))
}
