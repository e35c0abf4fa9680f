package encoding

import "time"

// DefaultPriority is the priority of a message whose header carries none.
const DefaultPriority = 4

// Header is the header message section (part 3.2.1).
//
//	<type name="header" class="composite" source="list" provides="section">
//	    <descriptor name="amqp:header:list" code="0x00000000:0x00000070"/>
//	    <field name="durable" type="boolean" default="false"/>
//	    <field name="priority" type="ubyte" default="4"/>
//	    <field name="ttl" type="milliseconds"/>
//	    <field name="first-acquirer" type="boolean" default="false"/>
//	    <field name="delivery-count" type="uint" default="0"/>
//	</type>
//
// Decoding fills Priority with DefaultPriority when absent and encoding
// omits a priority equal to it; build headers with NewHeader so a zero
// Priority is not sent by mistake.
type Header struct {
	Durable       bool
	Priority      uint8
	TTL           uint32 // milliseconds; 0 = no ttl
	FirstAcquirer bool
	DeliveryCount uint32
}

// NewHeader returns a header with the default priority.
func NewHeader() *Header { return &Header{Priority: DefaultPriority} }

// MarshalAMQP appends h, or nothing if h is nil (an absent section).
func (h *Header) MarshalAMQP(dst []byte) ([]byte, error) {
	if h == nil {
		return dst, nil
	}
	dst = AppendDescriptor(dst, DescHeader)
	dst, l := BeginList(dst)
	dst = l.OptBool(dst, h.Durable)
	if h.Priority == DefaultPriority {
		dst = l.Null(dst)
	} else {
		dst = AppendUbyte(dst, h.Priority)
		l.Field(dst)
	}
	dst = appendOptUint(dst, &l, h.TTL)
	dst = l.OptBool(dst, h.FirstAcquirer)
	dst = appendOptUint(dst, &l, h.DeliveryCount)
	return l.End(dst), nil
}

func appendOptUint(dst []byte, l *ListWriter, v uint32) []byte {
	if v == 0 {
		return l.Null(dst)
	}
	dst = AppendUint(dst, v)
	l.Field(dst)
	return dst
}

// UnmarshalAMQP reads a header section.
func (h *Header) UnmarshalAMQP(r *Reader) error {
	n, f, err := r.ReadComposite(DescHeader)
	if err != nil {
		return err
	}
	*h = Header{Priority: DefaultPriority}
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		switch i {
		case 0:
			h.Durable, err = f.ReadBool()
		case 1:
			h.Priority, err = f.ReadUbyte()
		case 2:
			h.TTL, err = f.ReadUint()
		case 3:
			h.FirstAcquirer, err = f.ReadBool()
		case 4:
			h.DeliveryCount, err = f.ReadUint()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	return f.Finish()
}

// Properties is the properties message section (part 3.2.4). Empty strings,
// nil slices and zero times stand for absent fields.
//
//	<type name="properties" class="composite" source="list" provides="section">
//	    <descriptor name="amqp:properties:list" code="0x00000000:0x00000073"/>
//	    <field name="message-id" type="*" requires="message-id"/>
//	    <field name="user-id" type="binary"/>
//	    <field name="to" type="*" requires="address"/>
//	    <field name="subject" type="string"/>
//	    <field name="reply-to" type="*" requires="address"/>
//	    <field name="correlation-id" type="*" requires="message-id"/>
//	    <field name="content-type" type="symbol"/>
//	    <field name="content-encoding" type="symbol"/>
//	    <field name="absolute-expiry-time" type="timestamp"/>
//	    <field name="creation-time" type="timestamp"/>
//	    <field name="group-id" type="string"/>
//	    <field name="group-sequence" type="sequence-no"/>
//	    <field name="reply-to-group-id" type="string"/>
//	</type>
type Properties struct {
	MessageID          any // nil, uint64, UUID, []byte or string
	UserID             []byte
	To                 string
	Subject            string
	ReplyTo            string
	CorrelationID      any // nil, uint64, UUID, []byte or string
	ContentType        Symbol
	ContentEncoding    Symbol
	AbsoluteExpiryTime time.Time
	CreationTime       time.Time
	GroupID            string
	GroupSequence      uint32
	HasGroupSequence   bool
	ReplyToGroupID     string
}

// MarshalAMQP appends p, or nothing if p is nil (an absent section).
func (p *Properties) MarshalAMQP(dst []byte) ([]byte, error) {
	if p == nil {
		return dst, nil
	}
	var err error
	dst = AppendDescriptor(dst, DescProperties)
	dst, l := BeginList(dst)
	if dst, err = appendMessageID(dst, &l, p.MessageID); err != nil {
		return dst, err
	}
	if p.UserID == nil {
		dst = l.Null(dst)
	} else {
		dst = AppendBinary(dst, p.UserID)
		l.Field(dst)
	}
	dst = l.OptString(dst, p.To)
	dst = l.OptString(dst, p.Subject)
	dst = l.OptString(dst, p.ReplyTo)
	if dst, err = appendMessageID(dst, &l, p.CorrelationID); err != nil {
		return dst, err
	}
	dst = l.OptSymbol(dst, p.ContentType)
	dst = l.OptSymbol(dst, p.ContentEncoding)
	dst = appendOptTime(dst, &l, p.AbsoluteExpiryTime)
	dst = appendOptTime(dst, &l, p.CreationTime)
	dst = l.OptString(dst, p.GroupID)
	if p.HasGroupSequence {
		dst = AppendUint(dst, p.GroupSequence)
		l.Field(dst)
	} else {
		dst = l.Null(dst)
	}
	dst = l.OptString(dst, p.ReplyToGroupID)
	return l.End(dst), nil
}

func appendOptTime(dst []byte, l *ListWriter, t time.Time) []byte {
	if t.IsZero() {
		return l.Null(dst)
	}
	dst = AppendTimestamp(dst, t)
	l.Field(dst)
	return dst
}

func appendMessageID(dst []byte, l *ListWriter, id any) ([]byte, error) {
	switch v := id.(type) {
	case nil:
		return l.Null(dst), nil
	case uint64:
		dst = AppendUlong(dst, v)
	case UUID:
		dst = AppendUUID(dst, v)
	case []byte:
		dst = AppendBinary(dst, v)
	case string:
		dst = AppendString(dst, v)
	default:
		return dst, encodeErrorf("message-id of type %T", id)
	}
	l.Field(dst)
	return dst, nil
}

// ReadMessageID reads a message-id: ulong (uint64), uuid, binary or string.
func (r *Reader) ReadMessageID() (any, error) {
	c, err := r.PeekCode()
	if err != nil {
		return nil, err
	}
	switch c {
	case CodeUlong0, CodeSmallUlong, CodeUlong:
		return r.ReadUlong()
	case CodeUUID:
		return r.ReadUUID()
	case CodeVbin8, CodeVbin32:
		return r.ReadBinary()
	case CodeStr8, CodeStr32:
		return r.ReadString()
	}
	return nil, r.errorf("message-id of format code 0x%02x", c)
}

// UnmarshalAMQP reads a properties section.
func (p *Properties) UnmarshalAMQP(r *Reader) error {
	n, f, err := r.ReadComposite(DescProperties)
	if err != nil {
		return err
	}
	*p = Properties{}
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		switch i {
		case 0:
			p.MessageID, err = f.ReadMessageID()
		case 1:
			p.UserID, err = f.ReadBinary()
		case 2:
			p.To, err = f.readAddress()
		case 3:
			p.Subject, err = f.ReadString()
		case 4:
			p.ReplyTo, err = f.readAddress()
		case 5:
			p.CorrelationID, err = f.ReadMessageID()
		case 6:
			p.ContentType, err = f.ReadSymbol()
		case 7:
			p.ContentEncoding, err = f.ReadSymbol()
		case 8:
			p.AbsoluteExpiryTime, err = f.ReadTimestamp()
		case 9:
			p.CreationTime, err = f.ReadTimestamp()
		case 10:
			p.GroupID, err = f.ReadString()
		case 11:
			p.GroupSequence, err = f.ReadUint()
			p.HasGroupSequence = true
		case 12:
			p.ReplyToGroupID, err = f.ReadString()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	return f.Finish()
}

// Property is one application property: a string key and a simple value
// (no list, map or array).
type Property struct {
	Key   string
	Value any
}

// BodyKind says which body sections a message carries.
type BodyKind uint8

// Body kinds (part 3.2): one or more data sections, one or more amqp-sequence
// sections, or a single amqp-value section.
const (
	BodyNone BodyKind = iota
	BodyData
	BodySequence
	BodyValue
)

// RawSections holds the encoded bytes of each section of a decoded message,
// aliasing the decoded payload; nil means the section was absent.
type RawSections struct {
	Header                []byte
	DeliveryAnnotations   []byte
	MessageAnnotations    []byte
	Properties            []byte
	ApplicationProperties []byte
	Body                  []byte // all body sections
	Footer                []byte
	// Bare is everything after the message annotations: the bare message
	// (properties, application-properties, body) and the footer. A broker
	// forwards it byte for byte so signatures over the bare message hold.
	Bare []byte
}

// Message is an annotated AMQP message (part 3.2). Absent sections are nil;
// decoding keeps each section's raw bytes in Raw.
type Message struct {
	Header                *Header
	DeliveryAnnotations   Map
	MessageAnnotations    Map
	Properties            *Properties
	ApplicationProperties []Property
	Body                  BodyKind
	Data                  [][]byte // BodyData
	Sequence              [][]any  // BodySequence
	Value                 any      // BodyValue
	Footer                Map
	Raw                   RawSections
}

// NewDataMessage builds a message with one data section, for conversions
// from other protocols. Any of h, p and ap may be nil.
func NewDataMessage(h *Header, p *Properties, ap []Property, data []byte) *Message {
	return &Message{Header: h, Properties: p, ApplicationProperties: ap, Body: BodyData, Data: [][]byte{data}}
}

// NewValueMessage builds a message with an amqp-value body.
func NewValueMessage(h *Header, p *Properties, ap []Property, v any) *Message {
	return &Message{Header: h, Properties: p, ApplicationProperties: ap, Body: BodyValue, Value: v}
}

// section ranks enforce the section order of part 3.2.
const (
	rankHeader = iota + 1
	rankDeliveryAnnotations
	rankMessageAnnotations
	rankProperties
	rankApplicationProperties
	rankBody
	rankFooter
)

// DecodeMessage decodes a complete message payload (the concatenated
// payloads of a delivery's transfer frames).
func DecodeMessage(payload []byte) (*Message, error) {
	m := new(Message)
	if err := m.Decode(payload); err != nil {
		return nil, err
	}
	return m, nil
}

// Decode decodes payload into m, replacing its contents. Byte slices in m
// alias payload.
func (m *Message) Decode(payload []byte) error {
	*m = Message{}
	r := NewReader(payload)
	last := 0
	bodyStart, bareStart := -1, len(payload)
	for r.Len() > 0 {
		start := r.off
		code, err := r.PeekDescriptor()
		if err != nil {
			return err
		}
		rank := sectionRank(code)
		if rank == 0 {
			return r.errorf("unknown message section 0x%x", code)
		}
		repeat := rank == rankBody && last == rankBody &&
			(code == DescData && m.Body == BodyData || code == DescAMQPSequence && m.Body == BodySequence)
		if rank <= last && !repeat {
			return r.errorf("message section 0x%x out of order", code)
		}
		last = rank
		if rank >= rankProperties && bareStart == len(payload) {
			bareStart = start
		}
		switch code {
		case DescHeader:
			m.Header = new(Header)
			err = m.Header.UnmarshalAMQP(&r)
			m.Raw.Header = payload[start:r.off:r.off]
		case DescDeliveryAnnotations:
			m.DeliveryAnnotations, err = r.readAnnotations()
			m.Raw.DeliveryAnnotations = payload[start:r.off:r.off]
		case DescMessageAnnotations:
			m.MessageAnnotations, err = r.readAnnotations()
			m.Raw.MessageAnnotations = payload[start:r.off:r.off]
		case DescProperties:
			m.Properties = new(Properties)
			err = m.Properties.UnmarshalAMQP(&r)
			m.Raw.Properties = payload[start:r.off:r.off]
		case DescApplicationProperties:
			m.ApplicationProperties, err = r.readApplicationProperties()
			m.Raw.ApplicationProperties = payload[start:r.off:r.off]
		case DescData:
			var b []byte
			if _, err = r.ReadDescriptor(); err == nil {
				b, err = r.ReadBinary()
			}
			m.Body, m.Data = BodyData, append(m.Data, b)
		case DescAMQPSequence:
			var l []any
			if _, err = r.ReadDescriptor(); err == nil {
				l, err = r.ReadList()
			}
			m.Body, m.Sequence = BodySequence, append(m.Sequence, l)
		case DescAMQPValue:
			if _, err = r.ReadDescriptor(); err == nil {
				m.Value, err = r.ReadAny()
			}
			m.Body = BodyValue
		case DescFooter:
			m.Footer, err = r.readAnnotations()
			m.Raw.Footer = payload[start:r.off:r.off]
		}
		if err != nil {
			return err
		}
		if rank == rankBody {
			if bodyStart < 0 {
				bodyStart = start
			}
			m.Raw.Body = payload[bodyStart:r.off:r.off]
		}
	}
	m.Raw.Bare = payload[bareStart:]
	return nil
}

func sectionRank(code uint64) int {
	switch code {
	case DescHeader:
		return rankHeader
	case DescDeliveryAnnotations:
		return rankDeliveryAnnotations
	case DescMessageAnnotations:
		return rankMessageAnnotations
	case DescProperties:
		return rankProperties
	case DescApplicationProperties:
		return rankApplicationProperties
	case DescData, DescAMQPSequence, DescAMQPValue:
		return rankBody
	case DescFooter:
		return rankFooter
	}
	return 0
}

// readAnnotations reads the descriptor and map of an annotations section; a
// null map reads as an empty one.
func (r *Reader) readAnnotations() (Map, error) {
	if _, err := r.ReadDescriptor(); err != nil {
		return nil, err
	}
	if r.Null() {
		return Map{}, nil
	}
	return r.ReadMap()
}

func (r *Reader) readApplicationProperties() ([]Property, error) {
	if _, err := r.ReadDescriptor(); err != nil {
		return nil, err
	}
	if r.Null() {
		return []Property{}, nil
	}
	n, body, err := r.ReadMapHeader()
	if err != nil {
		return nil, err
	}
	props := make([]Property, n)
	for i := range props {
		if props[i].Key, err = body.ReadString(); err != nil {
			return nil, err
		}
		if c, _ := body.PeekCode(); codeKinds[c] == kindCompound8 || codeKinds[c] == kindCompound32 || c == CodeList0 {
			return nil, body.errorf("application property %q is not of a simple type", props[i].Key)
		}
		if props[i].Value, err = body.ReadAny(); err != nil {
			return nil, err
		}
	}
	return props, body.Finish()
}

// MarshalAMQP encodes m's sections from its fields (Raw is ignored).
func (m *Message) MarshalAMQP(dst []byte) ([]byte, error) {
	dst, err := m.Header.MarshalAMQP(dst)
	if err != nil {
		return dst, err
	}
	if dst, err = appendAnnotations(dst, DescDeliveryAnnotations, m.DeliveryAnnotations); err != nil {
		return dst, err
	}
	if dst, err = appendAnnotations(dst, DescMessageAnnotations, m.MessageAnnotations); err != nil {
		return dst, err
	}
	return m.appendBare(dst)
}

// appendBare appends properties, application-properties, body and footer.
func (m *Message) appendBare(dst []byte) ([]byte, error) {
	dst, err := m.Properties.MarshalAMQP(dst)
	if err != nil {
		return dst, err
	}
	if m.ApplicationProperties != nil {
		if dst, err = AppendApplicationProperties(dst, m.ApplicationProperties); err != nil {
			return dst, err
		}
	}
	switch m.Body {
	case BodyData:
		for _, d := range m.Data {
			dst = AppendBinary(AppendDescriptor(dst, DescData), d)
		}
	case BodySequence:
		for _, s := range m.Sequence {
			if dst, err = AppendList(AppendDescriptor(dst, DescAMQPSequence), s); err != nil {
				return dst, err
			}
		}
	case BodyValue:
		if dst, err = AppendValue(AppendDescriptor(dst, DescAMQPValue), m.Value); err != nil {
			return dst, err
		}
	}
	return appendAnnotations(dst, DescFooter, m.Footer)
}

// AppendForward appends the message as a broker forwards it: header h (if
// non-nil) replacing the received one, the received message annotations, or
// ma if non-nil, then the bare message and footer byte for byte. Delivery
// annotations are dropped: they are meant for one hop only. m must come from
// Decode.
func (m *Message) AppendForward(dst []byte, h *Header, ma Map) ([]byte, error) {
	dst, err := h.MarshalAMQP(dst)
	if err != nil {
		return dst, err
	}
	if ma != nil {
		if dst, err = appendAnnotations(dst, DescMessageAnnotations, ma); err != nil {
			return dst, err
		}
	} else {
		dst = append(dst, m.Raw.MessageAnnotations...)
	}
	return append(dst, m.Raw.Bare...), nil
}

func appendAnnotations(dst []byte, code uint64, m Map) ([]byte, error) {
	if m == nil {
		return dst, nil
	}
	return AppendMap(AppendDescriptor(dst, code), m)
}

// AppendApplicationProperties appends an application-properties section.
func AppendApplicationProperties(dst []byte, props []Property) ([]byte, error) {
	dst = AppendDescriptor(dst, DescApplicationProperties)
	dst, c := beginCompound(dst)
	var err error
	for _, p := range props {
		switch p.Value.(type) {
		case []any, Map, Array, []Symbol:
			return dst, encodeErrorf("application property %q is not of a simple type", p.Key)
		}
		dst = AppendString(dst, p.Key)
		if dst, err = AppendValue(dst, p.Value); err != nil {
			return dst, err
		}
	}
	return c.end(dst, CodeMap8, CodeMap32, 2*len(props)), nil
}
