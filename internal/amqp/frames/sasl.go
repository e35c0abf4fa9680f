package frames

import "github.com/throngmq/throng/internal/amqp/encoding"

// SASLCode is the outcome of a SASL exchange (part 5.3.3.6).
type SASLCode uint8

// SASL outcome codes.
const (
	SASLOk      SASLCode = 0 // authentication succeeded
	SASLAuth    SASLCode = 1 // failed: bad credentials
	SASLSys     SASLCode = 2 // failed: system error
	SASLSysPerm SASLCode = 3 // failed: unrecoverable system error
	SASLSysTemp SASLCode = 4 // failed: transient system error
)

// SASLMechanisms advertises the server's mechanisms (part 5.3.3.1).
//
//	<type name="sasl-mechanisms" class="composite" source="list" provides="sasl-frame">
//	    <descriptor name="amqp:sasl-mechanisms:list" code="0x00000000:0x00000040"/>
//	    <field name="sasl-server-mechanisms" type="symbol" multiple="true" mandatory="true"/>
//	</type>
type SASLMechanisms struct {
	Mechanisms []encoding.Symbol
}

// SASLInit selects a mechanism (part 5.3.3.2). InitialResponse aliases the
// frame; nil means absent, which differs from empty.
//
//	<type name="sasl-init" class="composite" source="list" provides="sasl-frame">
//	    <descriptor name="amqp:sasl-init:list" code="0x00000000:0x00000041"/>
//	    <field name="mechanism" type="symbol" mandatory="true"/>
//	    <field name="initial-response" type="binary"/>
//	    <field name="hostname" type="string"/>
//	</type>
type SASLInit struct {
	Mechanism       encoding.Symbol
	InitialResponse []byte
	Hostname        string
}

// SASLChallenge carries a security challenge (part 5.3.3.3).
//
//	<type name="sasl-challenge" class="composite" source="list" provides="sasl-frame">
//	    <descriptor name="amqp:sasl-challenge:list" code="0x00000000:0x00000042"/>
//	    <field name="challenge" type="binary" mandatory="true"/>
//	</type>
type SASLChallenge struct {
	Challenge []byte
}

// SASLResponse carries a response to a challenge (part 5.3.3.4).
//
//	<type name="sasl-response" class="composite" source="list" provides="sasl-frame">
//	    <descriptor name="amqp:sasl-response:list" code="0x00000000:0x00000043"/>
//	    <field name="response" type="binary" mandatory="true"/>
//	</type>
type SASLResponse struct {
	Response []byte
}

// SASLOutcome ends the SASL exchange (part 5.3.3.5).
//
//	<type name="sasl-outcome" class="composite" source="list" provides="sasl-frame">
//	    <descriptor name="amqp:sasl-outcome:list" code="0x00000000:0x00000044"/>
//	    <field name="code" type="sasl-code" mandatory="true"/>
//	    <field name="additional-data" type="binary"/>
//	</type>
type SASLOutcome struct {
	Code           SASLCode
	AdditionalData []byte
}

// Descriptor returns 0x40.
func (*SASLMechanisms) Descriptor() uint64 { return encoding.DescSASLMechanisms }

// Descriptor returns 0x41.
func (*SASLInit) Descriptor() uint64 { return encoding.DescSASLInit }

// Descriptor returns 0x42.
func (*SASLChallenge) Descriptor() uint64 { return encoding.DescSASLChallenge }

// Descriptor returns 0x43.
func (*SASLResponse) Descriptor() uint64 { return encoding.DescSASLResponse }

// Descriptor returns 0x44.
func (*SASLOutcome) Descriptor() uint64 { return encoding.DescSASLOutcome }

// MarshalAMQP appends m.
func (m *SASLMechanisms) MarshalAMQP(dst []byte) ([]byte, error) {
	dst = encoding.AppendDescriptor(dst, encoding.DescSASLMechanisms)
	dst, l := encoding.BeginList(dst)
	mechs := m.Mechanisms
	if mechs == nil {
		mechs = []encoding.Symbol{} // mandatory: never null
	}
	dst = l.OptSymbols(dst, mechs)
	return l.End(dst), nil
}

// UnmarshalAMQP reads a sasl-mechanisms frame body.
func (m *SASLMechanisms) UnmarshalAMQP(r *encoding.Reader) error {
	n, f, err := r.ReadComposite(encoding.DescSASLMechanisms)
	if err != nil {
		return err
	}
	*m = SASLMechanisms{}
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		if i == 0 {
			m.Mechanisms, err = f.ReadSymbols()
		} else {
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if err := seen.require(r, "sasl-mechanisms", 0, "sasl-server-mechanisms"); err != nil {
		return err
	}
	return f.Finish()
}

// MarshalAMQP appends s.
func (s *SASLInit) MarshalAMQP(dst []byte) ([]byte, error) {
	dst = encoding.AppendDescriptor(dst, encoding.DescSASLInit)
	dst, l := encoding.BeginList(dst)
	dst = encoding.AppendSymbol(dst, s.Mechanism)
	l.Field(dst)
	dst = l.OptBinary(dst, s.InitialResponse)
	dst = l.OptString(dst, s.Hostname)
	return l.End(dst), nil
}

// UnmarshalAMQP reads a sasl-init frame body.
func (s *SASLInit) UnmarshalAMQP(r *encoding.Reader) error {
	n, f, err := r.ReadComposite(encoding.DescSASLInit)
	if err != nil {
		return err
	}
	*s = SASLInit{}
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		switch i {
		case 0:
			s.Mechanism, err = f.ReadSymbol()
		case 1:
			s.InitialResponse, err = f.ReadBinary()
		case 2:
			s.Hostname, err = f.ReadString()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if err := seen.require(r, "sasl-init", 0, "mechanism"); err != nil {
		return err
	}
	return f.Finish()
}

func appendSASLBinary(dst []byte, code uint64, b []byte) []byte {
	dst = encoding.AppendDescriptor(dst, code)
	dst, l := encoding.BeginList(dst)
	dst = encoding.AppendBinary(dst, b) // mandatory: never null
	l.Field(dst)
	return l.End(dst)
}

func readSASLBinary(r *encoding.Reader, code uint64, typ, field string) ([]byte, error) {
	n, f, err := r.ReadComposite(code)
	if err != nil {
		return nil, err
	}
	var b []byte
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		if i == 0 {
			b, err = f.ReadBinary()
		} else {
			err = f.SkipValue()
		}
		if err != nil {
			return nil, err
		}
	}
	if err := seen.require(r, typ, 0, field); err != nil {
		return nil, err
	}
	return b, f.Finish()
}

// MarshalAMQP appends c.
func (c *SASLChallenge) MarshalAMQP(dst []byte) ([]byte, error) {
	return appendSASLBinary(dst, encoding.DescSASLChallenge, c.Challenge), nil
}

// UnmarshalAMQP reads a sasl-challenge frame body.
func (c *SASLChallenge) UnmarshalAMQP(r *encoding.Reader) (err error) {
	c.Challenge, err = readSASLBinary(r, encoding.DescSASLChallenge, "sasl-challenge", "challenge")
	return err
}

// MarshalAMQP appends s.
func (s *SASLResponse) MarshalAMQP(dst []byte) ([]byte, error) {
	return appendSASLBinary(dst, encoding.DescSASLResponse, s.Response), nil
}

// UnmarshalAMQP reads a sasl-response frame body.
func (s *SASLResponse) UnmarshalAMQP(r *encoding.Reader) (err error) {
	s.Response, err = readSASLBinary(r, encoding.DescSASLResponse, "sasl-response", "response")
	return err
}

// MarshalAMQP appends o.
func (o *SASLOutcome) MarshalAMQP(dst []byte) ([]byte, error) {
	dst = encoding.AppendDescriptor(dst, encoding.DescSASLOutcome)
	dst, l := encoding.BeginList(dst)
	dst = encoding.AppendUbyte(dst, uint8(o.Code))
	l.Field(dst)
	dst = l.OptBinary(dst, o.AdditionalData)
	return l.End(dst), nil
}

// UnmarshalAMQP reads a sasl-outcome frame body.
func (o *SASLOutcome) UnmarshalAMQP(r *encoding.Reader) error {
	n, f, err := r.ReadComposite(encoding.DescSASLOutcome)
	if err != nil {
		return err
	}
	*o = SASLOutcome{}
	var seen fieldSet
	for i := 0; i < n; i++ {
		if f.Null() {
			continue
		}
		seen.add(i)
		switch i {
		case 0:
			var v uint8
			if v, err = f.ReadUbyte(); err == nil && v > uint8(SASLSysTemp) {
				err = invalidField(&f, "sasl-outcome", "code", v)
			}
			o.Code = SASLCode(v)
		case 1:
			o.AdditionalData, err = f.ReadBinary()
		default:
			err = f.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if err := seen.require(r, "sasl-outcome", 0, "code"); err != nil {
		return err
	}
	return f.Finish()
}
