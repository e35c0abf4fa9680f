package encoding

import (
	"bytes"
	"math"
	"time"
)

// Equal reports whether two decoded AMQP values are equal. Unlike == it
// never panics on uncomparable values, compares []byte, lists, maps, arrays
// and described values deeply, compares floats by their bits (so NaN equals
// itself and round trips are checkable), treats a nil and an empty list,
// map or array alike, and compares times by instant.
func Equal(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case float32:
		bv, ok := b.(float32)
		return ok && math.Float32bits(a) == math.Float32bits(bv)
	case float64:
		bv, ok := b.(float64)
		return ok && math.Float64bits(a) == math.Float64bits(bv)
	case time.Time:
		bv, ok := b.(time.Time)
		return ok && a.Equal(bv)
	case []byte:
		bv, ok := b.([]byte)
		return ok && bytes.Equal(a, bv)
	case []any:
		bv, ok := b.([]any)
		if !ok || len(a) != len(bv) {
			return false
		}
		for i := range a {
			if !Equal(a[i], bv[i]) {
				return false
			}
		}
		return true
	case Array:
		bv, ok := b.(Array)
		if !ok || len(a) != len(bv) {
			return false
		}
		for i := range a {
			if !Equal(a[i], bv[i]) {
				return false
			}
		}
		return true
	case []Symbol:
		bv, ok := b.([]Symbol)
		if !ok || len(a) != len(bv) {
			return false
		}
		for i := range a {
			if a[i] != bv[i] {
				return false
			}
		}
		return true
	case Map:
		bv, ok := b.(Map)
		if !ok || len(a) != len(bv) {
			return false
		}
		for i := range a {
			if !Equal(a[i].Key, bv[i].Key) || !Equal(a[i].Value, bv[i].Value) {
				return false
			}
		}
		return true
	case Described:
		bv, ok := b.(Described)
		return ok && Equal(a.Descriptor, bv.Descriptor) && Equal(a.Value, bv.Value)
	case bool, uint8, uint16, uint32, uint64, uint, int8, int16, int32, int64, int,
		Decimal32, Decimal64, Decimal128, Char, UUID, string, Symbol:
		return a == b // comparable dynamic type: == cannot panic
	}
	return false
}
