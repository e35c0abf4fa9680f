package encoding

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

// compositeCases: composite value, hand-derived encoding, and a fresh value to decode into.
var compositeCases = []struct {
	name string
	v    interface {
		Marshaler
		Unmarshaler
	}
	enc   []byte
	fresh func() Unmarshaler
}{
	{"header", &Header{Durable: true, Priority: 4, TTL: 1000},
		hx("00 53 70 c0 08 03 41 40 70 00 00 03 e8"), func() Unmarshaler { return new(Header) }},
	{"header priority", &Header{Priority: 9, DeliveryCount: 2},
		hx("00 53 70 c0 08 05 40 50 09 40 40 52 02"), func() Unmarshaler { return new(Header) }},
	{"properties", &Properties{MessageID: uint64(1), To: "q", CreationTime: time.UnixMilli(1000).UTC()},
		hx("00 53 73 c0 16 0a 53 01 40 a1 01 'q' 40 40 40 40 40 40 83 00 00 00 00 00 00 03 e8"),
		func() Unmarshaler { return new(Properties) }},
	{"properties all", &Properties{MessageID: "m", UserID: []byte("u"), To: "t", Subject: "s", ReplyTo: "r",
		CorrelationID: UUID{15: 1}, ContentType: "ct", ContentEncoding: "ce",
		AbsoluteExpiryTime: time.UnixMilli(2).UTC(), CreationTime: time.UnixMilli(1).UTC(), GroupID: "g",
		GroupSequence: 0, HasGroupSequence: true, ReplyToGroupID: "rg"},
		hx("00 53 73 c0 43 0d a1 01 'm' a0 01 'u' a1 01 't' a1 01 's' a1 01 'r' 98 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01" +
			" a3 02 'ct' a3 02 'ce' 83 00 00 00 00 00 00 00 02 83 00 00 00 00 00 00 00 01 a1 01 'g' 43 a1 02 'rg'"),
		func() Unmarshaler { return new(Properties) }},
	{"accepted", &Accepted{}, hx("00 53 24 45"), nil},
	{"released", &Released{}, hx("00 53 26 45"), nil},
	{"rejected", &Rejected{Error: &Error{Condition: "amqp:not-found"}},
		hx("00 53 25 c0 17 01 00 53 1d c0 11 01 a3 0e 'amqp:not-found'"), func() Unmarshaler { return new(Rejected) }},
	{"modified", &Modified{DeliveryFailed: true}, hx("00 53 27 c0 02 01 41"), func() Unmarshaler { return new(Modified) }},
	{"received", &Received{SectionNumber: 1, SectionOffset: 2}, hx("00 53 23 c0 05 02 52 01 53 02"),
		func() Unmarshaler { return new(Received) }},
	{"error with info", &Error{Condition: "c", Description: "d", Info: Map{{Symbol("k"), true}}},
		hx("00 53 1d c0 0e 03 a3 01 'c' a1 01 'd' c1 05 02 a3 01 'k' 41"), func() Unmarshaler { return new(Error) }},
	{"source", &Source{Address: "q", ExpiryPolicy: ExpirySessionEnd}, hx("00 53 28 c0 04 01 a1 01 'q'"),
		func() Unmarshaler { return new(Source) }},
	{"source selector", &Source{Address: "q", ExpiryPolicy: ExpirySessionEnd,
		Filter: FilterSet{{Key: "sel", Descriptor: DescSelectorFilter, Value: "a=1"}}},
		hx("00 53 28 c0 21 08 a1 01 'q' 40 40 40 40 40 40 c1 15 02 a3 03 'sel' 00 80 00 00 46 8c 00 00 00 04 a1 03 'a=1'"),
		func() Unmarshaler { return new(Source) }},
	{"source all", &Source{Address: "a", Durable: DurableUnsettled, ExpiryPolicy: ExpiryNever, Timeout: 5, Dynamic: true,
		DynamicNodeProperties: Map{{LifetimePolicyKey, Described{DescDeleteOnClose, []any{}}}},
		DistributionMode:      DistributionCopy, DefaultOutcome: &Released{},
		Outcomes: []Symbol{"amqp:accepted:list"}, Capabilities: []Symbol{"queue"}},
		hx("00 53 28 c0 54 0b a1 01 'a' 52 02 a3 05 'never' 52 05 41 c1 16 02 a3 0f 'lifetime-policy' 00 53 2b 45" +
			" a3 04 'copy' 40 00 53 26 45 e0 15 01 a3 12 'amqp:accepted:list' e0 08 01 a3 05 'queue'"),
		func() Unmarshaler { return new(Source) }},
	{"target", &Target{Address: "q", Durable: DurableUnsettled, ExpiryPolicy: ExpirySessionEnd},
		hx("00 53 29 c0 06 02 a1 01 'q' 52 02"), func() Unmarshaler { return new(Target) }},
}

func TestCompositeEncoding(t *testing.T) {
	for _, tc := range compositeCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.v.MarshalAMQP(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.enc) {
				t.Fatalf("encode\n got %x\nwant %x", got, tc.enc)
			}
			r := NewReader(tc.enc)
			var dec any
			if _, isState := tc.v.(DeliveryState); isState {
				dec, err = r.ReadDeliveryState()
			} else {
				u := tc.fresh()
				err = u.UnmarshalAMQP(&r)
				dec = u
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Len() != 0 {
				t.Fatalf("%d bytes left", r.Len())
			}
			if !reflect.DeepEqual(dec, tc.v) {
				t.Fatalf("decode\n got %#v\nwant %#v", dec, tc.v)
			}
		})
	}
}

func TestCompositeDecodeErrors(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		into Unmarshaler
	}{
		{"error without condition", hx("00 53 1d 45"), new(Error)},
		{"received missing offset", hx("00 53 23 c0 03 01 52 01"), new(Received)},
		{"wrong descriptor", hx("00 53 29 45"), new(Source)},
		{"unknown symbolic descriptor", hx("00 a3 03 'a:b' 45"), new(Header)},
		{"field of wrong type", hx("00 53 70 c0 03 01 a1 00"), new(Header)},
		{"trailing bytes in list", hx("00 53 70 c0 03 01 41 41"), new(Header)},
		{"message-id of wrong type", hx("00 53 73 c0 03 01 41 40"), new(Properties)},
		{"filter not described", hx("00 53 28 c0 0f 08 40 40 40 40 40 40 40 c1 05 02 a3 01 'f' 41"), new(Source)},
	}
	for _, tc := range cases {
		r := NewReader(tc.in)
		if err := tc.into.UnmarshalAMQP(&r); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}

func TestSymbolicDescriptor(t *testing.T) {
	r := NewReader(hx("00 a3 10 'amqp:header:list' c0 02 01 41"))
	var h Header
	if err := h.UnmarshalAMQP(&r); err != nil || !h.Durable || h.Priority != DefaultPriority {
		t.Fatal(h, err)
	}
	r = NewReader(hx("00 a3 12 'amqp:accepted:list' 45"))
	if s, err := r.ReadDeliveryState(); err != nil || reflect.TypeOf(s) != reflect.TypeOf(&Accepted{}) {
		t.Fatal(s, err)
	}
	r = NewReader(hx("00 53 34 c0 03 01 a0 00")) // transactional-state
	s, err := r.ReadDeliveryState()
	if o, ok := s.(*OtherState); err != nil || !ok || o.Descriptor != uint64(0x34) {
		t.Fatal(s, err)
	}
}

func TestFilters(t *testing.T) {
	ts := time.UnixMilli(1700000000000).UTC()
	fs := FilterSet{
		{Key: "sel", Descriptor: SelectorFilter, Value: "color = 'red'"},
		{Key: "seq", Descriptor: StartAtSequenceFilter, Value: uint64(42)},
		{Key: "time", Descriptor: StartAtTimeFilter, Value: ts},
	}
	if s, ok := fs.Selector(); !ok || s != "color = 'red'" {
		t.Fatal(s, ok)
	}
	if n, ok := fs.StartAtSequence(); !ok || n != 42 {
		t.Fatal(n, ok)
	}
	if at, ok := fs.StartAtTime(); !ok || !at.Equal(ts) {
		t.Fatal(at, ok)
	}
	src := &Source{Address: "q", Filter: fs, ExpiryPolicy: ExpirySessionEnd}
	enc, err := src.MarshalAMQP(nil)
	if err != nil {
		t.Fatal(err)
	}
	var dec Source
	r := NewReader(enc)
	if err := dec.UnmarshalAMQP(&r); err != nil || !reflect.DeepEqual(&dec, src) {
		t.Fatalf("%#v %v", dec, err)
	}
}
