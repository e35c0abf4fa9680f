package frames

import (
	"math"

	"github.com/throngmq/throng/internal/amqp/encoding"
)

// Performative is a frame body: one of the transport performatives (*Open,
// *Begin, *Attach, *Flow, *Transfer, *Disposition, *Detach, *End, *Close) or
// a SASL frame (*SASLMechanisms, *SASLInit, *SASLChallenge, *SASLResponse,
// *SASLOutcome).
type Performative interface {
	encoding.Marshaler
	encoding.Unmarshaler
	// Descriptor returns the performative's descriptor code.
	Descriptor() uint64
}

// Role is a link endpoint's role (part 2.8.1).
type Role bool

// Roles.
const (
	RoleSender   Role = false
	RoleReceiver Role = true
)

// SenderSettleMode is the sender-settle-mode type (part 2.8.2).
type SenderSettleMode uint8

// Sender settle modes.
const (
	SenderSettleUnsettled SenderSettleMode = 0
	SenderSettleSettled   SenderSettleMode = 1
	SenderSettleMixed     SenderSettleMode = 2
)

// ReceiverSettleMode is the receiver-settle-mode type (part 2.8.3).
type ReceiverSettleMode uint8

// Receiver settle modes.
const (
	ReceiverSettleFirst  ReceiverSettleMode = 0
	ReceiverSettleSecond ReceiverSettleMode = 1
)

// Defaults of the performative fields.
const (
	DefaultMaxFrameSize uint32 = math.MaxUint32
	DefaultChannelMax   uint16 = math.MaxUint16
	DefaultHandleMax    uint32 = math.MaxUint32
)

// Open is the open performative (part 2.7.1). Decoding fills MaxFrameSize,
// ChannelMax with their defaults when absent; encoding omits values equal to
// the defaults and also a zero MaxFrameSize, which the spec forbids.
//
//	<type name="open" class="composite" source="list" provides="frame">
//	    <descriptor name="amqp:open:list" code="0x00000000:0x00000010"/>
//	    <field name="container-id" type="string" mandatory="true"/>
//	    <field name="hostname" type="string"/>
//	    <field name="max-frame-size" type="uint" default="4294967295"/>
//	    <field name="channel-max" type="ushort" default="65535"/>
//	    <field name="idle-time-out" type="milliseconds"/>
//	    <field name="outgoing-locales" type="ietf-language-tag" multiple="true"/>
//	    <field name="incoming-locales" type="ietf-language-tag" multiple="true"/>
//	    <field name="offered-capabilities" type="symbol" multiple="true"/>
//	    <field name="desired-capabilities" type="symbol" multiple="true"/>
//	    <field name="properties" type="fields"/>
//	</type>
type Open struct {
	ContainerID         string
	Hostname            string
	MaxFrameSize        uint32
	ChannelMax          uint16 // set it: a zero ChannelMax is sent as 0 (only channel 0)
	IdleTimeOut         uint32 // milliseconds; 0 = none
	OutgoingLocales     []encoding.Symbol
	IncomingLocales     []encoding.Symbol
	OfferedCapabilities []encoding.Symbol
	DesiredCapabilities []encoding.Symbol
	Properties          encoding.Map
}

// Begin is the begin performative (part 2.7.2). Decoding fills HandleMax
// with its default when absent; encoding omits it when equal to the default.
//
//	<type name="begin" class="composite" source="list" provides="frame">
//	    <descriptor name="amqp:begin:list" code="0x00000000:0x00000011"/>
//	    <field name="remote-channel" type="ushort"/>
//	    <field name="next-outgoing-id" type="transfer-number" mandatory="true"/>
//	    <field name="incoming-window" type="uint" mandatory="true"/>
//	    <field name="outgoing-window" type="uint" mandatory="true"/>
//	    <field name="handle-max" type="handle" default="4294967295"/>
//	    <field name="offered-capabilities" type="symbol" multiple="true"/>
//	    <field name="desired-capabilities" type="symbol" multiple="true"/>
//	    <field name="properties" type="fields"/>
//	</type>
type Begin struct {
	RemoteChannel       uint16
	HasRemoteChannel    bool
	NextOutgoingID      uint32
	IncomingWindow      uint32
	OutgoingWindow      uint32
	HandleMax           uint32 // set it: a zero HandleMax is sent as 0 (one link)
	OfferedCapabilities []encoding.Symbol
	DesiredCapabilities []encoding.Symbol
	Properties          encoding.Map
}

// Attach is the attach performative (part 2.7.3). Decoding fills
// SndSettleMode with mixed when absent; encoding omits mixed.
//
//	<type name="attach" class="composite" source="list" provides="frame">
//	    <descriptor name="amqp:attach:list" code="0x00000000:0x00000012"/>
//	    <field name="name" type="string" mandatory="true"/>
//	    <field name="handle" type="handle" mandatory="true"/>
//	    <field name="role" type="role" mandatory="true"/>
//	    <field name="snd-settle-mode" type="sender-settle-mode" default="mixed"/>
//	    <field name="rcv-settle-mode" type="receiver-settle-mode" default="first"/>
//	    <field name="source" type="*" requires="source"/>
//	    <field name="target" type="*" requires="target"/>
//	    <field name="unsettled" type="map"/>
//	    <field name="incomplete-unsettled" type="boolean" default="false"/>
//	    <field name="initial-delivery-count" type="sequence-no"/>
//	    <field name="max-message-size" type="ulong"/>
//	    <field name="offered-capabilities" type="symbol" multiple="true"/>
//	    <field name="desired-capabilities" type="symbol" multiple="true"/>
//	    <field name="properties" type="fields"/>
//	</type>
type Attach struct {
	Name          string
	Handle        uint32
	Role          Role
	SndSettleMode SenderSettleMode // set it: zero is unsettled, the default is mixed
	RcvSettleMode ReceiverSettleMode
	Source        *encoding.Source
	Target        *encoding.Target
	// Coordinator holds a target of another type, e.g. a transaction
	// coordinator (0x30), undecoded; Target is then nil.
	Coordinator             *encoding.Described
	Unsettled               encoding.Map
	IncompleteUnsettled     bool
	InitialDeliveryCount    uint32
	HasInitialDeliveryCount bool
	MaxMessageSize          uint64 // 0 = no limit
	OfferedCapabilities     []encoding.Symbol
	DesiredCapabilities     []encoding.Symbol
	Properties              encoding.Map
}

// Flow is the flow performative (part 2.7.4).
//
//	<type name="flow" class="composite" source="list" provides="frame">
//	    <descriptor name="amqp:flow:list" code="0x00000000:0x00000013"/>
//	    <field name="next-incoming-id" type="transfer-number"/>
//	    <field name="incoming-window" type="uint" mandatory="true"/>
//	    <field name="next-outgoing-id" type="transfer-number" mandatory="true"/>
//	    <field name="outgoing-window" type="uint" mandatory="true"/>
//	    <field name="handle" type="handle"/>
//	    <field name="delivery-count" type="sequence-no"/>
//	    <field name="link-credit" type="uint"/>
//	    <field name="available" type="uint"/>
//	    <field name="drain" type="boolean" default="false"/>
//	    <field name="echo" type="boolean" default="false"/>
//	    <field name="properties" type="fields"/>
//	</type>
type Flow struct {
	NextIncomingID    uint32
	HasNextIncomingID bool
	IncomingWindow    uint32
	NextOutgoingID    uint32
	OutgoingWindow    uint32
	Handle            uint32
	HasHandle         bool
	DeliveryCount     uint32
	HasDeliveryCount  bool
	LinkCredit        uint32
	HasLinkCredit     bool
	Available         uint32
	HasAvailable      bool
	Drain             bool
	Echo              bool
	Properties        encoding.Map
}

// Transfer is the transfer performative (part 2.7.5). The payload follows
// the performative in the frame body; DeliveryTag aliases the frame.
//
//	<type name="transfer" class="composite" source="list" provides="frame">
//	    <descriptor name="amqp:transfer:list" code="0x00000000:0x00000014"/>
//	    <field name="handle" type="handle" mandatory="true"/>
//	    <field name="delivery-id" type="delivery-number"/>
//	    <field name="delivery-tag" type="delivery-tag"/>
//	    <field name="message-format" type="message-format"/>
//	    <field name="settled" type="boolean"/>
//	    <field name="more" type="boolean" default="false"/>
//	    <field name="rcv-settle-mode" type="receiver-settle-mode"/>
//	    <field name="state" type="*" requires="delivery-state"/>
//	    <field name="resume" type="boolean" default="false"/>
//	    <field name="aborted" type="boolean" default="false"/>
//	    <field name="batchable" type="boolean" default="false"/>
//	</type>
type Transfer struct {
	Handle           uint32
	DeliveryID       uint32
	HasDeliveryID    bool
	DeliveryTag      []byte // nil = absent
	MessageFormat    uint32
	HasMessageFormat bool
	Settled          bool
	More             bool
	RcvSettleMode    ReceiverSettleMode
	HasRcvSettleMode bool
	State            encoding.DeliveryState
	Resume           bool
	Aborted          bool
	Batchable        bool
}

// Disposition is the disposition performative (part 2.7.6). Decoding sets
// Last to First when absent; encoding omits Last when equal to First.
//
//	<type name="disposition" class="composite" source="list" provides="frame">
//	    <descriptor name="amqp:disposition:list" code="0x00000000:0x00000015"/>
//	    <field name="role" type="role" mandatory="true"/>
//	    <field name="first" type="delivery-number" mandatory="true"/>
//	    <field name="last" type="delivery-number"/>
//	    <field name="settled" type="boolean" default="false"/>
//	    <field name="state" type="*" requires="delivery-state"/>
//	    <field name="batchable" type="boolean" default="false"/>
//	</type>
type Disposition struct {
	Role      Role
	First     uint32
	Last      uint32
	Settled   bool
	State     encoding.DeliveryState
	Batchable bool
}

// Detach is the detach performative (part 2.7.7).
//
//	<type name="detach" class="composite" source="list" provides="frame">
//	    <descriptor name="amqp:detach:list" code="0x00000000:0x00000016"/>
//	    <field name="handle" type="handle" mandatory="true"/>
//	    <field name="closed" type="boolean" default="false"/>
//	    <field name="error" type="error"/>
//	</type>
type Detach struct {
	Handle uint32
	Closed bool
	Error  *encoding.Error
}

// End is the end performative (part 2.7.8).
//
//	<type name="end" class="composite" source="list" provides="frame">
//	    <descriptor name="amqp:end:list" code="0x00000000:0x00000017"/>
//	    <field name="error" type="error"/>
//	</type>
type End struct {
	Error *encoding.Error
}

// Close is the close performative (part 2.7.9).
//
//	<type name="close" class="composite" source="list" provides="frame">
//	    <descriptor name="amqp:close:list" code="0x00000000:0x00000018"/>
//	    <field name="error" type="error"/>
//	</type>
type Close struct {
	Error *encoding.Error
}

// Descriptor returns 0x10.
func (*Open) Descriptor() uint64 { return encoding.DescOpen }

// Descriptor returns 0x11.
func (*Begin) Descriptor() uint64 { return encoding.DescBegin }

// Descriptor returns 0x12.
func (*Attach) Descriptor() uint64 { return encoding.DescAttach }

// Descriptor returns 0x13.
func (*Flow) Descriptor() uint64 { return encoding.DescFlow }

// Descriptor returns 0x14.
func (*Transfer) Descriptor() uint64 { return encoding.DescTransfer }

// Descriptor returns 0x15.
func (*Disposition) Descriptor() uint64 { return encoding.DescDisposition }

// Descriptor returns 0x16.
func (*Detach) Descriptor() uint64 { return encoding.DescDetach }

// Descriptor returns 0x17.
func (*End) Descriptor() uint64 { return encoding.DescEnd }

// Descriptor returns 0x18.
func (*Close) Descriptor() uint64 { return encoding.DescClose }

// MarshalAMQP appends o.
func (o *Open) MarshalAMQP(dst []byte) ([]byte, error) {
	dst = encoding.AppendDescriptor(dst, encoding.DescOpen)
	dst, l := encoding.BeginList(dst)
	dst = encoding.AppendString(dst, o.ContainerID)
	l.Field(dst)
	dst = l.OptString(dst, o.Hostname)
	dst = l.OptUint(dst, o.MaxFrameSize, o.MaxFrameSize != DefaultMaxFrameSize && o.MaxFrameSize != 0)
	if o.ChannelMax == DefaultChannelMax {
		dst = l.Null(dst)
	} else {
		dst = encoding.AppendUshort(dst, o.ChannelMax)
		l.Field(dst)
	}
	dst = l.OptUint(dst, o.IdleTimeOut, o.IdleTimeOut != 0)
	dst = l.OptSymbols(dst, o.OutgoingLocales)
	dst = l.OptSymbols(dst, o.IncomingLocales)
	dst = l.OptSymbols(dst, o.OfferedCapabilities)
	dst = l.OptSymbols(dst, o.DesiredCapabilities)
	dst, err := l.OptMap(dst, o.Properties)
	return l.End(dst), err
}

// UnmarshalAMQP reads an open performative.
func (o *Open) UnmarshalAMQP(r *encoding.Reader) error {
	n, f, err := r.ReadComposite(encoding.DescOpen)
	if err != nil {
		return err
	}
	*o = Open{MaxFrameSize: DefaultMaxFrameSize, ChannelMax: DefaultChannelMax}
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		switch i {
		case 0:
			o.ContainerID, err = f.ReadString()
		case 1:
			o.Hostname, err = f.ReadString()
		case 2:
			o.MaxFrameSize, err = f.ReadUint()
		case 3:
			o.ChannelMax, err = f.ReadUshort()
		case 4:
			o.IdleTimeOut, err = f.ReadUint()
		case 5:
			o.OutgoingLocales, err = f.ReadSymbols()
		case 6:
			o.IncomingLocales, err = f.ReadSymbols()
		case 7:
			o.OfferedCapabilities, err = f.ReadSymbols()
		case 8:
			o.DesiredCapabilities, err = f.ReadSymbols()
		case 9:
			o.Properties, err = f.ReadMap()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if !seen.has(0) {
		return encoding.Missing(r, "open", "container-id")
	}
	return f.Finish()
}

// MarshalAMQP appends b.
func (b *Begin) MarshalAMQP(dst []byte) ([]byte, error) {
	dst = encoding.AppendDescriptor(dst, encoding.DescBegin)
	dst, l := encoding.BeginList(dst)
	if b.HasRemoteChannel {
		dst = encoding.AppendUshort(dst, b.RemoteChannel)
		l.Field(dst)
	} else {
		dst = l.Null(dst)
	}
	dst = l.OptUint(dst, b.NextOutgoingID, true)
	dst = l.OptUint(dst, b.IncomingWindow, true)
	dst = l.OptUint(dst, b.OutgoingWindow, true)
	dst = l.OptUint(dst, b.HandleMax, b.HandleMax != DefaultHandleMax)
	dst = l.OptSymbols(dst, b.OfferedCapabilities)
	dst = l.OptSymbols(dst, b.DesiredCapabilities)
	dst, err := l.OptMap(dst, b.Properties)
	return l.End(dst), err
}

// UnmarshalAMQP reads a begin performative.
func (b *Begin) UnmarshalAMQP(r *encoding.Reader) error {
	n, f, err := r.ReadComposite(encoding.DescBegin)
	if err != nil {
		return err
	}
	*b = Begin{HandleMax: DefaultHandleMax}
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		switch i {
		case 0:
			b.RemoteChannel, err = f.ReadUshort()
			b.HasRemoteChannel = true
		case 1:
			b.NextOutgoingID, err = f.ReadUint()
		case 2:
			b.IncomingWindow, err = f.ReadUint()
		case 3:
			b.OutgoingWindow, err = f.ReadUint()
		case 4:
			b.HandleMax, err = f.ReadUint()
		case 5:
			b.OfferedCapabilities, err = f.ReadSymbols()
		case 6:
			b.DesiredCapabilities, err = f.ReadSymbols()
		case 7:
			b.Properties, err = f.ReadMap()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if err := seen.require(r, "begin", 1, "next-outgoing-id", 2, "incoming-window", 3, "outgoing-window"); err != nil {
		return err
	}
	return f.Finish()
}

// MarshalAMQP appends a.
func (a *Attach) MarshalAMQP(dst []byte) ([]byte, error) {
	var err error
	dst = encoding.AppendDescriptor(dst, encoding.DescAttach)
	dst, l := encoding.BeginList(dst)
	dst = encoding.AppendString(dst, a.Name)
	l.Field(dst)
	dst = l.OptUint(dst, a.Handle, true)
	dst = encoding.AppendBool(dst, bool(a.Role))
	l.Field(dst)
	if a.SndSettleMode == SenderSettleMixed {
		dst = l.Null(dst)
	} else {
		dst = encoding.AppendUbyte(dst, uint8(a.SndSettleMode))
		l.Field(dst)
	}
	if a.RcvSettleMode == ReceiverSettleFirst {
		dst = l.Null(dst)
	} else {
		dst = encoding.AppendUbyte(dst, uint8(a.RcvSettleMode))
		l.Field(dst)
	}
	if dst, err = l.OptMarshal(dst, a.Source, a.Source != nil); err != nil {
		return dst, err
	}
	switch {
	case a.Target != nil:
		dst, err = l.OptMarshal(dst, a.Target, true)
	case a.Coordinator != nil:
		dst, err = encoding.AppendDescribed(dst, *a.Coordinator)
		l.Field(dst)
	default:
		dst = l.Null(dst)
	}
	if err != nil {
		return dst, err
	}
	if dst, err = l.OptMap(dst, a.Unsettled); err != nil {
		return dst, err
	}
	dst = l.OptBool(dst, a.IncompleteUnsettled)
	dst = l.OptUint(dst, a.InitialDeliveryCount, a.HasInitialDeliveryCount)
	dst = l.OptUlong(dst, a.MaxMessageSize, a.MaxMessageSize != 0)
	dst = l.OptSymbols(dst, a.OfferedCapabilities)
	dst = l.OptSymbols(dst, a.DesiredCapabilities)
	dst, err = l.OptMap(dst, a.Properties)
	return l.End(dst), err
}

// UnmarshalAMQP reads an attach performative.
func (a *Attach) UnmarshalAMQP(r *encoding.Reader) error {
	n, f, err := r.ReadComposite(encoding.DescAttach)
	if err != nil {
		return err
	}
	*a = Attach{SndSettleMode: SenderSettleMixed}
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		switch i {
		case 0:
			a.Name, err = f.ReadString()
		case 1:
			a.Handle, err = f.ReadUint()
		case 2:
			var v bool
			v, err = f.ReadBool()
			a.Role = Role(v)
		case 3:
			var v uint8
			if v, err = f.ReadUbyte(); err == nil && v > uint8(SenderSettleMixed) {
				err = invalidField(&f, "attach", "snd-settle-mode", v)
			}
			a.SndSettleMode = SenderSettleMode(v)
		case 4:
			var v uint8
			if v, err = f.ReadUbyte(); err == nil && v > uint8(ReceiverSettleSecond) {
				err = invalidField(&f, "attach", "rcv-settle-mode", v)
			}
			a.RcvSettleMode = ReceiverSettleMode(v)
		case 5:
			a.Source = new(encoding.Source)
			err = a.Source.UnmarshalAMQP(&f)
		case 6:
			if code, _ := f.PeekDescriptor(); code == encoding.DescTarget {
				a.Target = new(encoding.Target)
				err = a.Target.UnmarshalAMQP(&f)
			} else {
				var v any
				if v, err = f.ReadAny(); err == nil {
					d, ok := v.(encoding.Described)
					if !ok {
						err = invalidField(&f, "attach", "target", v)
					}
					a.Coordinator = &d
				}
			}
		case 7:
			a.Unsettled, err = f.ReadMap()
		case 8:
			a.IncompleteUnsettled, err = f.ReadBool()
		case 9:
			a.InitialDeliveryCount, err = f.ReadUint()
			a.HasInitialDeliveryCount = true
		case 10:
			a.MaxMessageSize, err = f.ReadUlong()
		case 11:
			a.OfferedCapabilities, err = f.ReadSymbols()
		case 12:
			a.DesiredCapabilities, err = f.ReadSymbols()
		case 13:
			a.Properties, err = f.ReadMap()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if err := seen.require(r, "attach", 0, "name", 1, "handle", 2, "role"); err != nil {
		return err
	}
	return f.Finish()
}

// MarshalAMQP appends fl.
func (fl *Flow) MarshalAMQP(dst []byte) ([]byte, error) {
	dst = encoding.AppendDescriptor(dst, encoding.DescFlow)
	dst, l := encoding.BeginList(dst)
	dst = l.OptUint(dst, fl.NextIncomingID, fl.HasNextIncomingID)
	dst = l.OptUint(dst, fl.IncomingWindow, true)
	dst = l.OptUint(dst, fl.NextOutgoingID, true)
	dst = l.OptUint(dst, fl.OutgoingWindow, true)
	dst = l.OptUint(dst, fl.Handle, fl.HasHandle)
	dst = l.OptUint(dst, fl.DeliveryCount, fl.HasDeliveryCount)
	dst = l.OptUint(dst, fl.LinkCredit, fl.HasLinkCredit)
	dst = l.OptUint(dst, fl.Available, fl.HasAvailable)
	dst = l.OptBool(dst, fl.Drain)
	dst = l.OptBool(dst, fl.Echo)
	dst, err := l.OptMap(dst, fl.Properties)
	return l.End(dst), err
}

// UnmarshalAMQP reads a flow performative.
func (fl *Flow) UnmarshalAMQP(r *encoding.Reader) error {
	n, f, err := r.ReadComposite(encoding.DescFlow)
	if err != nil {
		return err
	}
	*fl = Flow{}
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		switch i {
		case 0:
			fl.NextIncomingID, err = f.ReadUint()
			fl.HasNextIncomingID = true
		case 1:
			fl.IncomingWindow, err = f.ReadUint()
		case 2:
			fl.NextOutgoingID, err = f.ReadUint()
		case 3:
			fl.OutgoingWindow, err = f.ReadUint()
		case 4:
			fl.Handle, err = f.ReadUint()
			fl.HasHandle = true
		case 5:
			fl.DeliveryCount, err = f.ReadUint()
			fl.HasDeliveryCount = true
		case 6:
			fl.LinkCredit, err = f.ReadUint()
			fl.HasLinkCredit = true
		case 7:
			fl.Available, err = f.ReadUint()
			fl.HasAvailable = true
		case 8:
			fl.Drain, err = f.ReadBool()
		case 9:
			fl.Echo, err = f.ReadBool()
		case 10:
			fl.Properties, err = f.ReadMap()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if err := seen.require(r, "flow", 1, "incoming-window", 2, "next-outgoing-id", 3, "outgoing-window"); err != nil {
		return err
	}
	return f.Finish()
}

// MarshalAMQP appends t (the payload is appended by the caller).
func (t *Transfer) MarshalAMQP(dst []byte) ([]byte, error) {
	dst = encoding.AppendDescriptor(dst, encoding.DescTransfer)
	dst, l := encoding.BeginList(dst)
	dst = l.OptUint(dst, t.Handle, true)
	dst = l.OptUint(dst, t.DeliveryID, t.HasDeliveryID)
	dst = l.OptBinary(dst, t.DeliveryTag)
	dst = l.OptUint(dst, t.MessageFormat, t.HasMessageFormat)
	dst = l.OptBool(dst, t.Settled)
	dst = l.OptBool(dst, t.More)
	if t.HasRcvSettleMode {
		dst = encoding.AppendUbyte(dst, uint8(t.RcvSettleMode))
		l.Field(dst)
	} else {
		dst = l.Null(dst)
	}
	dst, err := l.OptMarshal(dst, t.State, t.State != nil)
	if err != nil {
		return dst, err
	}
	dst = l.OptBool(dst, t.Resume)
	dst = l.OptBool(dst, t.Aborted)
	dst = l.OptBool(dst, t.Batchable)
	return l.End(dst), nil
}

// UnmarshalAMQP reads a transfer performative; the payload is what remains in r.
func (t *Transfer) UnmarshalAMQP(r *encoding.Reader) error {
	n, f, err := r.ReadComposite(encoding.DescTransfer)
	if err != nil {
		return err
	}
	*t = Transfer{}
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		switch i {
		case 0:
			t.Handle, err = f.ReadUint()
		case 1:
			t.DeliveryID, err = f.ReadUint()
			t.HasDeliveryID = true
		case 2:
			t.DeliveryTag, err = f.ReadBinary()
			if err == nil && len(t.DeliveryTag) > 32 {
				err = invalidField(&f, "transfer", "delivery-tag length", len(t.DeliveryTag))
			}
		case 3:
			t.MessageFormat, err = f.ReadUint()
			t.HasMessageFormat = true
		case 4:
			t.Settled, err = f.ReadBool()
		case 5:
			t.More, err = f.ReadBool()
		case 6:
			var v uint8
			if v, err = f.ReadUbyte(); err == nil && v > uint8(ReceiverSettleSecond) {
				err = invalidField(&f, "transfer", "rcv-settle-mode", v)
			}
			t.RcvSettleMode, t.HasRcvSettleMode = ReceiverSettleMode(v), true
		case 7:
			t.State, err = f.ReadDeliveryState()
		case 8:
			t.Resume, err = f.ReadBool()
		case 9:
			t.Aborted, err = f.ReadBool()
		case 10:
			t.Batchable, err = f.ReadBool()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if err := seen.require(r, "transfer", 0, "handle"); err != nil {
		return err
	}
	return f.Finish()
}

// MarshalAMQP appends d.
func (d *Disposition) MarshalAMQP(dst []byte) ([]byte, error) {
	dst = encoding.AppendDescriptor(dst, encoding.DescDisposition)
	dst, l := encoding.BeginList(dst)
	dst = encoding.AppendBool(dst, bool(d.Role))
	l.Field(dst)
	dst = l.OptUint(dst, d.First, true)
	dst = l.OptUint(dst, d.Last, d.Last != d.First)
	dst = l.OptBool(dst, d.Settled)
	dst, err := l.OptMarshal(dst, d.State, d.State != nil)
	if err != nil {
		return dst, err
	}
	dst = l.OptBool(dst, d.Batchable)
	return l.End(dst), nil
}

// UnmarshalAMQP reads a disposition performative.
func (d *Disposition) UnmarshalAMQP(r *encoding.Reader) error {
	n, f, err := r.ReadComposite(encoding.DescDisposition)
	if err != nil {
		return err
	}
	*d = Disposition{}
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		switch i {
		case 0:
			var v bool
			v, err = f.ReadBool()
			d.Role = Role(v)
		case 1:
			d.First, err = f.ReadUint()
		case 2:
			d.Last, err = f.ReadUint()
		case 3:
			d.Settled, err = f.ReadBool()
		case 4:
			d.State, err = f.ReadDeliveryState()
		case 5:
			d.Batchable, err = f.ReadBool()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if err := seen.require(r, "disposition", 0, "role", 1, "first"); err != nil {
		return err
	}
	if !seen.has(2) {
		d.Last = d.First
	}
	return f.Finish()
}

// MarshalAMQP appends d.
func (d *Detach) MarshalAMQP(dst []byte) ([]byte, error) {
	dst = encoding.AppendDescriptor(dst, encoding.DescDetach)
	dst, l := encoding.BeginList(dst)
	dst = l.OptUint(dst, d.Handle, true)
	dst = l.OptBool(dst, d.Closed)
	dst, err := l.OptMarshal(dst, d.Error, d.Error != nil)
	return l.End(dst), err
}

// UnmarshalAMQP reads a detach performative.
func (d *Detach) UnmarshalAMQP(r *encoding.Reader) error {
	n, f, err := r.ReadComposite(encoding.DescDetach)
	if err != nil {
		return err
	}
	*d = Detach{}
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		switch i {
		case 0:
			d.Handle, err = f.ReadUint()
		case 1:
			d.Closed, err = f.ReadBool()
		case 2:
			d.Error, err = f.ReadError()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if err := seen.require(r, "detach", 0, "handle"); err != nil {
		return err
	}
	return f.Finish()
}

func appendErrorOnly(dst []byte, code uint64, e *encoding.Error) ([]byte, error) {
	dst = encoding.AppendDescriptor(dst, code)
	dst, l := encoding.BeginList(dst)
	dst, err := l.OptMarshal(dst, e, e != nil)
	return l.End(dst), err
}

func readErrorOnly(r *encoding.Reader, code uint64) (*encoding.Error, error) {
	n, f, err := r.ReadComposite(code)
	if err != nil {
		return nil, err
	}
	var e *encoding.Error
	for i := 0; i < n; i++ {
		if i == 0 {
			e, err = f.ReadError()
		} else {
			err = f.SkipValue()
		}
		if err != nil {
			return nil, err
		}
	}
	return e, f.Finish()
}

// MarshalAMQP appends e.
func (e *End) MarshalAMQP(dst []byte) ([]byte, error) {
	return appendErrorOnly(dst, encoding.DescEnd, e.Error)
}

// UnmarshalAMQP reads an end performative.
func (e *End) UnmarshalAMQP(r *encoding.Reader) (err error) {
	e.Error, err = readErrorOnly(r, encoding.DescEnd)
	return err
}

// MarshalAMQP appends c.
func (c *Close) MarshalAMQP(dst []byte) ([]byte, error) {
	return appendErrorOnly(dst, encoding.DescClose, c.Error)
}

// UnmarshalAMQP reads a close performative.
func (c *Close) UnmarshalAMQP(r *encoding.Reader) (err error) {
	c.Error, err = readErrorOnly(r, encoding.DescClose)
	return err
}
