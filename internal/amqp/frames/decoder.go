package frames

import (
	"fmt"

	"github.com/throngmq/throng/internal/amqp/encoding"
)

// Decoder decodes frame bodies into performatives it owns and reuses, so
// steady-state decoding of transfer, flow and disposition does not allocate.
// A performative returned by Decode is valid until the next call; byte
// slices in it alias the frame. One Decoder per connection reader; it is not
// safe for concurrent use.
type Decoder struct {
	open           Open
	begin          Begin
	attach         Attach
	flow           Flow
	transfer       Transfer
	disposition    Disposition
	detach         Detach
	end            End
	close          Close
	saslMechanisms SASLMechanisms
	saslInit       SASLInit
	saslChallenge  SASLChallenge
	saslResponse   SASLResponse
	saslOutcome    SASLOutcome
}

// Decode decodes the performative of a frame body and returns it with the
// bytes that follow it, the payload. Only a transfer may carry a payload;
// trailing bytes after any other performative are a decode error. An empty
// body (heartbeat) yields a nil performative and no error.
func (d *Decoder) Decode(body []byte) (Performative, []byte, error) {
	return decode(body, d)
}

// DecodeFrame is Decode that also checks the performative belongs to the
// frame's type: SASL frames carry only SASL bodies and AMQP frames only
// transport performatives.
func (d *Decoder) DecodeFrame(f Frame) (Performative, []byte, error) {
	p, payload, err := d.Decode(f.Body)
	if err != nil || p == nil {
		return p, payload, err
	}
	if isSASL(p.Descriptor()) != (f.Type == TypeSASL) {
		return nil, nil, &encoding.DecodeError{Msg: fmt.Sprintf("performative 0x%x in frame of type 0x%02x", p.Descriptor(), f.Type)}
	}
	return p, payload, nil
}

// DecodePerformative decodes a frame body into a newly allocated
// performative; see Decoder.Decode.
func DecodePerformative(body []byte) (Performative, []byte, error) {
	return decode(body, nil)
}

func isSASL(code uint64) bool {
	return code >= encoding.DescSASLMechanisms && code <= encoding.DescSASLOutcome
}

func decode(body []byte, d *Decoder) (Performative, []byte, error) {
	if len(body) == 0 {
		return nil, nil, nil
	}
	r := encoding.NewReader(body)
	code, err := r.PeekDescriptor()
	if err != nil {
		return nil, nil, err
	}
	var p Performative
	if d != nil {
		p = d.target(code)
	} else {
		p = newPerformative(code)
	}
	if p == nil {
		return nil, nil, &encoding.DecodeError{Msg: fmt.Sprintf("unknown performative 0x%x", code)}
	}
	if err := unmarshal(p, &r); err != nil {
		return nil, nil, err
	}
	payload := r.Rest()
	if code != encoding.DescTransfer {
		if err := r.Finish(); err != nil {
			return nil, nil, err
		}
		payload = nil
	}
	return p, payload, nil
}

func (d *Decoder) target(code uint64) Performative {
	switch code {
	case encoding.DescOpen:
		return &d.open
	case encoding.DescBegin:
		return &d.begin
	case encoding.DescAttach:
		return &d.attach
	case encoding.DescFlow:
		return &d.flow
	case encoding.DescTransfer:
		return &d.transfer
	case encoding.DescDisposition:
		return &d.disposition
	case encoding.DescDetach:
		return &d.detach
	case encoding.DescEnd:
		return &d.end
	case encoding.DescClose:
		return &d.close
	case encoding.DescSASLMechanisms:
		return &d.saslMechanisms
	case encoding.DescSASLInit:
		return &d.saslInit
	case encoding.DescSASLChallenge:
		return &d.saslChallenge
	case encoding.DescSASLResponse:
		return &d.saslResponse
	case encoding.DescSASLOutcome:
		return &d.saslOutcome
	}
	return nil
}

func newPerformative(code uint64) Performative {
	switch code {
	case encoding.DescOpen:
		return new(Open)
	case encoding.DescBegin:
		return new(Begin)
	case encoding.DescAttach:
		return new(Attach)
	case encoding.DescFlow:
		return new(Flow)
	case encoding.DescTransfer:
		return new(Transfer)
	case encoding.DescDisposition:
		return new(Disposition)
	case encoding.DescDetach:
		return new(Detach)
	case encoding.DescEnd:
		return new(End)
	case encoding.DescClose:
		return new(Close)
	case encoding.DescSASLMechanisms:
		return new(SASLMechanisms)
	case encoding.DescSASLInit:
		return new(SASLInit)
	case encoding.DescSASLChallenge:
		return new(SASLChallenge)
	case encoding.DescSASLResponse:
		return new(SASLResponse)
	case encoding.DescSASLOutcome:
		return new(SASLOutcome)
	}
	return nil
}

// unmarshal calls p's UnmarshalAMQP through concrete types: an interface
// call would make the caller's Reader escape to the heap.
func unmarshal(p Performative, r *encoding.Reader) error {
	switch p := p.(type) {
	case *Open:
		return p.UnmarshalAMQP(r)
	case *Begin:
		return p.UnmarshalAMQP(r)
	case *Attach:
		return p.UnmarshalAMQP(r)
	case *Flow:
		return p.UnmarshalAMQP(r)
	case *Transfer:
		return p.UnmarshalAMQP(r)
	case *Disposition:
		return p.UnmarshalAMQP(r)
	case *Detach:
		return p.UnmarshalAMQP(r)
	case *End:
		return p.UnmarshalAMQP(r)
	case *Close:
		return p.UnmarshalAMQP(r)
	case *SASLMechanisms:
		return p.UnmarshalAMQP(r)
	case *SASLInit:
		return p.UnmarshalAMQP(r)
	case *SASLChallenge:
		return p.UnmarshalAMQP(r)
	case *SASLResponse:
		return p.UnmarshalAMQP(r)
	case *SASLOutcome:
		return p.UnmarshalAMQP(r)
	}
	return &encoding.DecodeError{Msg: "unsupported performative type"}
}
