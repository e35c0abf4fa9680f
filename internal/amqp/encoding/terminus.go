package encoding

import "time"

// Durability is the terminus-durability type (part 3.5.5).
type Durability uint32

// Terminus durabilities.
const (
	DurableNone          Durability = 0
	DurableConfiguration Durability = 1
	DurableUnsettled     Durability = 2
)

// Terminus expiry policies (part 3.5.6). An empty ExpiryPolicy means the
// default, session-end.
const (
	ExpiryLinkDetach      Symbol = "link-detach"
	ExpirySessionEnd      Symbol = "session-end"
	ExpiryConnectionClose Symbol = "connection-close"
	ExpiryNever           Symbol = "never"
)

// Standard distribution modes (part 3.5.7).
const (
	DistributionMove Symbol = "move"
	DistributionCopy Symbol = "copy"
)

// LifetimePolicyKey is the dynamic-node-properties key holding a lifetime
// policy; its value is a Described with one of the DescDeleteOn* codes and
// an empty list, e.g. Described{Descriptor: DescDeleteOnClose, Value: []any{}}.
const LifetimePolicyKey Symbol = "lifetime-policy"

// Filter is one entry of a source's filter-set: a key and a described
// filter value. Descriptor is a uint64 or a Symbol; a nil Descriptor encodes
// the entry's value as null.
type Filter struct {
	Key        Symbol
	Descriptor any
	Value      any
}

// Is reports whether f's descriptor is name or, if code is non-zero, code.
func (f Filter) Is(name Symbol, code uint64) bool {
	switch d := f.Descriptor.(type) {
	case Symbol:
		return d == name
	case uint64:
		return code != 0 && d == code
	}
	return false
}

// FilterSet is the filter-set type: symbol keys mapped to described filters, in wire order.
type FilterSet []Filter

// Selector returns the value of an apache.org:selector-filter:string filter.
func (fs FilterSet) Selector() (string, bool) {
	for _, f := range fs {
		if f.Is(SelectorFilter, DescSelectorFilter) {
			s, ok := f.Value.(string)
			return s, ok
		}
	}
	return "", false
}

// StartAtSequence returns the value of a throng:start-at-sequence:ulong filter.
func (fs FilterSet) StartAtSequence() (uint64, bool) {
	for _, f := range fs {
		if f.Is(StartAtSequenceFilter, 0) {
			switch v := f.Value.(type) {
			case uint64:
				return v, true
			case uint32:
				return uint64(v), true
			}
			return 0, false
		}
	}
	return 0, false
}

// StartAtTime returns the value of a throng:start-at-time:timestamp filter.
func (fs FilterSet) StartAtTime() (time.Time, bool) {
	for _, f := range fs {
		if f.Is(StartAtTimeFilter, 0) {
			t, ok := f.Value.(time.Time)
			return t, ok
		}
	}
	return time.Time{}, false
}

func appendFilterSet(dst []byte, l *ListWriter, fs FilterSet) ([]byte, error) {
	if fs == nil {
		return l.Null(dst), nil
	}
	dst, c := beginCompound(dst)
	var err error
	for _, f := range fs {
		dst = AppendSymbol(dst, f.Key)
		if f.Descriptor == nil {
			dst = AppendNull(dst)
			continue
		}
		if dst, err = AppendDescribed(dst, Described{Descriptor: f.Descriptor, Value: f.Value}); err != nil {
			return dst, err
		}
	}
	dst = c.end(dst, CodeMap8, CodeMap32, 2*len(fs))
	l.Field(dst)
	return dst, nil
}

func (r *Reader) readFilterSet() (FilterSet, error) {
	n, body, err := r.ReadMapHeader()
	if err != nil {
		return nil, err
	}
	fs := make(FilterSet, n)
	for i := range fs {
		if fs[i].Key, err = body.ReadSymbol(); err != nil {
			return nil, err
		}
		v, err := body.ReadAny()
		if err != nil {
			return nil, err
		}
		switch v := v.(type) {
		case nil:
		case Described:
			fs[i].Descriptor, fs[i].Value = v.Descriptor, v.Value
		default:
			return nil, body.errorf("filter %q is not a described value", fs[i].Key)
		}
	}
	return fs, body.Finish()
}

// Source is the source terminus (part 3.5.3).
//
//	<type name="source" class="composite" source="list" provides="source">
//	    <descriptor name="amqp:source:list" code="0x00000000:0x00000028"/>
//	    <field name="address" type="*" requires="address"/>
//	    <field name="durable" type="terminus-durability" default="none"/>
//	    <field name="expiry-policy" type="terminus-expiry-policy" default="session-end"/>
//	    <field name="timeout" type="seconds" default="0"/>
//	    <field name="dynamic" type="boolean" default="false"/>
//	    <field name="dynamic-node-properties" type="node-properties"/>
//	    <field name="distribution-mode" type="symbol" requires="distribution-mode"/>
//	    <field name="filter" type="filter-set"/>
//	    <field name="default-outcome" type="*" requires="outcome"/>
//	    <field name="outcomes" type="symbol" multiple="true"/>
//	    <field name="capabilities" type="symbol" multiple="true"/>
//	</type>
type Source struct {
	Address               string // "" = null
	Durable               Durability
	ExpiryPolicy          Symbol // "" = session-end; decoding fills in session-end
	Timeout               uint32 // seconds
	Dynamic               bool
	DynamicNodeProperties Map
	DistributionMode      Symbol
	Filter                FilterSet
	DefaultOutcome        DeliveryState
	Outcomes              []Symbol
	Capabilities          []Symbol
}

// Target is the target terminus (part 3.5.4).
//
//	<type name="target" class="composite" source="list" provides="target">
//	    <descriptor name="amqp:target:list" code="0x00000000:0x00000029"/>
//	    <field name="address" type="*" requires="address"/>
//	    <field name="durable" type="terminus-durability" default="none"/>
//	    <field name="expiry-policy" type="terminus-expiry-policy" default="session-end"/>
//	    <field name="timeout" type="seconds" default="0"/>
//	    <field name="dynamic" type="boolean" default="false"/>
//	    <field name="dynamic-node-properties" type="node-properties"/>
//	    <field name="capabilities" type="symbol" multiple="true"/>
//	</type>
type Target struct {
	Address               string // "" = null (the anonymous relay's target)
	Durable               Durability
	ExpiryPolicy          Symbol // "" = session-end; decoding fills in session-end
	Timeout               uint32 // seconds
	Dynamic               bool
	DynamicNodeProperties Map
	Capabilities          []Symbol
}

// appendTerminusHead appends the five fields shared by source and target.
func appendTerminusHead(dst []byte, l *ListWriter, addr string, d Durability, exp Symbol, timeout uint32, dynamic bool, props Map) ([]byte, error) {
	dst = l.OptString(dst, addr)
	if d == DurableNone {
		dst = l.Null(dst)
	} else {
		dst = AppendUint(dst, uint32(d))
		l.Field(dst)
	}
	if exp == ExpirySessionEnd {
		exp = ""
	}
	dst = l.OptSymbol(dst, exp)
	if timeout == 0 {
		dst = l.Null(dst)
	} else {
		dst = AppendUint(dst, timeout)
		l.Field(dst)
	}
	dst = l.OptBool(dst, dynamic)
	return appendOptionalMap(dst, l, props)
}

// MarshalAMQP appends s, or null if s is nil.
func (s *Source) MarshalAMQP(dst []byte) ([]byte, error) {
	if s == nil {
		return AppendNull(dst), nil
	}
	dst = AppendDescriptor(dst, DescSource)
	dst, l := BeginList(dst)
	dst, err := appendTerminusHead(dst, &l, s.Address, s.Durable, s.ExpiryPolicy, s.Timeout, s.Dynamic, s.DynamicNodeProperties)
	if err != nil {
		return dst, err
	}
	dst = l.OptSymbol(dst, s.DistributionMode)
	if dst, err = appendFilterSet(dst, &l, s.Filter); err != nil {
		return dst, err
	}
	if s.DefaultOutcome == nil {
		dst = l.Null(dst)
	} else {
		if dst, err = s.DefaultOutcome.MarshalAMQP(dst); err != nil {
			return dst, err
		}
		l.Field(dst)
	}
	dst = l.OptSymbols(dst, s.Outcomes)
	dst = l.OptSymbols(dst, s.Capabilities)
	return l.End(dst), nil
}

// MarshalAMQP appends t, or null if t is nil.
func (t *Target) MarshalAMQP(dst []byte) ([]byte, error) {
	if t == nil {
		return AppendNull(dst), nil
	}
	dst = AppendDescriptor(dst, DescTarget)
	dst, l := BeginList(dst)
	dst, err := appendTerminusHead(dst, &l, t.Address, t.Durable, t.ExpiryPolicy, t.Timeout, t.Dynamic, t.DynamicNodeProperties)
	if err != nil {
		return dst, err
	}
	dst = l.OptSymbols(dst, t.Capabilities)
	return l.End(dst), nil
}

// readAddress reads an address field; the type is "*" but every known
// address type is a string, and some peers send a symbol.
func (r *Reader) readAddress() (string, error) {
	if c, _ := r.PeekCode(); c == CodeSym8 || c == CodeSym32 {
		s, err := r.ReadSymbol()
		return string(s), err
	}
	return r.ReadString()
}

// readTerminusHead reads field i (0..5) shared by source and target.
func (r *Reader) readTerminusHead(i int, addr *string, d *Durability, exp *Symbol, timeout *uint32, dynamic *bool, props *Map) error {
	var err error
	switch i {
	case 0:
		*addr, err = r.readAddress()
	case 1:
		var v uint32
		v, err = r.ReadUint()
		*d = Durability(v)
	case 2:
		*exp, err = r.ReadSymbol()
	case 3:
		*timeout, err = r.ReadUint()
	case 4:
		*dynamic, err = r.ReadBool()
	case 5:
		*props, err = r.ReadMap()
	}
	return err
}

// UnmarshalAMQP reads a source.
func (s *Source) UnmarshalAMQP(r *Reader) error {
	n, f, err := r.ReadComposite(DescSource)
	if err != nil {
		return err
	}
	*s = Source{ExpiryPolicy: ExpirySessionEnd}
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		switch {
		case i <= 5:
			err = f.readTerminusHead(i, &s.Address, &s.Durable, &s.ExpiryPolicy, &s.Timeout, &s.Dynamic, &s.DynamicNodeProperties)
		case i == 6:
			s.DistributionMode, err = f.ReadSymbol()
		case i == 7:
			s.Filter, err = f.readFilterSet()
		case i == 8:
			s.DefaultOutcome, err = f.ReadDeliveryState()
		case i == 9:
			s.Outcomes, err = f.ReadSymbols()
		case i == 10:
			s.Capabilities, err = f.ReadSymbols()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	return f.Finish()
}

// UnmarshalAMQP reads a target.
func (t *Target) UnmarshalAMQP(r *Reader) error {
	n, f, err := r.ReadComposite(DescTarget)
	if err != nil {
		return err
	}
	*t = Target{ExpiryPolicy: ExpirySessionEnd}
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		switch {
		case i <= 5:
			err = f.readTerminusHead(i, &t.Address, &t.Durable, &t.ExpiryPolicy, &t.Timeout, &t.Dynamic, &t.DynamicNodeProperties)
		case i == 6:
			t.Capabilities, err = f.ReadSymbols()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	return f.Finish()
}
