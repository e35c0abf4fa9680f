package encoding

import (
	"encoding/binary"
	"math"
	"time"
)

// AppendArray appends an array (array8 or array32). All elements must have
// the same Go type; Described elements must also share their descriptor.
// An empty array is encoded with the null element constructor.
func AppendArray(dst []byte, a Array) ([]byte, error) {
	code, desc, err := arrayElemCode(a)
	if err != nil {
		return dst, err
	}
	dst, c := beginCompound(dst)
	if desc != nil {
		dst = append(dst, CodeDescribed)
		if dst, err = AppendValue(dst, desc); err != nil {
			return dst, err
		}
	}
	dst = append(dst, code)
	for _, v := range a {
		if desc != nil {
			v = v.(Described).Value
		}
		if dst, err = appendElem(dst, code, v); err != nil {
			return dst, err
		}
	}
	return c.end(dst, CodeArray8, CodeArray32, len(a)), nil
}

// arrayElemCode picks the single constructor for the elements of a.
func arrayElemCode(a Array) (code byte, desc any, err error) {
	if len(a) == 0 {
		return CodeNull, nil, nil
	}
	if d, ok := a[0].(Described); ok {
		if _, ok := d.Descriptor.(uint64); !ok {
			if _, ok := d.Descriptor.(Symbol); !ok {
				return 0, nil, encodeErrorf("descriptor must be uint64 or Symbol, not %T", d.Descriptor)
			}
		}
		inner := make(Array, len(a))
		for i, v := range a {
			e, ok := v.(Described)
			if !ok || !Equal(e.Descriptor, d.Descriptor) {
				return 0, nil, encodeErrorf("array mixes described and other elements")
			}
			if _, ok := e.Value.(Described); ok {
				return 0, nil, encodeErrorf("array of doubly described values")
			}
			inner[i] = e.Value
		}
		code, _, err = arrayElemCode(inner)
		return code, d.Descriptor, err
	}
	kind := typeKind(a[0])
	if kind == kindUnsupported {
		return 0, nil, encodeErrorf("unsupported array element type %T", a[0])
	}
	wide := false // needs the wider of two encodings
	for _, v := range a {
		if typeKind(v) != kind {
			return 0, nil, encodeErrorf("array mixes %T and %T", a[0], v)
		}
		switch v := v.(type) {
		case uint32:
			wide = wide || v > math.MaxUint8
		case uint64:
			wide = wide || v > math.MaxUint8
		case uint:
			wide = wide || v > math.MaxUint8
		case int32:
			wide = wide || v < math.MinInt8 || v > math.MaxInt8
		case int64:
			wide = wide || v < math.MinInt8 || v > math.MaxInt8
		case int:
			wide = wide || v < math.MinInt8 || v > math.MaxInt8
		case []byte:
			wide = wide || len(v) > math.MaxUint8
		case string:
			wide = wide || len(v) > math.MaxUint8
		case Symbol:
			wide = wide || len(v) > math.MaxUint8
		}
	}
	pick := func(narrow, broad byte) byte {
		if wide {
			return broad
		}
		return narrow
	}
	switch kind {
	case kindNull:
		return CodeNull, nil, nil
	case kindBool:
		return CodeBool, nil, nil
	case kindUbyte:
		return CodeUbyte, nil, nil
	case kindUshort:
		return CodeUshort, nil, nil
	case kindUint:
		return pick(CodeSmallUint, CodeUint), nil, nil
	case kindUlong:
		return pick(CodeSmallUlong, CodeUlong), nil, nil
	case kindByte:
		return CodeByte, nil, nil
	case kindShort:
		return CodeShort, nil, nil
	case kindInt:
		return pick(CodeSmallInt, CodeInt), nil, nil
	case kindLong:
		return pick(CodeSmallLong, CodeLong), nil, nil
	case kindFloat:
		return CodeFloat, nil, nil
	case kindDouble:
		return CodeDouble, nil, nil
	case kindDecimal32:
		return CodeDecimal32, nil, nil
	case kindDecimal64:
		return CodeDecimal64, nil, nil
	case kindDecimal128:
		return CodeDecimal128, nil, nil
	case kindChar:
		return CodeChar, nil, nil
	case kindTimestamp:
		return CodeTimestamp, nil, nil
	case kindUUID:
		return CodeUUID, nil, nil
	case kindBinary:
		return pick(CodeVbin8, CodeVbin32), nil, nil
	case kindString:
		return pick(CodeStr8, CodeStr32), nil, nil
	case kindSymbol:
		return pick(CodeSym8, CodeSym32), nil, nil
	case kindList:
		return CodeList32, nil, nil
	case kindMap:
		return CodeMap32, nil, nil
	case kindArray:
		return CodeArray32, nil, nil
	}
	return 0, nil, encodeErrorf("unsupported array element type %T", a[0])
}

const (
	kindUnsupported = iota
	kindNull
	kindBool
	kindUbyte
	kindUshort
	kindUint
	kindUlong
	kindByte
	kindShort
	kindInt
	kindLong
	kindFloat
	kindDouble
	kindDecimal32
	kindDecimal64
	kindDecimal128
	kindChar
	kindTimestamp
	kindUUID
	kindBinary
	kindString
	kindSymbol
	kindList
	kindMap
	kindArray
)

func typeKind(v any) int {
	switch v.(type) {
	case nil:
		return kindNull
	case bool:
		return kindBool
	case uint8:
		return kindUbyte
	case uint16:
		return kindUshort
	case uint32:
		return kindUint
	case uint64, uint:
		return kindUlong
	case int8:
		return kindByte
	case int16:
		return kindShort
	case int32:
		return kindInt
	case int64, int:
		return kindLong
	case float32:
		return kindFloat
	case float64:
		return kindDouble
	case Decimal32:
		return kindDecimal32
	case Decimal64:
		return kindDecimal64
	case Decimal128:
		return kindDecimal128
	case Char:
		return kindChar
	case time.Time:
		return kindTimestamp
	case UUID:
		return kindUUID
	case []byte:
		return kindBinary
	case string:
		return kindString
	case Symbol:
		return kindSymbol
	case []any:
		return kindList
	case Map:
		return kindMap
	case Array, []Symbol:
		return kindArray
	}
	return kindUnsupported
}

// appendElem appends v's encoding under constructor code, without the constructor.
func appendElem(dst []byte, code byte, v any) ([]byte, error) {
	be := binary.BigEndian
	switch code {
	case CodeNull:
		return dst, nil
	case CodeBool:
		if v.(bool) {
			return append(dst, 1), nil
		}
		return append(dst, 0), nil
	case CodeUbyte:
		return append(dst, v.(uint8)), nil
	case CodeUshort:
		return be.AppendUint16(dst, v.(uint16)), nil
	case CodeSmallUint:
		return append(dst, byte(v.(uint32))), nil
	case CodeUint:
		return be.AppendUint32(dst, v.(uint32)), nil
	case CodeSmallUlong:
		return append(dst, byte(toUint64(v))), nil
	case CodeUlong:
		return be.AppendUint64(dst, toUint64(v)), nil
	case CodeByte:
		return append(dst, byte(v.(int8))), nil
	case CodeShort:
		return be.AppendUint16(dst, uint16(v.(int16))), nil
	case CodeSmallInt:
		return append(dst, byte(v.(int32))), nil
	case CodeInt:
		return be.AppendUint32(dst, uint32(v.(int32))), nil
	case CodeSmallLong:
		return append(dst, byte(toInt64(v))), nil
	case CodeLong:
		return be.AppendUint64(dst, uint64(toInt64(v))), nil
	case CodeFloat:
		return be.AppendUint32(dst, math.Float32bits(v.(float32))), nil
	case CodeDouble:
		return be.AppendUint64(dst, math.Float64bits(v.(float64))), nil
	case CodeDecimal32:
		d := v.(Decimal32)
		return append(dst, d[:]...), nil
	case CodeDecimal64:
		d := v.(Decimal64)
		return append(dst, d[:]...), nil
	case CodeDecimal128:
		d := v.(Decimal128)
		return append(dst, d[:]...), nil
	case CodeChar:
		return be.AppendUint32(dst, uint32(v.(Char))), nil
	case CodeTimestamp:
		return be.AppendUint64(dst, uint64(v.(time.Time).UnixMilli())), nil
	case CodeUUID:
		u := v.(UUID)
		return append(dst, u[:]...), nil
	case CodeVbin8, CodeStr8, CodeSym8:
		s := stringOf(v)
		return append(append(dst, byte(len(s))), s...), nil
	case CodeVbin32, CodeStr32, CodeSym32:
		s := stringOf(v)
		return append(be.AppendUint32(dst, uint32(len(s))), s...), nil
	case CodeList32, CodeMap32, CodeArray32:
		start := len(dst)
		dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
		var count int
		var err error
		switch v := v.(type) {
		case []any:
			count = len(v)
			for _, e := range v {
				if dst, err = AppendValue(dst, e); err != nil {
					return dst, err
				}
			}
		case Map:
			count = 2 * len(v)
			for _, p := range v {
				if dst, err = AppendValue(dst, p.Key); err != nil {
					return dst, err
				}
				if dst, err = AppendValue(dst, p.Value); err != nil {
					return dst, err
				}
			}
		case Array, []Symbol:
			var a Array
			if s, ok := v.([]Symbol); ok {
				a = make(Array, len(s))
				for i := range s {
					a[i] = s[i]
				}
			} else {
				a = v.(Array)
			}
			count = len(a)
			ec, desc, err := arrayElemCode(a)
			if err != nil {
				return dst, err
			}
			if desc != nil {
				dst = append(dst, CodeDescribed)
				if dst, err = AppendValue(dst, desc); err != nil {
					return dst, err
				}
			}
			dst = append(dst, ec)
			for _, e := range a {
				if desc != nil {
					e = e.(Described).Value
				}
				if dst, err = appendElem(dst, ec, e); err != nil {
					return dst, err
				}
			}
		}
		be.PutUint32(dst[start:], uint32(len(dst)-start-4))
		be.PutUint32(dst[start+4:], uint32(count))
		return dst, nil
	}
	return dst, encodeErrorf("unsupported array constructor 0x%02x", code)
}

func toUint64(v any) uint64 {
	if u, ok := v.(uint); ok {
		return uint64(u)
	}
	return v.(uint64)
}

func toInt64(v any) int64 {
	if i, ok := v.(int); ok {
		return int64(i)
	}
	return v.(int64)
}

func stringOf(v any) string {
	switch v := v.(type) {
	case []byte:
		return string(v)
	case string:
		return v
	case Symbol:
		return string(v)
	}
	return ""
}
