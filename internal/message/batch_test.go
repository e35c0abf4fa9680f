package message

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestBatchRoundTrip(t *testing.T) {
	msgs := []*Message{sample(), {Body: []byte("two"), Durable: true}, {}}
	var enc [][]byte
	for _, m := range msgs {
		enc = append(enc, m.Marshal())
	}
	b := AppendBatch(nil, 3, enc)
	if !IsBatch(b) || IsBatch(msgs[0].Marshal()) {
		t.Fatal("IsBatch does not tell a batch from a message")
	}
	if len(b) > BatchOverhead(len(enc))+len(enc[0])+len(enc[1])+len(enc[2]) {
		t.Fatalf("batch of %d bytes exceeds the announced overhead", len(b))
	}
	prior, got, err := UnmarshalBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if prior != 3 || len(got) != len(msgs) {
		t.Fatalf("prior %d, %d messages", prior, len(got))
	}
	for i := range msgs {
		if !reflect.DeepEqual(normalize(got[i]), normalize(msgs[i])) {
			t.Fatalf("message %d differs: %+v", i, got[i])
		}
	}
}

func TestBatchMalformed(t *testing.T) {
	good := AppendBatch(nil, 0, [][]byte{(&Message{Body: []byte("x")}).Marshal()})
	cases := map[string][]byte{
		"empty":          {},
		"not a batch":    (&Message{}).Marshal(),
		"no prior":       {batchV1},
		"no count":       {batchV1, 0},
		"zero count":     {batchV1, 0, 0},
		"count too big":  {batchV1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1},
		"length past":    {batchV1, 0, 1, 50, 1, 0},
		"bad message":    {batchV1, 0, 1, 2, 9, 0},
		"truncated":      good[:len(good)-1],
		"trailing bytes": append(bytes.Clone(good), 0),
	}
	for name, b := range cases {
		if _, _, err := UnmarshalBatch(b); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err = %v, want ErrDecode", name, err)
		}
	}
}

func FuzzUnmarshalBatch(f *testing.F) {
	f.Add(AppendBatch(nil, 0, [][]byte{sample().Marshal(), (&Message{}).Marshal()}))
	f.Add(AppendBatch(nil, 7, [][]byte{(&Message{Body: []byte("x")}).Marshal()}))
	f.Add([]byte{batchV1, 0, 2, 2, 1, 0, 2, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		prior, msgs, err := UnmarshalBatch(b)
		if err != nil {
			return
		}
		var enc [][]byte
		for _, m := range msgs {
			enc = append(enc, m.Marshal())
		}
		prior2, msgs2, err := UnmarshalBatch(AppendBatch(nil, prior, enc))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if prior2 != prior || len(msgs2) != len(msgs) {
			t.Fatalf("unstable round trip")
		}
	})
}
