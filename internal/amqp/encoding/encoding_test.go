package encoding

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// hx builds bytes from hand-written hex; a token in single quotes is ASCII.
func hx(s string) []byte {
	var out []byte
	for _, tok := range strings.Fields(s) {
		if strings.HasPrefix(tok, "'") && strings.HasSuffix(tok, "'") && len(tok) >= 2 {
			out = append(out, tok[1:len(tok)-1]...)
			continue
		}
		b, err := hex.DecodeString(tok)
		if err != nil {
			panic("bad hex token " + tok)
		}
		out = append(out, b...)
	}
	return out
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var x300 = bytes.Repeat([]byte("x"), 300)

// valueCases: value, its canonical (smallest) encoding, derived by hand from part 1.6 of the spec.
var valueCases = []struct {
	name string
	v    any
	enc  []byte
}{
	{"null", nil, hx("40")},
	{"true", true, hx("41")},
	{"false", false, hx("42")},
	{"ubyte", uint8(7), hx("50 07")},
	{"ushort", uint16(0x1234), hx("60 12 34")},
	{"uint0", uint32(0), hx("43")},
	{"smalluint", uint32(255), hx("52 ff")},
	{"uint", uint32(256), hx("70 00 00 01 00")},
	{"ulong0", uint64(0), hx("44")},
	{"smallulong", uint64(5), hx("53 05")},
	{"ulong", uint64(256), hx("80 00 00 00 00 00 00 01 00")},
	{"byte", int8(-1), hx("51 ff")},
	{"short", int16(-2), hx("61 ff fe")},
	{"smallint min", int32(-128), hx("54 80")},
	{"smallint max", int32(127), hx("54 7f")},
	{"int", int32(128), hx("71 00 00 00 80")},
	{"int neg", int32(-129), hx("71 ff ff ff 7f")},
	{"smalllong", int64(-1), hx("55 ff")},
	{"long", int64(1000), hx("81 00 00 00 00 00 00 03 e8")},
	{"float", float32(1), hx("72 3f 80 00 00")},
	{"double", float64(1), hx("82 3f f0 00 00 00 00 00 00")},
	{"decimal32", Decimal32{1, 2, 3, 4}, hx("74 01 02 03 04")},
	{"decimal64", Decimal64{1, 2, 3, 4, 5, 6, 7, 8}, hx("84 01 02 03 04 05 06 07 08")},
	{"decimal128", Decimal128{15: 9}, hx("94 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 09")},
	{"char", Char('A'), hx("73 00 00 00 41")},
	{"char euro", Char('€'), hx("73 00 00 20 ac")},
	{"timestamp", time.UnixMilli(1000).UTC(), hx("83 00 00 00 00 00 00 03 e8")},
	{"timestamp neg", time.UnixMilli(-1).UTC(), hx("83 ff ff ff ff ff ff ff ff")},
	{"uuid", UUID{0: 0x12, 15: 0x34}, hx("98 12 00 00 00 00 00 00 00 00 00 00 00 00 00 00 34")},
	{"vbin8 empty", []byte{}, hx("a0 00")},
	{"vbin8", []byte{1, 2, 3}, hx("a0 03 01 02 03")},
	{"vbin32", x300, cat(hx("b0 00 00 01 2c"), x300)},
	{"str8", "hi", hx("a1 02 'hi'")},
	{"str32", string(x300), cat(hx("b1 00 00 01 2c"), x300)},
	{"sym8", Symbol("x"), hx("a3 01 'x'")},
	{"sym32", Symbol(x300), cat(hx("b3 00 00 01 2c"), x300)},
	{"list0", []any{}, hx("45")},
	{"list8", []any{uint32(1), "a"}, hx("c0 06 02 52 01 a1 01 'a'")},
	{"list32", []any{x300}, cat(hx("d0 00 00 01 35 00 00 00 01 b0 00 00 01 2c"), x300)},
	{"nested list", []any{[]any{}, nil}, hx("c0 03 02 45 40")},
	{"map8 empty", Map{}, hx("c1 01 00")},
	{"map8", Map{{Symbol("k"), uint32(1)}}, hx("c1 06 02 a3 01 'k' 52 01")},
	{"map non-string keys", Map{{uint64(1), nil}, {int32(-1), true}}, hx("c1 07 04 53 01 40 54 ff 41")},
	{"map32", Map{{"k", x300}}, cat(hx("d1 00 00 01 38 00 00 00 02 a1 01 'k' b0 00 00 01 2c"), x300)},
	{"array empty", Array{}, hx("e0 02 00 40")},
	{"array sym8", Array{Symbol("a"), Symbol("bc")}, hx("e0 07 02 a3 01 'a' 02 'bc'")},
	{"array smalluint", Array{uint32(1), uint32(2)}, hx("e0 04 02 52 01 02")},
	{"array uint", Array{uint32(1), uint32(1000)}, hx("e0 0a 02 70 00 00 00 01 00 00 03 e8")},
	{"array smallint", Array{int32(-1), int32(2)}, hx("e0 04 02 54 ff 02")},
	{"array bool", Array{true, false}, hx("e0 04 02 56 01 00")},
	{"array list32", Array{[]any{true}}, hx("e0 0b 01 d0 00 00 00 05 00 00 00 01 41")},
	{"array described", Array{Described{uint64(1), uint32(5)}, Described{uint64(1), uint32(6)}}, hx("e0 07 02 00 53 01 52 05 06")},
	{"array32", Array{x300}, cat(hx("f0 00 00 01 35 00 00 00 01 b0 00 00 01 2c"), x300)},
	{"described ulong", Described{uint64(0x24), []any{}}, hx("00 53 24 45")},
	{"described large code", Described{DescSelectorFilter, "a"}, hx("00 80 00 00 46 8c 00 00 00 04 a1 01 'a'")},
	{"described symbol", Described{Symbol("a:b"), "x"}, hx("00 a3 03 'a:b' a1 01 'x'")},
}

func TestValueEncoding(t *testing.T) {
	for _, tc := range valueCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AppendValue([]byte{0xEE}, tc.v) // a prefix proves append semantics
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[1:], tc.enc) || got[0] != 0xEE {
				t.Fatalf("encode\n got %x\nwant %x", got[1:], tc.enc)
			}
			r := NewReader(tc.enc)
			v, err := r.ReadAny()
			if err != nil {
				t.Fatal(err)
			}
			if r.Len() != 0 {
				t.Fatalf("%d bytes left", r.Len())
			}
			if !Equal(v, tc.v) {
				t.Fatalf("decode got %#v want %#v", v, tc.v)
			}
			r.Reset(tc.enc)
			raw, err := r.Skip()
			if err != nil || !bytes.Equal(raw, tc.enc) {
				t.Fatalf("skip = %x, %v", raw, err)
			}
		})
	}
}

// Non-canonical encodings a peer may send, and what they decode to.
func TestDecodeNonCanonical(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want any
	}{
		{"bool true", hx("56 01"), true},
		{"bool false", hx("56 00"), false},
		{"wide uint", hx("70 00 00 00 01"), uint32(1)},
		{"wide ulong", hx("80 00 00 00 00 00 00 00 00"), uint64(0)},
		{"empty list8", hx("c0 01 00"), []any{}},
		{"empty map32", hx("d1 00 00 00 04 00 00 00 00"), Map{}},
		{"short str32", hx("b1 00 00 00 01 'a'"), "a"},
		{"sym32 descriptor", hx("00 b3 00 00 00 01 'd' 40"), Described{Symbol("d"), nil}},
		{"array uint0", hx("e0 02 01 43"), Array{uint32(0)}},
	}
	for _, tc := range cases {
		r := NewReader(tc.in)
		v, err := r.ReadAny()
		if err != nil || !Equal(v, tc.want) || r.Len() != 0 {
			t.Errorf("%s: got %#v, %v", tc.name, v, err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	nestedLists := []byte{}
	for range 100 {
		nestedLists = append([]byte{0xd0, 0, 0, 0, 0, 0, 0, 0, 1}, nestedLists...)
	}
	// Patch sizes from the inside out: each list holds the rest.
	nestedLists = append(nestedLists, 0x40)
	for i := 99; i >= 0; i-- {
		size := len(nestedLists) - i*9 - 5
		nestedLists[i*9+1] = byte(size >> 24)
		nestedLists[i*9+2] = byte(size >> 16)
		nestedLists[i*9+3] = byte(size >> 8)
		nestedLists[i*9+4] = byte(size)
	}
	nestedDescribed := append(bytes.Repeat(hx("00 53 01"), 100), 0x40)
	cases := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"invalid code", hx("01")},
		{"truncated uint", hx("70 00 00")},
		{"bad boolean", hx("56 02")},
		{"list32 count 2^32-1 in 10 bytes", hx("d0 00 00 00 05 ff ff ff ff 40")},
		{"list32 size beyond input", hx("d0 00 00 00 08 ff ff ff ff 40")},
		{"array32 zero-width count 2^32-1", hx("f0 00 00 00 05 ff ff ff ff 40")},
		{"zero-width array longer than its size", hx("e0 02 02 43")},
		{"two described nulls (fuzz finding)", hx("e0 0c 02 00 80 00 00 00 00 00 00 00 00 40")},
		{"map32 count 2^32-2", hx("d1 00 00 00 06 ff ff ff fe 40 40")},
		{"vbin32 4GiB", hx("b0 ff ff ff ff 00")},
		{"str8 beyond input", hx("a1 05 'ab'")},
		{"map odd count", hx("c1 03 01 40 40")},
		{"list8 size 0", hx("c0 00")},
		{"list32 size < 4", hx("d0 00 00 00 03 00 00 00")},
		{"list count mismatch", hx("c0 03 01 40 40")},
		{"list element overruns", hx("c0 02 01 a1 05 'abcde'")},
		{"descriptor not ulong or symbol", hx("00 a1 01 'x' 40")},
		{"array bad constructor", hx("e0 03 01 01 00")},
		{"array twice described", hx("e0 07 01 00 53 01 00 53 01 40")},
		{"deep lists", nestedLists},
		{"deep described", nestedDescribed},
	}
	for _, tc := range cases {
		r := NewReader(tc.in)
		_, err := r.ReadAny()
		if !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err = %v, want ErrDecode", tc.name, err)
		}
	}
	// Skip shares the depth bound.
	r := NewReader(nestedDescribed)
	if _, err := r.Skip(); !errors.Is(err, ErrDecode) {
		t.Errorf("skip deep described: %v", err)
	}
}

func TestTypedReaders(t *testing.T) {
	r := NewReader(cat(hx("52 07 a1 02 'hi' a3 01 's' a0 01 ff 60 01 00 50 09"),
		hx("c0 04 02 40 52 03 e0 07 02 a3 01 'a' 02 'bc' a3 01 'z' 40")))
	if v, err := r.ReadUint(); v != 7 || err != nil {
		t.Fatal(v, err)
	}
	if v, err := r.ReadString(); v != "hi" || err != nil {
		t.Fatal(v, err)
	}
	if v, err := r.ReadSymbol(); v != "s" || err != nil {
		t.Fatal(v, err)
	}
	if v, err := r.ReadBinary(); !bytes.Equal(v, []byte{0xff}) || err != nil || cap(v) != 1 {
		t.Fatal(v, err)
	}
	if v, err := r.ReadUlong(); v != 256 || err != nil { // ushort widened
		t.Fatal(v, err)
	}
	if v, err := r.ReadUshort(); v != 9 || err != nil { // ubyte widened
		t.Fatal(v, err)
	}
	n, l, err := r.ReadListHeader()
	if n != 2 || err != nil || !l.Null() {
		t.Fatal(n, err)
	}
	if v, err := l.ReadUint(); v != 3 || err != nil || l.Finish() != nil {
		t.Fatal(v, err)
	}
	if s, err := r.ReadSymbols(); err != nil || len(s) != 2 || s[1] != "bc" {
		t.Fatal(s, err)
	}
	if s, err := r.ReadSymbols(); err != nil || len(s) != 1 || s[0] != "z" { // single value for a multiple field
		t.Fatal(s, err)
	}
	if !r.Null() || r.Len() != 0 {
		t.Fatal("expected trailing null")
	}
	r.Reset(hx("a1 01 'x'"))
	if _, err := r.ReadUint(); !errors.Is(err, ErrDecode) {
		t.Fatal("type mismatch not reported")
	}
}

func TestEqual(t *testing.T) {
	nan := math.NaN()
	if !Equal(nan, nan) || Equal([]byte{1}, "x") || Equal(Map{{[]byte{1}, nil}}, Map{{[]byte{2}, nil}}) {
		t.Fatal("Equal misbehaves")
	}
	m := Map{{[]byte{1}, "bin"}, {Symbol("s"), "sym"}}
	if v, ok := m.Get([]byte{1}); !ok || v != "bin" { // uncomparable keys must not panic
		t.Fatal(v, ok)
	}
	if v, ok := m.GetSymbol("s"); !ok || v != "sym" {
		t.Fatal(v, ok)
	}
}

func TestEncodeErrors(t *testing.T) {
	for _, v := range []any{struct{}{}, Array{uint32(1), "x"}, Described{"str-descriptor", nil}, []any{make(chan int)}} {
		if _, err := AppendValue(nil, v); !errors.Is(err, ErrEncode) {
			t.Errorf("%T: err = %v", v, err)
		}
	}
}

func TestSymbolArray(t *testing.T) {
	if got := AppendSymbolArray(nil, []Symbol{}); !bytes.Equal(got, hx("e0 02 00 a3")) {
		t.Fatalf("%x", got)
	}
	if got := AppendSymbolArray(nil, nil); !bytes.Equal(got, hx("40")) {
		t.Fatalf("%x", got)
	}
}
