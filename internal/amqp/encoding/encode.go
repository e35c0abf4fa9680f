package encoding

import (
	"encoding/binary"
	"math"
	"time"
)

// Marshaler is implemented by the composite types of this package and of
// package frames: MarshalAMQP appends the type's AMQP encoding to dst.
type Marshaler interface {
	MarshalAMQP(dst []byte) ([]byte, error)
}

// Unmarshaler is implemented by the composite types of this package and of
// package frames: UnmarshalAMQP reads the type's encoding from r.
type Unmarshaler interface {
	UnmarshalAMQP(r *Reader) error
}

// AppendNull appends the null value.
func AppendNull(dst []byte) []byte { return append(dst, CodeNull) }

// AppendBool appends a boolean using the one-byte true/false encodings.
func AppendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, CodeTrue)
	}
	return append(dst, CodeFalse)
}

// AppendUbyte appends a ubyte.
func AppendUbyte(dst []byte, v uint8) []byte { return append(dst, CodeUbyte, v) }

// AppendUshort appends a ushort.
func AppendUshort(dst []byte, v uint16) []byte {
	return binary.BigEndian.AppendUint16(append(dst, CodeUshort), v)
}

// AppendUint appends a uint in its smallest encoding (uint0, smalluint, uint).
func AppendUint(dst []byte, v uint32) []byte {
	switch {
	case v == 0:
		return append(dst, CodeUint0)
	case v <= math.MaxUint8:
		return append(dst, CodeSmallUint, byte(v))
	}
	return binary.BigEndian.AppendUint32(append(dst, CodeUint), v)
}

// AppendUlong appends a ulong in its smallest encoding (ulong0, smallulong, ulong).
func AppendUlong(dst []byte, v uint64) []byte {
	switch {
	case v == 0:
		return append(dst, CodeUlong0)
	case v <= math.MaxUint8:
		return append(dst, CodeSmallUlong, byte(v))
	}
	return binary.BigEndian.AppendUint64(append(dst, CodeUlong), v)
}

// AppendByte appends a (signed) byte.
func AppendByte(dst []byte, v int8) []byte { return append(dst, CodeByte, byte(v)) }

// AppendShort appends a short.
func AppendShort(dst []byte, v int16) []byte {
	return binary.BigEndian.AppendUint16(append(dst, CodeShort), uint16(v))
}

// AppendInt appends an int in its smallest encoding (smallint, int).
func AppendInt(dst []byte, v int32) []byte {
	if v >= math.MinInt8 && v <= math.MaxInt8 {
		return append(dst, CodeSmallInt, byte(int8(v)))
	}
	return binary.BigEndian.AppendUint32(append(dst, CodeInt), uint32(v))
}

// AppendLong appends a long in its smallest encoding (smalllong, long).
func AppendLong(dst []byte, v int64) []byte {
	if v >= math.MinInt8 && v <= math.MaxInt8 {
		return append(dst, CodeSmallLong, byte(int8(v)))
	}
	return binary.BigEndian.AppendUint64(append(dst, CodeLong), uint64(v))
}

// AppendFloat appends an IEEE 754 binary32 float.
func AppendFloat(dst []byte, v float32) []byte {
	return binary.BigEndian.AppendUint32(append(dst, CodeFloat), math.Float32bits(v))
}

// AppendDouble appends an IEEE 754 binary64 double.
func AppendDouble(dst []byte, v float64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, CodeDouble), math.Float64bits(v))
}

// AppendDecimal32 appends a decimal32 from its raw bytes.
func AppendDecimal32(dst []byte, v Decimal32) []byte {
	return append(append(dst, CodeDecimal32), v[:]...)
}

// AppendDecimal64 appends a decimal64 from its raw bytes.
func AppendDecimal64(dst []byte, v Decimal64) []byte {
	return append(append(dst, CodeDecimal64), v[:]...)
}

// AppendDecimal128 appends a decimal128 from its raw bytes.
func AppendDecimal128(dst []byte, v Decimal128) []byte {
	return append(append(dst, CodeDecimal128), v[:]...)
}

// AppendChar appends a char (UTF-32BE).
func AppendChar(dst []byte, v Char) []byte {
	return binary.BigEndian.AppendUint32(append(dst, CodeChar), uint32(v))
}

// AppendTimestampMillis appends a timestamp given in milliseconds since the Unix epoch.
func AppendTimestampMillis(dst []byte, ms int64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, CodeTimestamp), uint64(ms))
}

// AppendTimestamp appends t as a timestamp, truncated to milliseconds.
func AppendTimestamp(dst []byte, t time.Time) []byte {
	return AppendTimestampMillis(dst, t.UnixMilli())
}

// AppendUUID appends a uuid.
func AppendUUID(dst []byte, v UUID) []byte { return append(append(dst, CodeUUID), v[:]...) }

// AppendBinary appends binary data as vbin8 or vbin32.
func AppendBinary(dst []byte, v []byte) []byte {
	return append(appendVarHeader(dst, CodeVbin8, CodeVbin32, len(v)), v...)
}

// AppendString appends a UTF-8 string as str8 or str32. The bytes are not validated.
func AppendString(dst []byte, v string) []byte {
	return append(appendVarHeader(dst, CodeStr8, CodeStr32, len(v)), v...)
}

// AppendSymbol appends a symbol as sym8 or sym32.
func AppendSymbol(dst []byte, v Symbol) []byte {
	return append(appendVarHeader(dst, CodeSym8, CodeSym32, len(v)), v...)
}

func appendVarHeader(dst []byte, code8, code32 byte, n int) []byte {
	if n <= math.MaxUint8 {
		return append(dst, code8, byte(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, code32), uint32(n))
}

// AppendDescriptor appends the described-type constructor 0x00 followed by
// the numeric descriptor code (smallulong when it fits).
func AppendDescriptor(dst []byte, code uint64) []byte {
	if code <= math.MaxUint8 {
		return append(dst, CodeDescribed, CodeSmallUlong, byte(code))
	}
	return binary.BigEndian.AppendUint64(append(dst, CodeDescribed, CodeUlong), code)
}

// AppendSymbolArray appends syms as an array of symbols (sym8 elements when
// every symbol fits, otherwise sym32). A nil slice is encoded as null; an
// empty non-nil slice as an empty array.
func AppendSymbolArray(dst []byte, syms []Symbol) []byte {
	if syms == nil {
		return AppendNull(dst)
	}
	elem := CodeSym8
	for _, s := range syms {
		if len(s) > math.MaxUint8 {
			elem = CodeSym32
			break
		}
	}
	dst, c := beginCompound(dst)
	dst = append(dst, elem)
	for _, s := range syms {
		if elem == CodeSym8 {
			dst = append(dst, byte(len(s)))
		} else {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
		}
		dst = append(dst, s...)
	}
	return c.end(dst, CodeArray8, CodeArray32, len(syms))
}

// compound records where a list, map or array header was reserved so the
// header can be written once the size is known.
type compound struct{ start int }

// compoundReserve is the size of the reserved header: code, 4-byte size, 4-byte count.
const compoundReserve = 9

func beginCompound(dst []byte) ([]byte, compound) {
	c := compound{start: len(dst)}
	return append(dst, 0, 0, 0, 0, 0, 0, 0, 0, 0), c
}

// end writes the header in the smallest form: the 8-bit form moves the
// body down by 6 bytes, which for small compounds is cheaper than guessing.
func (c compound) end(dst []byte, code8, code32 byte, count int) []byte {
	body := len(dst) - c.start - compoundReserve
	if body+1 <= math.MaxUint8 && count <= math.MaxUint8 {
		dst[c.start] = code8
		dst[c.start+1] = byte(body + 1)
		dst[c.start+2] = byte(count)
		copy(dst[c.start+3:], dst[c.start+compoundReserve:])
		return dst[:len(dst)-6]
	}
	dst[c.start] = code32
	binary.BigEndian.PutUint32(dst[c.start+1:], uint32(body+4))
	binary.BigEndian.PutUint32(dst[c.start+5:], uint32(count))
	return dst
}

// ListWriter encodes the fields of a composite type as a list, trimming
// trailing null fields and picking list0, list8 or list32.
//
//	dst, l := encoding.BeginList(dst)
//	dst = encoding.AppendString(dst, name); l.Field(dst)
//	dst = l.Null(dst)                       // absent field
//	dst = l.End(dst)
type ListWriter struct {
	c     compound
	i     int // fields written
	n     int // fields up to and including the last non-null one
	trail int // len(dst) after the last non-null field
}

// BeginList reserves a list header.
func BeginList(dst []byte) ([]byte, ListWriter) {
	dst, c := beginCompound(dst)
	return dst, ListWriter{c: c, trail: len(dst)}
}

// Field records that a non-null field has just been appended.
func (w *ListWriter) Field(dst []byte) {
	w.i++
	w.n = w.i
	w.trail = len(dst)
}

// Null appends a null field.
func (w *ListWriter) Null(dst []byte) []byte {
	w.i++
	return append(dst, CodeNull)
}

// End drops trailing nulls and writes the list header.
func (w *ListWriter) End(dst []byte) []byte {
	dst = dst[:w.trail]
	if w.n == 0 {
		return append(dst[:w.c.start], CodeList0)
	}
	return w.c.end(dst, CodeList8, CodeList32, w.n)
}

// AppendList appends a list of arbitrary values.
func AppendList(dst []byte, l []any) ([]byte, error) {
	if len(l) == 0 {
		return append(dst, CodeList0), nil
	}
	dst, c := beginCompound(dst)
	var err error
	for _, v := range l {
		if dst, err = AppendValue(dst, v); err != nil {
			return dst, err
		}
	}
	return c.end(dst, CodeList8, CodeList32, len(l)), nil
}

// AppendMap appends a map (map8 or map32). A nil Map is encoded as an empty map.
func AppendMap(dst []byte, m Map) ([]byte, error) {
	dst, c := beginCompound(dst)
	var err error
	for _, p := range m {
		if dst, err = AppendValue(dst, p.Key); err != nil {
			return dst, err
		}
		if dst, err = AppendValue(dst, p.Value); err != nil {
			return dst, err
		}
	}
	return c.end(dst, CodeMap8, CodeMap32, 2*len(m)), nil
}

// appendOptionalMap appends m, or null when m is nil.
func appendOptionalMap(dst []byte, w *ListWriter, m Map) ([]byte, error) {
	if m == nil {
		return w.Null(dst), nil
	}
	dst, err := AppendMap(dst, m)
	w.Field(dst)
	return dst, err
}

// AppendDescribed appends a described value with an arbitrary descriptor
// (uint64 or Symbol).
func AppendDescribed(dst []byte, d Described) ([]byte, error) {
	var err error
	switch desc := d.Descriptor.(type) {
	case uint64:
		dst = AppendDescriptor(dst, desc)
	case Symbol:
		dst = AppendSymbol(append(dst, CodeDescribed), desc)
	default:
		return dst, encodeErrorf("descriptor must be uint64 or Symbol, not %T", d.Descriptor)
	}
	if dst, err = AppendValue(dst, d.Value); err != nil {
		return dst, err
	}
	return dst, nil
}

// AppendValue appends any supported Go value in its smallest encoding:
// nil, bool, uint8/16/32/64, uint (ulong), int8/16/32/64, int (long),
// float32/64, Decimal32/64/128, Char, time.Time (timestamp), UUID,
// []byte (binary), string, Symbol, []any (list), Map, Array, []Symbol (array),
// Described and any Marshaler.
func AppendValue(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return AppendNull(dst), nil
	case bool:
		return AppendBool(dst, v), nil
	case uint8:
		return AppendUbyte(dst, v), nil
	case uint16:
		return AppendUshort(dst, v), nil
	case uint32:
		return AppendUint(dst, v), nil
	case uint64:
		return AppendUlong(dst, v), nil
	case uint:
		return AppendUlong(dst, uint64(v)), nil
	case int8:
		return AppendByte(dst, v), nil
	case int16:
		return AppendShort(dst, v), nil
	case int32:
		return AppendInt(dst, v), nil
	case int64:
		return AppendLong(dst, v), nil
	case int:
		return AppendLong(dst, int64(v)), nil
	case float32:
		return AppendFloat(dst, v), nil
	case float64:
		return AppendDouble(dst, v), nil
	case Decimal32:
		return AppendDecimal32(dst, v), nil
	case Decimal64:
		return AppendDecimal64(dst, v), nil
	case Decimal128:
		return AppendDecimal128(dst, v), nil
	case Char:
		return AppendChar(dst, v), nil
	case time.Time:
		return AppendTimestamp(dst, v), nil
	case UUID:
		return AppendUUID(dst, v), nil
	case []byte:
		return AppendBinary(dst, v), nil
	case string:
		return AppendString(dst, v), nil
	case Symbol:
		return AppendSymbol(dst, v), nil
	case []any:
		return AppendList(dst, v)
	case Map:
		return AppendMap(dst, v)
	case Array:
		return AppendArray(dst, v)
	case []Symbol:
		return AppendSymbolArray(dst, v), nil
	case Described:
		return AppendDescribed(dst, v)
	case Marshaler:
		return v.MarshalAMQP(dst)
	}
	return dst, encodeErrorf("unsupported type %T", v)
}

// OptString appends s as a field, or null if s is empty.
func (w *ListWriter) OptString(dst []byte, s string) []byte {
	if s == "" {
		return w.Null(dst)
	}
	dst = AppendString(dst, s)
	w.Field(dst)
	return dst
}

// OptSymbol appends s as a field, or null if s is empty.
func (w *ListWriter) OptSymbol(dst []byte, s Symbol) []byte {
	if s == "" {
		return w.Null(dst)
	}
	dst = AppendSymbol(dst, s)
	w.Field(dst)
	return dst
}

// OptBool appends true, or null for false (the default of every optional
// boolean field in the specification).
func (w *ListWriter) OptBool(dst []byte, b bool) []byte {
	if !b {
		return w.Null(dst)
	}
	dst = append(dst, CodeTrue)
	w.Field(dst)
	return dst
}

// OptUint appends v as a field if present, else null.
func (w *ListWriter) OptUint(dst []byte, v uint32, present bool) []byte {
	if !present {
		return w.Null(dst)
	}
	dst = AppendUint(dst, v)
	w.Field(dst)
	return dst
}

// OptUlong appends v as a field if present, else null.
func (w *ListWriter) OptUlong(dst []byte, v uint64, present bool) []byte {
	if !present {
		return w.Null(dst)
	}
	dst = AppendUlong(dst, v)
	w.Field(dst)
	return dst
}

// OptBinary appends b as a field, or null if b is nil (an empty non-nil
// slice is encoded as empty binary).
func (w *ListWriter) OptBinary(dst []byte, b []byte) []byte {
	if b == nil {
		return w.Null(dst)
	}
	dst = AppendBinary(dst, b)
	w.Field(dst)
	return dst
}

// OptSymbols appends a multiple symbol field as an array, or null if s is nil.
func (w *ListWriter) OptSymbols(dst []byte, s []Symbol) []byte {
	if s == nil {
		return w.Null(dst)
	}
	dst = AppendSymbolArray(dst, s)
	w.Field(dst)
	return dst
}

// OptMap appends m as a field, or null if m is nil.
func (w *ListWriter) OptMap(dst []byte, m Map) ([]byte, error) {
	return appendOptionalMap(dst, w, m)
}

// OptMarshal appends m as a field, or null if present is false.
func (w *ListWriter) OptMarshal(dst []byte, m Marshaler, present bool) ([]byte, error) {
	if !present {
		return w.Null(dst), nil
	}
	dst, err := m.MarshalAMQP(dst)
	w.Field(dst)
	return dst, err
}
