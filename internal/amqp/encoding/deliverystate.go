package encoding

import "fmt"

// DeliveryState is a delivery state or outcome (part 3.4): *Received,
// *Accepted, *Rejected, *Released, *Modified, or *OtherState for states this
// package does not model (for example transactional-state).
type DeliveryState interface {
	Marshaler
	deliveryState()
}

// Error is the AMQP error type (part 2.8.14); it implements error.
//
//	<type name="error" class="composite" source="list">
//	    <descriptor name="amqp:error:list" code="0x00000000:0x0000001d"/>
//	    <field name="condition" type="symbol" requires="error-condition" mandatory="true"/>
//	    <field name="description" type="string"/>
//	    <field name="info" type="fields"/>
//	</type>
type Error struct {
	Condition   Symbol
	Description string
	Info        Map
}

func (e *Error) Error() string {
	if e.Description == "" {
		return string(e.Condition)
	}
	return string(e.Condition) + ": " + e.Description
}

// MarshalAMQP appends e, or null if e is nil.
func (e *Error) MarshalAMQP(dst []byte) ([]byte, error) {
	if e == nil {
		return AppendNull(dst), nil
	}
	dst = AppendDescriptor(dst, DescError)
	dst, l := BeginList(dst)
	dst = AppendSymbol(dst, e.Condition) // mandatory: never null
	l.Field(dst)
	dst = l.OptString(dst, e.Description)
	dst, err := appendOptionalMap(dst, &l, e.Info)
	return l.End(dst), err
}

// UnmarshalAMQP reads an error.
func (e *Error) UnmarshalAMQP(r *Reader) error {
	n, f, err := r.ReadComposite(DescError)
	if err != nil {
		return err
	}
	*e = Error{}
	hasCondition := false
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		switch i {
		case 0:
			e.Condition, err = f.ReadSymbol()
			hasCondition = true
		case 1:
			e.Description, err = f.ReadString()
		case 2:
			e.Info, err = f.ReadMap()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if !hasCondition {
		return Missing(r, "error", "condition")
	}
	return f.Finish()
}

// ReadError reads an error, or returns nil for null.
func (r *Reader) ReadError() (*Error, error) {
	if r.Null() {
		return nil, nil
	}
	e := new(Error)
	if err := e.UnmarshalAMQP(r); err != nil {
		return nil, err
	}
	return e, nil
}

// Missing returns the decode error for an absent mandatory field.
func Missing(r *Reader, typ, field string) error {
	return &DecodeError{Offset: r.off, Msg: fmt.Sprintf("%s: mandatory field %s is missing", typ, field)}
}

// Received is the received delivery state (part 3.4.1).
//
//	<type name="received" class="composite" source="list" provides="delivery-state">
//	    <descriptor name="amqp:received:list" code="0x00000000:0x00000023"/>
//	    <field name="section-number" type="uint" mandatory="true"/>
//	    <field name="section-offset" type="ulong" mandatory="true"/>
//	</type>
type Received struct {
	SectionNumber uint32
	SectionOffset uint64
}

// Accepted is the accepted outcome (part 3.4.2).
//
//	<type name="accepted" class="composite" source="list" provides="delivery-state, outcome">
//	    <descriptor name="amqp:accepted:list" code="0x00000000:0x00000024"/>
//	</type>
type Accepted struct{}

// Rejected is the rejected outcome (part 3.4.3).
//
//	<type name="rejected" class="composite" source="list" provides="delivery-state, outcome">
//	    <descriptor name="amqp:rejected:list" code="0x00000000:0x00000025"/>
//	    <field name="error" type="error"/>
//	</type>
type Rejected struct {
	Error *Error
}

// Released is the released outcome (part 3.4.4).
//
//	<type name="released" class="composite" source="list" provides="delivery-state, outcome">
//	    <descriptor name="amqp:released:list" code="0x00000000:0x00000026"/>
//	</type>
type Released struct{}

// Modified is the modified outcome (part 3.4.5).
//
//	<type name="modified" class="composite" source="list" provides="delivery-state, outcome">
//	    <descriptor name="amqp:modified:list" code="0x00000000:0x00000027"/>
//	    <field name="delivery-failed" type="boolean"/>
//	    <field name="undeliverable-here" type="boolean"/>
//	    <field name="message-annotations" type="fields"/>
//	</type>
type Modified struct {
	DeliveryFailed     bool
	UndeliverableHere  bool
	MessageAnnotations Map
}

// OtherState is a delivery state this package does not model, kept as a
// described value (for example transactional-state, 0x34).
type OtherState struct {
	Described
}

func (*Received) deliveryState()   {}
func (*Accepted) deliveryState()   {}
func (*Rejected) deliveryState()   {}
func (*Released) deliveryState()   {}
func (*Modified) deliveryState()   {}
func (*OtherState) deliveryState() {}

// MarshalAMQP appends s.
func (s *Received) MarshalAMQP(dst []byte) ([]byte, error) {
	if s == nil {
		return AppendNull(dst), nil
	}
	dst = AppendDescriptor(dst, DescReceived)
	dst, l := BeginList(dst)
	dst = AppendUint(dst, s.SectionNumber)
	l.Field(dst)
	dst = AppendUlong(dst, s.SectionOffset)
	l.Field(dst)
	return l.End(dst), nil
}

// MarshalAMQP appends s.
func (s *Accepted) MarshalAMQP(dst []byte) ([]byte, error) {
	return append(AppendDescriptor(dst, DescAccepted), CodeList0), nil
}

// MarshalAMQP appends s.
func (s *Released) MarshalAMQP(dst []byte) ([]byte, error) {
	return append(AppendDescriptor(dst, DescReleased), CodeList0), nil
}

// MarshalAMQP appends s.
func (s *Rejected) MarshalAMQP(dst []byte) ([]byte, error) {
	if s == nil {
		return AppendNull(dst), nil
	}
	dst = AppendDescriptor(dst, DescRejected)
	dst, l := BeginList(dst)
	if s.Error == nil {
		dst = l.Null(dst)
	} else {
		var err error
		if dst, err = s.Error.MarshalAMQP(dst); err != nil {
			return dst, err
		}
		l.Field(dst)
	}
	return l.End(dst), nil
}

// MarshalAMQP appends s.
func (s *Modified) MarshalAMQP(dst []byte) ([]byte, error) {
	if s == nil {
		return AppendNull(dst), nil
	}
	dst = AppendDescriptor(dst, DescModified)
	dst, l := BeginList(dst)
	dst = l.OptBool(dst, s.DeliveryFailed)
	dst = l.OptBool(dst, s.UndeliverableHere)
	dst, err := appendOptionalMap(dst, &l, s.MessageAnnotations)
	return l.End(dst), err
}

// MarshalAMQP appends s.
func (s *OtherState) MarshalAMQP(dst []byte) ([]byte, error) {
	if s == nil {
		return AppendNull(dst), nil
	}
	return AppendDescribed(dst, s.Described)
}

// ReadDeliveryState reads a delivery state or outcome; null yields nil.
// Unknown descriptors yield *OtherState.
func (r *Reader) ReadDeliveryState() (DeliveryState, error) {
	if r.Null() {
		return nil, nil
	}
	code, err := r.PeekDescriptor()
	if err != nil {
		c, perr := r.PeekCode()
		if perr != nil || c != CodeDescribed {
			return nil, err
		}
		code = 0 // unknown symbolic descriptor: fall through to OtherState
	}
	switch code {
	case DescAccepted:
		return &Accepted{}, readEmptyComposite(r, code)
	case DescReleased:
		return &Released{}, readEmptyComposite(r, code)
	case DescReceived:
		s := new(Received)
		return s, s.UnmarshalAMQP(r)
	case DescRejected:
		s := new(Rejected)
		return s, s.UnmarshalAMQP(r)
	case DescModified:
		s := new(Modified)
		return s, s.UnmarshalAMQP(r)
	}
	v, err := r.ReadAny()
	if err != nil {
		return nil, err
	}
	d, ok := v.(Described)
	if !ok {
		return nil, r.errorf("delivery state is not a described type")
	}
	return &OtherState{Described: d}, nil
}

// UnmarshalAMQP reads a received state.
func (s *Received) UnmarshalAMQP(r *Reader) error {
	n, f, err := r.ReadComposite(DescReceived)
	if err != nil {
		return err
	}
	*s = Received{}
	var seen int
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		switch i {
		case 0:
			s.SectionNumber, err = f.ReadUint()
			seen |= 1
		case 1:
			s.SectionOffset, err = f.ReadUlong()
			seen |= 2
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if seen&1 == 0 {
		return Missing(r, "received", "section-number")
	}
	if seen&2 == 0 {
		return Missing(r, "received", "section-offset")
	}
	return f.Finish()
}

// UnmarshalAMQP reads a rejected outcome.
func (s *Rejected) UnmarshalAMQP(r *Reader) error {
	n, f, err := r.ReadComposite(DescRejected)
	if err != nil {
		return err
	}
	*s = Rejected{}
	for i := 0; i < n; i++ {
		switch i {
		case 0:
			s.Error, err = f.ReadError()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	return f.Finish()
}

// UnmarshalAMQP reads a modified outcome.
func (s *Modified) UnmarshalAMQP(r *Reader) error {
	n, f, err := r.ReadComposite(DescModified)
	if err != nil {
		return err
	}
	*s = Modified{}
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		switch i {
		case 0:
			s.DeliveryFailed, err = f.ReadBool()
		case 1:
			s.UndeliverableHere, err = f.ReadBool()
		case 2:
			s.MessageAnnotations, err = f.ReadMap()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	return f.Finish()
}

// UnmarshalAMQP reads an accepted outcome.
func (s *Accepted) UnmarshalAMQP(r *Reader) error { return readEmptyComposite(r, DescAccepted) }

// UnmarshalAMQP reads a released outcome.
func (s *Released) UnmarshalAMQP(r *Reader) error { return readEmptyComposite(r, DescReleased) }

// readEmptyComposite reads a composite without fields, skipping any fields
// a later version of the specification might add.
func readEmptyComposite(r *Reader, code uint64) error {
	n, f, err := r.ReadComposite(code)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := f.SkipValue(); err != nil {
			return err
		}
	}
	return f.Finish()
}
