package encoding

import (
	"encoding/hex"
	"time"
)

// Format codes (constructors) of the AMQP 1.0 type system, part 1.6.
const (
	CodeDescribed  byte = 0x00
	CodeNull       byte = 0x40
	CodeTrue       byte = 0x41
	CodeFalse      byte = 0x42
	CodeUint0      byte = 0x43
	CodeUlong0     byte = 0x44
	CodeList0      byte = 0x45
	CodeUbyte      byte = 0x50
	CodeByte       byte = 0x51
	CodeSmallUint  byte = 0x52
	CodeSmallUlong byte = 0x53
	CodeSmallInt   byte = 0x54
	CodeSmallLong  byte = 0x55
	CodeBool       byte = 0x56
	CodeUshort     byte = 0x60
	CodeShort      byte = 0x61
	CodeUint       byte = 0x70
	CodeInt        byte = 0x71
	CodeFloat      byte = 0x72
	CodeChar       byte = 0x73
	CodeDecimal32  byte = 0x74
	CodeUlong      byte = 0x80
	CodeLong       byte = 0x81
	CodeDouble     byte = 0x82
	CodeTimestamp  byte = 0x83
	CodeDecimal64  byte = 0x84
	CodeDecimal128 byte = 0x94
	CodeUUID       byte = 0x98
	CodeVbin8      byte = 0xa0
	CodeStr8       byte = 0xa1
	CodeSym8       byte = 0xa3
	CodeVbin32     byte = 0xb0
	CodeStr32      byte = 0xb1
	CodeSym32      byte = 0xb3
	CodeList8      byte = 0xc0
	CodeMap8       byte = 0xc1
	CodeList32     byte = 0xd0
	CodeMap32      byte = 0xd1
	CodeArray8     byte = 0xe0
	CodeArray32    byte = 0xf0
)

// MaxDepth bounds the nesting of compound and described values during
// decoding so hostile input cannot exhaust the stack.
const MaxDepth = 64

// Symbol is the AMQP symbol type: a short ASCII string used for names and
// keys (capabilities, annotation keys, error conditions, descriptors).
type Symbol string

// UUID is the AMQP uuid type (RFC 4122, network byte order).
type UUID [16]byte

// String returns the canonical 8-4-4-4-12 form.
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// Char is the AMQP char type: a single UTF-32BE code point.
type Char rune

// Decimal32 is an IEEE 754-2008 decimal32 kept as its raw big-endian bytes.
type Decimal32 [4]byte

// Decimal64 is an IEEE 754-2008 decimal64 kept as its raw big-endian bytes.
type Decimal64 [8]byte

// Decimal128 is an IEEE 754-2008 decimal128 kept as its raw big-endian bytes.
type Decimal128 [16]byte

// Pair is one key/value entry of a Map.
type Pair struct {
	Key, Value any
}

// Map is an AMQP map. It keeps the wire order and allows keys of any AMQP
// type (symbols, strings, ulongs, ...). Lookups are linear: AMQP maps in
// frames are small. Uniqueness of keys is not enforced when decoding.
type Map []Pair

// Get returns the value stored under key, compared with Equal.
func (m Map) Get(key any) (any, bool) {
	for _, p := range m {
		if Equal(p.Key, key) {
			return p.Value, true
		}
	}
	return nil, false
}

// GetSymbol returns the value stored under the symbol key k, without boxing k.
func (m Map) GetSymbol(k Symbol) (any, bool) {
	for _, p := range m {
		if s, ok := p.Key.(Symbol); ok && s == k {
			return p.Value, true
		}
	}
	return nil, false
}

// Array is an AMQP array: every element has the same type and is encoded
// under a single constructor. Encoding fails if the elements differ in type.
type Array []any

// Described is a described value whose descriptor is not known to this
// package: Descriptor is a uint64 (numeric descriptor) or a Symbol.
type Described struct {
	Descriptor any
	Value      any
}

// Code returns d's numeric descriptor code, translating the symbolic
// names of the descriptors defined by the core specification.
func (d Described) Code() (uint64, bool) {
	switch v := d.Descriptor.(type) {
	case uint64:
		return v, true
	case Symbol:
		c, ok := descriptorNames[string(v)]
		return c, ok
	}
	return 0, false
}

// timeFromMillis converts an AMQP timestamp (ms since the Unix epoch) to a UTC time.
func timeFromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
