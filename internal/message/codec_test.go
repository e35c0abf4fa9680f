package message

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

func sample() *Message {
	return &Message{
		MessageID:     "id-1",
		CorrelationID: []byte{1, 2, 3},
		UserID:        []byte("app1"),
		To:            "orders/eu",
		Subject:       "create",
		ReplyTo:       "replies/1",
		ContentType:   "application/json",
		GroupID:       "g",
		CreationTime:  time.UnixMilli(1700000000123),
		Expiry:        time.UnixMilli(1700000060123),
		TTL:           time.Minute,
		Priority:      7,
		Durable:       true,
		Origin:        "client-7",
		Properties:    map[string]any{"s": "v", "u": uint64(1), "i": int64(-2), "b": true, "f": 1.5, "n": nil, "x": []byte{9}},
		BodyKind:      BodyData,
		Body:          []byte(`{"n":1}`),
		NativeFormat:  NativeAMQP,
		Native:        []byte{0x00, 0x53, 0x75, 0xa0, 0x00},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, m := range []*Message{sample(), {}, {MessageID: uint64(5), CorrelationID: [16]byte{1}, Body: []byte{}}} {
		enc := m.Marshal()
		got, err := Unmarshal(enc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Marshal(), enc) && len(m.Properties) <= 1 {
			t.Errorf("re-encoding differs")
		}
		if m.Body == nil {
			m.Body = []byte{}
		}
		if !reflect.DeepEqual(normalize(got), normalize(m)) {
			t.Errorf("round trip:\n got %#v\nwant %#v", got, m)
		}
	}
}

func normalize(m *Message) *Message {
	c := *m
	if len(c.Body) == 0 {
		c.Body = nil
	}
	if len(c.Native) == 0 {
		c.Native = nil
	}
	if len(c.UserID) == 0 && c.UserID != nil {
		c.UserID = []byte{}
	}
	return &c
}

func TestMalformed(t *testing.T) {
	enc := sample().Marshal()
	for i := 0; i < len(enc); i++ {
		if _, err := Unmarshal(enc[:i]); err == nil {
			t.Fatalf("truncated at %d accepted", i)
		}
	}
	if _, err := Unmarshal([]byte{1, tagBody, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}); err == nil {
		t.Fatal("huge length accepted")
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(sample().Marshal())
	f.Add((&Message{}).Marshal())
	f.Add([]byte{1, tagProperty, 1, 'k', kindUUID})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			return
		}
		m2, err := Unmarshal(m.Marshal())
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		for _, v := range m.Properties {
			if f, ok := v.(float64); ok && f != f {
				return // NaN never equals itself
			}
		}
		if !reflect.DeepEqual(normalize(m), normalize(m2)) {
			t.Fatalf("unstable round trip")
		}
	})
}

func BenchmarkMarshal(b *testing.B) {
	m := &Message{To: "orders", Body: make([]byte, 64), Durable: true}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = m.Append(buf[:0])
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	enc := (&Message{To: "orders", Body: make([]byte, 64), Durable: true}).Marshal()
	var m Message
	b.ReportAllocs()
	for b.Loop() {
		m = Message{}
		if err := m.Unmarshal(enc); err != nil {
			b.Fatal(err)
		}
	}
}
