package encoding

import "encoding/binary"

// Width classes of format codes (part 1.2): the high nibble of a code gives
// the width of its value; only codes the specification defines are valid.
const (
	kindInvalid uint8 = iota
	kindFixed0
	kindFixed1
	kindFixed2
	kindFixed4
	kindFixed8
	kindFixed16
	kindVar8
	kindVar32
	kindCompound8
	kindCompound32
	kindDescribed
)

var codeKinds = func() (t [256]uint8) {
	t[CodeDescribed] = kindDescribed
	for _, c := range []byte{CodeNull, CodeTrue, CodeFalse, CodeUint0, CodeUlong0, CodeList0} {
		t[c] = kindFixed0
	}
	for _, c := range []byte{CodeUbyte, CodeByte, CodeSmallUint, CodeSmallUlong, CodeSmallInt, CodeSmallLong, CodeBool} {
		t[c] = kindFixed1
	}
	t[CodeUshort], t[CodeShort] = kindFixed2, kindFixed2
	for _, c := range []byte{CodeUint, CodeInt, CodeFloat, CodeChar, CodeDecimal32} {
		t[c] = kindFixed4
	}
	for _, c := range []byte{CodeUlong, CodeLong, CodeDouble, CodeTimestamp, CodeDecimal64} {
		t[c] = kindFixed8
	}
	t[CodeDecimal128], t[CodeUUID] = kindFixed16, kindFixed16
	t[CodeVbin8], t[CodeStr8], t[CodeSym8] = kindVar8, kindVar8, kindVar8
	t[CodeVbin32], t[CodeStr32], t[CodeSym32] = kindVar32, kindVar32, kindVar32
	t[CodeList8], t[CodeMap8], t[CodeArray8] = kindCompound8, kindCompound8, kindCompound8
	t[CodeList32], t[CodeMap32], t[CodeArray32] = kindCompound32, kindCompound32, kindCompound32
	return t
}()

// Skip consumes the next value without decoding it and returns its raw
// encoding (aliasing the input), constructor included. Compound values are
// skipped by their size field, so their contents are not validated.
func (r *Reader) Skip() ([]byte, error) {
	start := r.off
	if err := r.skip(r.depth); err != nil {
		return nil, err
	}
	return r.buf[start:r.off:r.off], nil
}

func (r *Reader) skip(depth int) error {
	c, err := r.readCode()
	if err != nil {
		return err
	}
	var n int
	switch codeKinds[c] {
	case kindFixed0:
		return nil
	case kindFixed1:
		n = 1
	case kindFixed2:
		n = 2
	case kindFixed4:
		n = 4
	case kindFixed8:
		n = 8
	case kindFixed16:
		n = 16
	case kindVar8, kindCompound8:
		b, err := r.u8()
		if err != nil {
			return err
		}
		n = int(b)
		if codeKinds[c] == kindCompound8 && n < 1 {
			return r.errorf("compound size 0 smaller than its count field")
		}
	case kindVar32, kindCompound32:
		b, err := r.next(4)
		if err != nil {
			return err
		}
		size := binary.BigEndian.Uint32(b)
		if uint64(size) > uint64(r.Len()) {
			return r.truncated()
		}
		n = int(size)
		if codeKinds[c] == kindCompound32 && n < 4 {
			return r.errorf("compound size %d smaller than its count field", n)
		}
	case kindDescribed:
		if depth >= MaxDepth {
			return r.errorf("nesting deeper than %d", MaxDepth)
		}
		if err := r.skip(depth + 1); err != nil { // descriptor
			return err
		}
		return r.skip(depth + 1)
	default:
		return &DecodeError{Offset: r.off - 1, Msg: "invalid format code"}
	}
	_, err = r.next(n)
	return err
}

// SkipValue consumes the next value without returning it.
func (r *Reader) SkipValue() error { return r.skip(r.depth) }
