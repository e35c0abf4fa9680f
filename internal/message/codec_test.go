package message

import (
	"bytes"
	"encoding/binary"
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
	native := []byte("\x00\x53\x75\xa0\x03abc")
	f.Add((&Message{NativeFormat: NativeAMQP, Native: native, Body: native[4:]}).Marshal())
	f.Add((&Message{To: "q", NativeFormat: NativeAMQP, Large: &Large{Subject: "lg.Q.x", First: 1, Chunks: 2, NativeLen: 9, BodyLen: 3, BodyIn: 6}}).Marshal())
	f.Add((&Message{Large: &Large{Subject: "lg.T.y", First: 7, Chunks: 1, BodyLen: 5, BodyIn: -1}}).Marshal())
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

// An AMQP message's data section lies inside its bare message: the
// encoding stores those bytes once (version 2), and the decoded body
// aliases the decoded native bytes.
func TestBodyInNative(t *testing.T) {
	native := []byte("\x00\x53\x73\xc0\x01\x00\x00\x53\x75\xa0\x05hello")
	m := &Message{To: "q", NativeFormat: NativeAMQP, Native: native, Body: native[len(native)-5:]}
	enc := m.Marshal()
	if enc[0] != version2 {
		t.Fatalf("version %d, want 2", enc[0])
	}
	if len(enc) > len(native)+16 {
		t.Fatalf("encoding of %d bytes stores the body twice (native %d)", len(enc), len(native))
	}
	got, err := Unmarshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Body) != "hello" || !bytes.Equal(got.Native, native) {
		t.Fatalf("got body %q native %x", got.Body, got.Native)
	}
	if off, ok := got.BodyInNative(); !ok || off != len(native)-5 {
		t.Fatalf("decoded body does not alias native (%d, %v)", off, ok)
	}
	if got.Size() != len(native)+1 {
		t.Fatalf("Size %d counts the body twice", got.Size())
	}
	// A copy of the body (multi-section data) is stored as before.
	m.Body = []byte("hello")
	if enc := m.Marshal(); enc[0] != version1 {
		t.Fatalf("separate body: version %d, want 1", enc[0])
	}
}

// A message whose bytes are in the chunk store is encoded as the
// reference, loaded or not.
func TestLargeReference(t *testing.T) {
	ref := &Large{Subject: "lg.Q_x.abc", First: 42, Chunks: 65, NativeLen: 1 << 26, BodyLen: 1<<26 - 30, BodyIn: 30}
	m := sample()
	m.Large = ref
	enc := m.Marshal()
	if enc[0] != version2 || len(enc) > 400 {
		t.Fatalf("version %d, %d bytes", enc[0], len(enc))
	}
	got, err := Unmarshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Large, ref) || got.Body != nil || got.Native != nil {
		t.Fatalf("large %+v body %d native %d", got.Large, len(got.Body), len(got.Native))
	}
	if got.NativeFormat != NativeAMQP || got.BodyKind != BodyData || got.MessageID != "id-1" {
		t.Fatalf("fields lost: %+v", got)
	}
	if got.Size() < 1<<26 {
		t.Fatalf("Size %d ignores the stored bytes", got.Size())
	}
	for i := 0; i < len(enc); i++ {
		if _, err := Unmarshal(enc[:i]); err == nil {
			t.Fatalf("truncated at %d accepted", i)
		}
	}
	// Bytes and a reference together, or the new tags in version 1, are
	// malformed.
	withNative := append([]byte{version2, tagNative, 1, 1, 'x'}, enc[len(enc)-40:]...)
	if _, err := Unmarshal(withNative); err == nil {
		t.Fatal("native bytes before a reference accepted")
	}
	v1 := append([]byte{version1}, enc[1:]...)
	if _, err := Unmarshal(v1); err == nil {
		t.Fatal("reference in version 1 accepted")
	}
	if _, err := Unmarshal([]byte{version2, tagBodyIn, 0, 0, 1, tagEnd}); err == nil {
		t.Fatal("body range without native accepted")
	}
}

// TestIntegerWidths: 32-bit integer properties come back with their type
// (Hono's qos, ttd and status are AMQP ints; a Java client reading an
// Integer rejects a Long), 64-bit ones as before, and an out-of-range
// 32-bit value is malformed.
func TestIntegerWidths(t *testing.T) {
	m := &Message{Properties: map[string]any{"qos": int32(1), "ttd": int32(-1), "u": uint32(7), "l": int64(1 << 40), "n": int(3)}}
	got, err := Unmarshal(m.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"qos": int32(1), "ttd": int32(-1), "u": uint32(7), "l": int64(1 << 40), "n": int64(3)}
	if !reflect.DeepEqual(got.Properties, want) {
		t.Fatalf("properties %#v, want %#v", got.Properties, want)
	}
	bad := (&Message{Properties: map[string]any{"x": int32(0)}}).Marshal()
	i := bytes.Index(bad, []byte{1, 'x', kindInt32, 0}) // name "x", kind, varint 0
	if i < 0 {
		t.Fatalf("no int32 property in the encoding %x", bad)
	}
	i += 3
	bad = append(append(bad[:i:i], binary.AppendVarint(nil, 1<<40)...), bad[i+1:]...)
	if _, err := Unmarshal(bad); err == nil {
		t.Fatal("an int32 out of range decoded")
	}
}
