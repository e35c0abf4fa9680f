package encoding

import (
	"bytes"
	"errors"
	"testing"
)

// weight counts decoded nodes plus string and binary bytes. Every node
// consumes at least one input byte, so weight ≤ input length bounds what
// decoding can allocate.
func weight(v any) int {
	switch v := v.(type) {
	case []byte:
		return 1 + len(v)
	case string:
		return 1 + len(v)
	case Symbol:
		return 1 + len(v)
	case []any:
		n := 1
		for _, e := range v {
			n += weight(e)
		}
		return n
	case Array:
		n := 1
		for _, e := range v {
			n += weight(e)
		}
		return n
	case Map:
		n := 1
		for _, p := range v {
			n += weight(p.Key) + weight(p.Value)
		}
		return n
	case Described:
		return weight(v.Value) // the 0x00 byte and descriptor are not counted
	}
	return 1
}

func FuzzDecodeValue(f *testing.F) {
	for _, tc := range valueCases {
		f.Add(tc.enc)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(data)
		v, err := r.ReadAny()
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error does not wrap ErrDecode: %v", err)
			}
			return
		}
		n := r.Offset()
		if w := weight(v); w > n+1 {
			t.Fatalf("decoded weight %d from %d bytes", w, n)
		}
		s := NewReader(data)
		raw, err := s.Skip()
		if err != nil || len(raw) != n {
			t.Fatalf("skip: %d bytes, %v; decode used %d", len(raw), err, n)
		}
		enc, err := AppendValue(nil, v)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", v, err)
		}
		r2 := NewReader(enc)
		v2, err := r2.ReadAny()
		if err != nil || r2.Len() != 0 {
			t.Fatalf("decode of re-encoding %x: %v", enc, err)
		}
		if !Equal(v, v2) {
			t.Fatalf("round trip: %#v != %#v", v, v2)
		}
		enc2, _ := AppendValue(nil, v2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %x != %x", enc, enc2)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(msgPayload)
	f.Add(cat(secData, secData))
	for _, tc := range compositeCases[:4] {
		f.Add(tc.enc)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error does not wrap ErrDecode: %v", err)
			}
			return
		}
		raw := m.Raw
		if all := cat(raw.Header, raw.DeliveryAnnotations, raw.MessageAnnotations, raw.Properties,
			raw.ApplicationProperties, raw.Body, raw.Footer); !bytes.Equal(all, data) {
			t.Fatalf("raw sections %x do not cover input %x", all, data)
		}
		if !bytes.HasSuffix(data, raw.Bare) {
			t.Fatal("bare message is not a suffix of the input")
		}
		if _, err := m.AppendForward(nil, m.Header, nil); err != nil {
			t.Fatal(err)
		}
		enc, err := m.MarshalAMQP(nil)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := DecodeMessage(enc)
		if err != nil {
			t.Fatalf("decode of re-encoding %x: %v", enc, err)
		}
		enc2, err := m2.MarshalAMQP(nil)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %x != %x (%v)", enc, enc2, err)
		}
	})
}
