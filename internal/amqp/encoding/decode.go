package encoding

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// Reader decodes AMQP values from a byte slice. The zero value reads nothing;
// use NewReader or Reset. A Reader never panics and never allocates based on
// an unchecked length: sizes are compared with the bytes present, and the
// element count of a list, map or array must not exceed its size in bytes, so
// decoded structures are bounded by the input length. Arrays whose element
// constructor has zero width (null, true, uint0, list0, ...) may hold at most
// one element; nobody sends longer ones and they would defeat that bound.
// Nesting is limited to MaxDepth. Slices it returns alias the input and have
// their capacity clipped, so appending to them never overwrites the input.
type Reader struct {
	buf   []byte // bytes up to the end of the enclosing value
	off   int    // next byte to read; offsets are relative to the outermost buffer
	depth int    // nesting depth of the value being read
}

// NewReader returns a Reader over b.
func NewReader(b []byte) Reader { return Reader{buf: b} }

// Reset makes r read b from its start.
func (r *Reader) Reset(b []byte) { *r = Reader{buf: b} }

// Len returns the number of unread bytes.
func (r *Reader) Len() int { return len(r.buf) - r.off }

// Offset returns the offset of the next byte to read.
func (r *Reader) Offset() int { return r.off }

// Rest returns the unread bytes without consuming them.
func (r *Reader) Rest() []byte { return r.buf[r.off:] }

// Finish returns a decode error if bytes remain, for example fields beyond
// the ones a list's count announced.
func (r *Reader) Finish() error {
	if r.Len() != 0 {
		return r.errorf("%d unexpected trailing bytes", r.Len())
	}
	return nil
}

func (r *Reader) errorf(format string, args ...any) error {
	return &DecodeError{Offset: r.off, Msg: fmt.Sprintf(format, args...)}
}

func (r *Reader) truncated() error { return &DecodeError{Offset: r.off, Msg: "truncated value"} }

// next consumes n bytes; the result's capacity is limited so appending to it
// cannot overwrite the input.
func (r *Reader) next(n int) ([]byte, error) {
	if n < 0 || n > r.Len() {
		return nil, r.truncated()
	}
	b := r.buf[r.off : r.off+n : r.off+n]
	r.off += n
	return b, nil
}

func (r *Reader) readCode() (byte, error) {
	if r.off >= len(r.buf) {
		return 0, r.truncated()
	}
	c := r.buf[r.off]
	r.off++
	return c, nil
}

// PeekCode returns the format code of the next value without consuming it.
func (r *Reader) PeekCode() (byte, error) {
	if r.off >= len(r.buf) {
		return 0, r.truncated()
	}
	return r.buf[r.off], nil
}

// Null consumes a null value if one is next and reports whether it did.
func (r *Reader) Null() bool {
	if r.off < len(r.buf) && r.buf[r.off] == CodeNull {
		r.off++
		return true
	}
	return false
}

func (r *Reader) typeError(want string, c byte) error {
	return &DecodeError{Offset: r.off - 1, Msg: fmt.Sprintf("expected %s, found format code 0x%02x", want, c)}
}

func (r *Reader) u8() (uint8, error) {
	b, err := r.next(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (r *Reader) u16() (uint16, error) {
	b, err := r.next(2)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint16(b), nil
}

func (r *Reader) u32() (uint32, error) {
	b, err := r.next(4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b), nil
}

func (r *Reader) u64() (uint64, error) {
	b, err := r.next(8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b), nil
}

// ReadBool reads a boolean (true, false or the one-byte boolean encoding).
func (r *Reader) ReadBool() (bool, error) {
	c, err := r.readCode()
	if err != nil {
		return false, err
	}
	return r.boolOf(c)
}

func (r *Reader) boolOf(c byte) (bool, error) {
	switch c {
	case CodeTrue:
		return true, nil
	case CodeFalse:
		return false, nil
	case CodeBool:
		b, err := r.u8()
		if err != nil {
			return false, err
		}
		if b > 1 {
			return false, r.errorf("boolean value 0x%02x", b)
		}
		return b == 1, nil
	}
	return false, r.typeError("boolean", c)
}

// ReadUbyte reads a ubyte.
func (r *Reader) ReadUbyte() (uint8, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	if c != CodeUbyte {
		return 0, r.typeError("ubyte", c)
	}
	return r.u8()
}

// ReadUshort reads a ushort (a ubyte is accepted and widened).
func (r *Reader) ReadUshort() (uint16, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	switch c {
	case CodeUshort:
		return r.u16()
	case CodeUbyte:
		b, err := r.u8()
		return uint16(b), err
	}
	return 0, r.typeError("ushort", c)
}

// ReadUint reads a uint in any of its encodings (ubyte and ushort are widened).
func (r *Reader) ReadUint() (uint32, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	switch c {
	case CodeUint0:
		return 0, nil
	case CodeSmallUint, CodeUbyte:
		b, err := r.u8()
		return uint32(b), err
	case CodeUshort:
		v, err := r.u16()
		return uint32(v), err
	case CodeUint:
		return r.u32()
	}
	return 0, r.typeError("uint", c)
}

// ReadUlong reads a ulong in any of its encodings (narrower unsigned types are widened).
func (r *Reader) ReadUlong() (uint64, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	switch c {
	case CodeUlong0, CodeUint0:
		return 0, nil
	case CodeSmallUlong, CodeSmallUint, CodeUbyte:
		b, err := r.u8()
		return uint64(b), err
	case CodeUshort:
		v, err := r.u16()
		return uint64(v), err
	case CodeUint:
		v, err := r.u32()
		return uint64(v), err
	case CodeUlong:
		return r.u64()
	}
	return 0, r.typeError("ulong", c)
}

// ReadInt8 reads an AMQP byte (signed 8-bit).
func (r *Reader) ReadInt8() (int8, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	if c != CodeByte {
		return 0, r.typeError("byte", c)
	}
	b, err := r.u8()
	return int8(b), err
}

// ReadShort reads a short (a byte is accepted and widened).
func (r *Reader) ReadShort() (int16, error) {
	v, err := r.ReadLong()
	if err == nil && (v < math.MinInt16 || v > math.MaxInt16) {
		err = r.errorf("value %d out of range for short", v)
	}
	return int16(v), err
}

// ReadInt reads an int in any of its encodings (byte and short are widened).
func (r *Reader) ReadInt() (int32, error) {
	v, err := r.ReadLong()
	if err == nil && (v < math.MinInt32 || v > math.MaxInt32) {
		err = r.errorf("value %d out of range for int", v)
	}
	return int32(v), err
}

// ReadLong reads a long in any of its encodings (byte, short and int are widened).
func (r *Reader) ReadLong() (int64, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	switch c {
	case CodeByte, CodeSmallInt, CodeSmallLong:
		b, err := r.u8()
		return int64(int8(b)), err
	case CodeShort:
		v, err := r.u16()
		return int64(int16(v)), err
	case CodeInt:
		v, err := r.u32()
		return int64(int32(v)), err
	case CodeLong:
		v, err := r.u64()
		return int64(v), err
	}
	return 0, r.typeError("signed integer", c)
}

// ReadFloat reads a float.
func (r *Reader) ReadFloat() (float32, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	if c != CodeFloat {
		return 0, r.typeError("float", c)
	}
	v, err := r.u32()
	return math.Float32frombits(v), err
}

// ReadDouble reads a double.
func (r *Reader) ReadDouble() (float64, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	if c != CodeDouble {
		return 0, r.typeError("double", c)
	}
	v, err := r.u64()
	return math.Float64frombits(v), err
}

// ReadChar reads a char.
func (r *Reader) ReadChar() (Char, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	if c != CodeChar {
		return 0, r.typeError("char", c)
	}
	v, err := r.u32()
	return Char(v), err
}

// ReadTimestampMillis reads a timestamp as milliseconds since the Unix epoch.
func (r *Reader) ReadTimestampMillis() (int64, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	if c != CodeTimestamp {
		return 0, r.typeError("timestamp", c)
	}
	v, err := r.u64()
	return int64(v), err
}

// ReadTimestamp reads a timestamp as a UTC time.Time.
func (r *Reader) ReadTimestamp() (time.Time, error) {
	ms, err := r.ReadTimestampMillis()
	if err != nil {
		return time.Time{}, err
	}
	return timeFromMillis(ms), nil
}

// ReadUUID reads a uuid.
func (r *Reader) ReadUUID() (UUID, error) {
	var u UUID
	c, err := r.readCode()
	if err != nil {
		return u, err
	}
	if c != CodeUUID {
		return u, r.typeError("uuid", c)
	}
	b, err := r.next(16)
	copy(u[:], b)
	return u, err
}

// varBytes reads the size and bytes of a variable-width value after its code.
func (r *Reader) varBytes(c byte) ([]byte, error) {
	var n uint32
	switch c {
	case CodeVbin8, CodeStr8, CodeSym8:
		b, err := r.u8()
		if err != nil {
			return nil, err
		}
		n = uint32(b)
	default:
		v, err := r.u32()
		if err != nil {
			return nil, err
		}
		n = v
	}
	if uint64(n) > uint64(r.Len()) {
		return nil, r.truncated()
	}
	return r.next(int(n))
}

func (r *Reader) readVar(code8, code32 byte, want string) ([]byte, error) {
	c, err := r.readCode()
	if err != nil {
		return nil, err
	}
	if c != code8 && c != code32 {
		return nil, r.typeError(want, c)
	}
	return r.varBytes(c)
}

// ReadBinary reads binary data. The result aliases the input.
func (r *Reader) ReadBinary() ([]byte, error) { return r.readVar(CodeVbin8, CodeVbin32, "binary") }

// ReadStringBytes reads a string without converting it. The result aliases the input.
func (r *Reader) ReadStringBytes() ([]byte, error) { return r.readVar(CodeStr8, CodeStr32, "string") }

// ReadString reads a string. UTF-8 validity is not checked.
func (r *Reader) ReadString() (string, error) {
	b, err := r.ReadStringBytes()
	return string(b), err
}

// ReadSymbolBytes reads a symbol without converting it. The result aliases the input.
func (r *Reader) ReadSymbolBytes() ([]byte, error) { return r.readVar(CodeSym8, CodeSym32, "symbol") }

// ReadSymbol reads a symbol.
func (r *Reader) ReadSymbol() (Symbol, error) {
	b, err := r.ReadSymbolBytes()
	return Symbol(b), err
}

// ReadSymbols reads a symbol field declared multiple="true": a single
// symbol or an array of symbols (the caller handles null).
func (r *Reader) ReadSymbols() ([]Symbol, error) {
	c, err := r.readCode()
	if err != nil {
		return nil, err
	}
	switch c {
	case CodeSym8, CodeSym32:
		b, err := r.varBytes(c)
		if err != nil {
			return nil, err
		}
		return []Symbol{Symbol(b)}, nil
	case CodeArray8, CodeArray32:
	default:
		return nil, r.typeError("symbol or array of symbol", c)
	}
	count, body, err := r.sized(c == CodeArray32)
	if err != nil {
		return nil, err
	}
	if count == 0 {
		return []Symbol{}, nil
	}
	ec, err := body.readCode()
	if err != nil {
		return nil, err
	}
	if ec != CodeSym8 && ec != CodeSym32 {
		return nil, body.typeError("symbol array element", ec)
	}
	syms := make([]Symbol, count)
	for i := range syms {
		b, err := body.varBytes(ec)
		if err != nil {
			return nil, err
		}
		syms[i] = Symbol(b)
	}
	return syms, body.Finish()
}

// sized reads the size and count fields of a list, map or array (after its
// code) and returns the count and a Reader confined to the rest of the body.
// The count is checked against the body size so it can safely size an allocation.
func (r *Reader) sized(wide bool) (int, Reader, error) {
	var size, count uint32
	if wide {
		b, err := r.next(8)
		if err != nil {
			return 0, Reader{}, err
		}
		size, count = binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
		if size < 4 {
			return 0, Reader{}, r.errorf("compound size %d smaller than its count field", size)
		}
		size -= 4
	} else {
		b, err := r.next(2)
		if err != nil {
			return 0, Reader{}, err
		}
		size, count = uint32(b[0]), uint32(b[1])
		if size < 1 {
			return 0, Reader{}, r.errorf("compound size 0 smaller than its count field")
		}
		size--
	}
	if uint64(size) > uint64(r.Len()) {
		return 0, Reader{}, r.truncated()
	}
	// Every element takes at least one byte (zero-width array elements are
	// limited the same way), which bounds allocations by the input size.
	if count > size {
		return 0, Reader{}, r.errorf("count %d exceeds compound size %d", count, size)
	}
	if r.depth >= MaxDepth {
		return 0, Reader{}, r.errorf("nesting deeper than %d", MaxDepth)
	}
	end := r.off + int(size)
	body := Reader{buf: r.buf[:end], off: r.off, depth: r.depth + 1}
	r.off = end
	return int(count), body, nil
}

// ReadListHeader reads a list (list0, list8 or list32) header and returns the
// element count and a Reader confined to the list's elements.
func (r *Reader) ReadListHeader() (int, Reader, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, Reader{}, err
	}
	switch c {
	case CodeList0:
		return 0, Reader{buf: r.buf[:r.off], off: r.off, depth: r.depth + 1}, nil
	case CodeList8, CodeList32:
		return r.sized(c == CodeList32)
	}
	return 0, Reader{}, r.typeError("list", c)
}

// ReadMapHeader reads a map header and returns the number of key/value pairs
// and a Reader confined to the map's keys and values.
func (r *Reader) ReadMapHeader() (int, Reader, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, Reader{}, err
	}
	if c != CodeMap8 && c != CodeMap32 {
		return 0, Reader{}, r.typeError("map", c)
	}
	count, body, err := r.sized(c == CodeMap32)
	if err != nil {
		return 0, Reader{}, err
	}
	if count%2 != 0 {
		return 0, Reader{}, r.errorf("map with odd element count %d", count)
	}
	return count / 2, body, nil
}

// ReadMap reads a map with keys and values of any type.
func (r *Reader) ReadMap() (Map, error) {
	n, body, err := r.ReadMapHeader()
	if err != nil {
		return nil, err
	}
	return body.mapBody(n)
}

func (r *Reader) mapBody(n int) (Map, error) {
	m := make(Map, n)
	var err error
	for i := range m {
		if m[i].Key, err = r.ReadAny(); err != nil {
			return nil, err
		}
		if m[i].Value, err = r.ReadAny(); err != nil {
			return nil, err
		}
	}
	return m, r.Finish()
}

// ReadList reads a list of values of any type.
func (r *Reader) ReadList() ([]any, error) {
	n, body, err := r.ReadListHeader()
	if err != nil {
		return nil, err
	}
	return body.listBody(n)
}

func (r *Reader) listBody(n int) ([]any, error) {
	l := make([]any, n)
	var err error
	for i := range l {
		if l[i], err = r.ReadAny(); err != nil {
			return nil, err
		}
	}
	return l, r.Finish()
}

// descriptorValue reads a descriptor after the 0x00 constructor: a ulong,
// returned as uint64, or a symbol, returned as Symbol.
func (r *Reader) descriptorValue() (any, error) {
	c, err := r.PeekCode()
	if err != nil {
		return nil, err
	}
	switch c {
	case CodeSym8, CodeSym32:
		return r.ReadSymbol()
	case CodeUlong0, CodeSmallUlong, CodeUlong:
		return r.ReadUlong()
	}
	return nil, r.errorf("descriptor must be ulong or symbol, found format code 0x%02x", c)
}

// ReadDescriptor reads the 0x00 constructor and a descriptor, returning its
// numeric code. Symbolic descriptors of the specification are translated;
// other symbols are a decode error.
func (r *Reader) ReadDescriptor() (uint64, error) {
	c, err := r.readCode()
	if err != nil {
		return 0, err
	}
	if c != CodeDescribed {
		return 0, r.typeError("described type", c)
	}
	c, err = r.PeekCode()
	if err != nil {
		return 0, err
	}
	switch c {
	case CodeSym8, CodeSym32:
		b, err := r.ReadSymbolBytes()
		if err != nil {
			return 0, err
		}
		code, ok := descriptorNames[string(b)]
		if !ok {
			return 0, r.errorf("unknown descriptor %q", b)
		}
		return code, nil
	case CodeUlong0, CodeSmallUlong, CodeUlong:
		return r.ReadUlong()
	}
	return 0, r.errorf("descriptor must be ulong or symbol, found format code 0x%02x", c)
}

// PeekDescriptor returns the code ReadDescriptor would return without consuming anything.
func (r *Reader) PeekDescriptor() (uint64, error) {
	save := *r
	code, err := r.ReadDescriptor()
	*r = save
	return code, err
}

// ReadComposite reads a described list whose descriptor must be code and
// returns its field count and a Reader confined to the fields.
func (r *Reader) ReadComposite(code uint64) (int, Reader, error) {
	start := r.off
	got, err := r.ReadDescriptor()
	if err != nil {
		return 0, Reader{}, err
	}
	if got != code {
		return 0, Reader{}, &DecodeError{Offset: start, Msg: fmt.Sprintf("expected descriptor 0x%x, found 0x%x", code, got)}
	}
	return r.ReadListHeader()
}

// ReadAny reads the next value of any type and returns it as a Go value:
// nil, bool, uint8, uint16, uint32, uint64, int8, int16, int32, int64,
// float32, float64, Decimal32/64/128, Char, time.Time, UUID, []byte
// (aliasing the input), string, Symbol, []any, Map, Array or Described.
func (r *Reader) ReadAny() (any, error) {
	c, err := r.readCode()
	if err != nil {
		return nil, err
	}
	return r.valueOf(c)
}

// valueOf decodes a value whose constructor c has been read.
func (r *Reader) valueOf(c byte) (any, error) {
	switch c {
	case CodeDescribed:
		if r.depth >= MaxDepth {
			return nil, r.errorf("nesting deeper than %d", MaxDepth)
		}
		r.depth++
		defer func() { r.depth-- }()
		d, err := r.descriptorValue()
		if err != nil {
			return nil, err
		}
		v, err := r.ReadAny()
		if err != nil {
			return nil, err
		}
		return Described{Descriptor: d, Value: v}, nil
	case CodeNull:
		return nil, nil
	case CodeTrue, CodeFalse, CodeBool:
		return r.boolOf(c)
	case CodeUbyte:
		return r.u8()
	case CodeUshort:
		return r.u16()
	case CodeUint0:
		return uint32(0), nil
	case CodeSmallUint:
		b, err := r.u8()
		return uint32(b), err
	case CodeUint:
		return r.u32()
	case CodeUlong0:
		return uint64(0), nil
	case CodeSmallUlong:
		b, err := r.u8()
		return uint64(b), err
	case CodeUlong:
		return r.u64()
	case CodeByte:
		b, err := r.u8()
		return int8(b), err
	case CodeShort:
		v, err := r.u16()
		return int16(v), err
	case CodeSmallInt:
		b, err := r.u8()
		return int32(int8(b)), err
	case CodeInt:
		v, err := r.u32()
		return int32(v), err
	case CodeSmallLong:
		b, err := r.u8()
		return int64(int8(b)), err
	case CodeLong:
		v, err := r.u64()
		return int64(v), err
	case CodeFloat:
		v, err := r.u32()
		return math.Float32frombits(v), err
	case CodeDouble:
		v, err := r.u64()
		return math.Float64frombits(v), err
	case CodeDecimal32:
		var d Decimal32
		b, err := r.next(len(d))
		copy(d[:], b)
		return d, err
	case CodeDecimal64:
		var d Decimal64
		b, err := r.next(len(d))
		copy(d[:], b)
		return d, err
	case CodeDecimal128:
		var d Decimal128
		b, err := r.next(len(d))
		copy(d[:], b)
		return d, err
	case CodeChar:
		v, err := r.u32()
		return Char(v), err
	case CodeTimestamp:
		v, err := r.u64()
		return timeFromMillis(int64(v)), err
	case CodeUUID:
		var u UUID
		b, err := r.next(len(u))
		copy(u[:], b)
		return u, err
	case CodeVbin8, CodeVbin32:
		return r.varBytes(c)
	case CodeStr8, CodeStr32:
		b, err := r.varBytes(c)
		return string(b), err
	case CodeSym8, CodeSym32:
		b, err := r.varBytes(c)
		return Symbol(b), err
	case CodeList0:
		return []any{}, nil
	case CodeList8, CodeList32:
		n, body, err := r.sized(c == CodeList32)
		if err != nil {
			return nil, err
		}
		return body.listBody(n)
	case CodeMap8, CodeMap32:
		n, body, err := r.sized(c == CodeMap32)
		if err != nil {
			return nil, err
		}
		if n%2 != 0 {
			return nil, r.errorf("map with odd element count %d", n)
		}
		return body.mapBody(n / 2)
	case CodeArray8, CodeArray32:
		n, body, err := r.sized(c == CodeArray32)
		if err != nil {
			return nil, err
		}
		return body.arrayBody(n)
	}
	return nil, &DecodeError{Offset: r.off - 1, Msg: fmt.Sprintf("invalid format code 0x%02x", c)}
}

func (r *Reader) arrayBody(n int) (Array, error) {
	if n == 0 && r.Len() == 0 {
		return Array{}, nil // tolerate an empty array without element constructor
	}
	c, err := r.readCode()
	if err != nil {
		return nil, err
	}
	var desc any
	if c == CodeDescribed {
		if desc, err = r.descriptorValue(); err != nil {
			return nil, err
		}
		if c, err = r.readCode(); err != nil {
			return nil, err
		}
		if c == CodeDescribed {
			return nil, r.errorf("array element constructor described twice")
		}
	}
	switch codeKinds[c] {
	case kindInvalid:
		return nil, r.errorf("invalid array element constructor 0x%02x", c)
	case kindFixed0:
		// Elements without bytes would let a few input bytes claim any
		// count; nobody sends such arrays, so allow at most one element.
		if n > 1 {
			return nil, r.errorf("array of %d zero-width elements", n)
		}
	}
	a := make(Array, n)
	for i := range a {
		v, err := r.valueOf(c)
		if err != nil {
			return nil, err
		}
		if desc != nil {
			v = Described{Descriptor: desc, Value: v}
		}
		a[i] = v
	}
	return a, r.Finish()
}
