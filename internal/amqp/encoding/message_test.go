package encoding

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

var (
	secHeader  = hx("00 53 70 c0 02 01 41")
	secMA      = hx("00 53 72 c1 0d 02 a3 07 'x-opt-a' a1 01 'b'")
	secProps   = hx("00 53 73 c0 06 03 40 40 a1 01 'q'")
	secApp     = hx("00 53 74 c1 06 02 a1 01 'k' 54 07")
	secData    = hx("00 53 75 a0 02 'hi'")
	secFooter  = hx("00 53 78 c1 01 00")
	msgPayload = cat(secHeader, secMA, secProps, secApp, secData, secFooter)
)

func TestMessageDecode(t *testing.T) {
	m, err := DecodeMessage(msgPayload)
	if err != nil {
		t.Fatal(err)
	}
	want := &Message{
		Header:                &Header{Durable: true, Priority: DefaultPriority},
		MessageAnnotations:    Map{{Symbol("x-opt-a"), "b"}},
		Properties:            &Properties{To: "q"},
		ApplicationProperties: []Property{{"k", int32(7)}},
		Body:                  BodyData,
		Data:                  [][]byte{[]byte("hi")},
		Footer:                Map{},
		Raw: RawSections{Header: secHeader, MessageAnnotations: secMA, Properties: secProps,
			ApplicationProperties: secApp, Body: secData, Footer: secFooter,
			Bare: cat(secProps, secApp, secData, secFooter)},
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got  %#v\nwant %#v", m, want)
	}
	enc, err := m.MarshalAMQP(nil)
	if err != nil || !bytes.Equal(enc, msgPayload) {
		t.Fatalf("re-encode %x %v", enc, err)
	}
	h := NewHeader()
	h.DeliveryCount = 1
	fwd, err := m.AppendForward(nil, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := cat(hx("00 53 70 c0 07 05 40 40 40 40 52 01"), secMA, m.Raw.Bare); !bytes.Equal(fwd, want) {
		t.Fatalf("forward\n got %x\nwant %x", fwd, want)
	}
}

func TestMessageBuild(t *testing.T) {
	m := NewDataMessage(NewHeader(), &Properties{To: "q"}, []Property{{"k", int32(7)}}, []byte("hi"))
	enc, err := m.MarshalAMQP(nil)
	if want := cat(hx("00 53 70 45"), secProps, secApp, secData); err != nil || !bytes.Equal(enc, want) {
		t.Fatalf("got %x want %x (%v)", enc, want, err)
	}
	v := NewValueMessage(nil, nil, nil, "v")
	enc, err = v.MarshalAMQP(nil)
	if want := hx("00 53 77 a1 01 'v'"); err != nil || !bytes.Equal(enc, want) {
		t.Fatalf("got %x want %x (%v)", enc, want, err)
	}
	seq := &Message{Body: BodySequence, Sequence: [][]any{{uint32(1)}, {}}}
	enc, err = seq.MarshalAMQP(nil)
	if want := hx("00 53 76 c0 03 01 52 01 00 53 76 45"); err != nil || !bytes.Equal(enc, want) {
		t.Fatalf("got %x want %x (%v)", enc, want, err)
	}
	if _, err := NewDataMessage(nil, nil, []Property{{"l", []any{}}}, nil).MarshalAMQP(nil); !errors.Is(err, ErrEncode) {
		t.Fatal("compound application property accepted")
	}
}

func TestMessageDecodeErrors(t *testing.T) {
	cases := map[string][]byte{
		"properties before header": cat(secProps, secHeader),
		"duplicate header":         cat(secHeader, secHeader),
		"data then value":          cat(secData, hx("00 53 77 40")),
		"two values":               hx("00 53 77 40 00 53 77 40"),
		"sequence then data":       cat(hx("00 53 76 45"), secData),
		"app property list value":  hx("00 53 74 c1 04 02 a1 00 45"),
		"app property symbol key":  hx("00 53 74 c1 05 02 a3 01 'k' 40"),
		"unknown section":          hx("00 53 79 45"),
		"not described":            hx("a1 01 'x'"),
		"truncated data":           hx("00 53 75 a0 05 'hi'"),
		"footer then data":         cat(secFooter, secData),
	}
	for name, in := range cases {
		if _, err := DecodeMessage(in); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	m, err := DecodeMessage(cat(secData, secData))
	if err != nil || len(m.Data) != 2 || !bytes.Equal(m.Raw.Body, cat(secData, secData)) {
		t.Fatal("two data sections", err)
	}
	if m, err := DecodeMessage(nil); err != nil || m.Body != BodyNone {
		t.Fatal("empty message", err)
	}
}
