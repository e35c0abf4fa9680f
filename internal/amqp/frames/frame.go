package frames

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/throngmq/throng/internal/amqp/encoding"
)

// Frame types (part 2.3).
const (
	TypeAMQP uint8 = 0x00
	TypeSASL uint8 = 0x01
)

// HeaderSize is the size of the fixed frame header.
const HeaderSize = 8

// MinMaxFrameSize is the largest frame a peer may send before open has
// negotiated max-frame-size (MIN-MAX-FRAME-SIZE, part 2.7.1).
const MinMaxFrameSize = 512

var (
	// ErrNeedMore means the input holds only part of a protocol header or frame.
	ErrNeedMore = errors.New("amqp: need more bytes")

	// ErrFraming is wrapped by errors for malformed frame headers; a server
	// maps it to amqp:connection:framing-error.
	ErrFraming = errors.New("amqp: framing error")

	// ErrFrameTooLarge is matched (errors.Is) by *FrameSizeError.
	ErrFrameTooLarge = errors.New("amqp: frame larger than max-frame-size")

	// ErrProtocolHeader means the peer did not send an AMQP protocol header,
	// or sent one for a protocol id or version this package does not speak.
	ErrProtocolHeader = errors.New("amqp: unsupported protocol header")
)

// FrameSizeError reports a frame whose size exceeds the max-frame-size the
// caller enforces. The server closes the connection with Condition().
type FrameSizeError struct {
	Size, Max uint32
}

func (e *FrameSizeError) Error() string {
	return fmt.Sprintf("amqp: frame of %d bytes exceeds max-frame-size %d", e.Size, e.Max)
}

// Is makes errors.Is(err, ErrFrameTooLarge) true.
func (e *FrameSizeError) Is(target error) bool { return target == ErrFrameTooLarge }

// Condition returns the error condition for the close frame.
func (e *FrameSizeError) Condition() encoding.Symbol { return CondFrameSizeTooSmall }

// ProtoID is the protocol id of a protocol header (part 2.2, 5.1, 5.2).
type ProtoID uint8

// Protocol ids.
const (
	ProtoAMQP ProtoID = 0
	ProtoTLS  ProtoID = 2
	ProtoSASL ProtoID = 3
)

// ProtoHeader is the 8-byte protocol header "AMQP" id major minor revision.
type ProtoHeader struct {
	ID                     ProtoID
	Major, Minor, Revision uint8
}

// Protocol headers for AMQP 1.0.0.
var (
	HeaderAMQP = ProtoHeader{ID: ProtoAMQP, Major: 1}
	HeaderTLS  = ProtoHeader{ID: ProtoTLS, Major: 1}
	HeaderSASL = ProtoHeader{ID: ProtoSASL, Major: 1}
)

// Append appends the 8 header bytes.
func (h ProtoHeader) Append(dst []byte) []byte {
	return append(dst, 'A', 'M', 'Q', 'P', byte(h.ID), h.Major, h.Minor, h.Revision)
}

// ParseProtoHeader parses the protocol header at the start of b. It returns
// ErrNeedMore if fewer than 8 bytes are present. A header that is not
// "AMQP" id 1.0.0 with id 0, 2 or 3 yields ErrProtocolHeader; the parsed
// header is still returned when it starts with "AMQP", so the server can
// answer with the header it supports before closing (part 2.2).
func ParseProtoHeader(b []byte) (ProtoHeader, error) {
	if len(b) < 8 {
		return ProtoHeader{}, ErrNeedMore
	}
	if string(b[:4]) != "AMQP" {
		return ProtoHeader{}, ErrProtocolHeader
	}
	h := ProtoHeader{ID: ProtoID(b[4]), Major: b[5], Minor: b[6], Revision: b[7]}
	switch {
	case h.ID != ProtoAMQP && h.ID != ProtoTLS && h.ID != ProtoSASL,
		h.Major != 1 || h.Minor != 0 || h.Revision != 0:
		return h, ErrProtocolHeader
	}
	return h, nil
}

// Frame is one frame cut out of the input. Body aliases the input; an
// empty Body is an empty frame (a heartbeat, part 2.4.5).
type Frame struct {
	Type    uint8
	Channel uint16
	Body    []byte // after the extended header, which is ignored
}

// ReadFrame cuts the frame at the start of b. It returns the frame and the
// bytes it used. If b holds only part of a frame, it returns ErrNeedMore and
// n is the number of bytes needed for the whole frame (8 while the header is
// incomplete); the size was already checked against maxFrameSize, so n can
// safely size a buffer. maxFrameSize 0 means MinMaxFrameSize. A frame larger
// than maxFrameSize yields a *FrameSizeError; a malformed header an error
// wrapping ErrFraming. ReadFrame neither copies nor allocates on success.
func ReadFrame(b []byte, maxFrameSize uint32) (f Frame, n int, err error) {
	if len(b) < HeaderSize {
		return Frame{}, HeaderSize, ErrNeedMore
	}
	if maxFrameSize == 0 {
		maxFrameSize = MinMaxFrameSize
	}
	size := binary.BigEndian.Uint32(b)
	doff := b[4]
	if size < HeaderSize {
		return Frame{}, 0, fmt.Errorf("%w: frame size %d smaller than the frame header", ErrFraming, size)
	}
	if size > maxFrameSize {
		return Frame{}, 0, &FrameSizeError{Size: size, Max: maxFrameSize}
	}
	if doff < 2 || uint32(doff)*4 > size {
		return Frame{}, 0, fmt.Errorf("%w: data offset %d invalid for frame size %d", ErrFraming, doff, size)
	}
	if b[5] != TypeAMQP && b[5] != TypeSASL {
		return Frame{}, 0, fmt.Errorf("%w: unknown frame type 0x%02x", ErrFraming, b[5])
	}
	if uint64(size) > uint64(len(b)) {
		return Frame{}, int(size), ErrNeedMore
	}
	body := b[int(doff)*4 : size : size]
	return Frame{Type: b[5], Channel: binary.BigEndian.Uint16(b[6:]), Body: body}, int(size), nil
}

// AppendFrameHeader appends a frame header with a placeholder size and
// returns the offset of the frame start, for FinishFrame.
func AppendFrameHeader(dst []byte, typ uint8, channel uint16) ([]byte, int) {
	start := len(dst)
	return append(dst, 0, 0, 0, 0, 2, typ, byte(channel>>8), byte(channel)), start
}

// FinishFrame writes the size of the frame starting at start into its header.
func FinishFrame(dst []byte, start int) ([]byte, error) {
	size := len(dst) - start
	if uint64(size) > math.MaxUint32 {
		return dst, fmt.Errorf("%w: frame of %d bytes", ErrFrameTooLarge, size)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(size))
	return dst, nil
}

// AppendFrame appends a whole frame: header, performative p and payload
// (only transfers carry one). Splitting large messages into transfers that
// fit the peer's max-frame-size is the caller's job.
func AppendFrame(dst []byte, typ uint8, channel uint16, p encoding.Marshaler, payload []byte) ([]byte, error) {
	dst, start := AppendFrameHeader(dst, typ, channel)
	dst, err := p.MarshalAMQP(dst)
	if err != nil {
		return dst[:start], err
	}
	return FinishFrame(append(dst, payload...), start)
}

// AppendHeartbeat appends an empty AMQP frame on channel 0.
func AppendHeartbeat(dst []byte) []byte {
	return append(dst, 0, 0, 0, 8, 2, TypeAMQP, 0, 0)
}
