package frames

import (
	"bytes"
	"errors"
	"testing"

	"github.com/throngmq/throng/internal/amqp/encoding"
)

func frameSeeds() [][]byte {
	var seeds [][]byte
	for _, tc := range perfCases {
		typ := TypeAMQP
		if tc.p.Descriptor() >= encoding.DescSASLMechanisms {
			typ = TypeSASL
		}
		fr, _ := AppendFrame(nil, typ, 3, tc.p, nil)
		seeds = append(seeds, fr)
	}
	return append(seeds, AppendHeartbeat(nil))
}

func FuzzReadFrame(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, max := range []uint32{MinMaxFrameSize, 1 << 16} {
			fr, n, err := ReadFrame(data, max)
			switch {
			case errors.Is(err, ErrNeedMore):
				if n <= len(data) || n < HeaderSize || uint32(n) > max {
					t.Fatalf("need more: n=%d len=%d max=%d", n, len(data), max)
				}
				continue
			case errors.Is(err, ErrFraming), errors.Is(err, ErrFrameTooLarge):
				continue
			case err != nil:
				t.Fatalf("untyped error %v", err)
			}
			if n < HeaderSize || n > len(data) || uint32(n) > max || len(fr.Body) > n-HeaderSize {
				t.Fatalf("bad frame bounds: n=%d body=%d len=%d", n, len(fr.Body), len(data))
			}
			if data[4] == 2 { // no extended header: rewriting gives the same bytes
				out, start := AppendFrameHeader(nil, fr.Type, fr.Channel)
				out, _ = FinishFrame(append(out, fr.Body...), start)
				if !bytes.Equal(out, data[:n]) {
					t.Fatalf("rewrite %x != %x", out, data[:n])
				}
			}
			var d Decoder
			if p, _, err := d.DecodeFrame(fr); err == nil && p != nil {
				if _, err := p.MarshalAMQP(nil); err != nil {
					t.Fatalf("re-encode %#v: %v", p, err)
				}
			} else if err != nil && !errors.Is(err, encoding.ErrDecode) {
				t.Fatalf("untyped error %v", err)
			}
		}
	})
}

func FuzzDecodePerformative(f *testing.F) {
	for _, tc := range perfCases {
		f.Add(tc.enc)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, payload, err := DecodePerformative(body)
		if err != nil {
			if !errors.Is(err, encoding.ErrDecode) {
				t.Fatalf("error does not wrap ErrDecode: %v", err)
			}
			return
		}
		if p == nil {
			if len(body) != 0 {
				t.Fatal("nil performative for a non-empty body")
			}
			return
		}
		enc, err := p.MarshalAMQP(nil)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", p, err)
		}
		p2, _, err := DecodePerformative(enc)
		if err != nil {
			t.Fatalf("decode of re-encoding %x: %v", enc, err)
		}
		enc2, err := p2.MarshalAMQP(nil)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %x != %x", enc, enc2)
		}
		var d Decoder
		p3, payload3, err := d.Decode(body)
		if err != nil || !bytes.Equal(payload, payload3) {
			t.Fatalf("Decoder disagrees: %v", err)
		}
		if enc3, _ := p3.MarshalAMQP(nil); !bytes.Equal(enc3, enc) {
			t.Fatalf("Decoder result encodes differently: %x != %x", enc3, enc)
		}
	})
}
