package encoding

import (
	"errors"
	"fmt"
)

// ErrDecode is wrapped by every decoding error; a server maps it to the
// amqp:decode-error condition.
var ErrDecode = errors.New("amqp: decode error")

// ErrEncode is wrapped by every encoding error (a Go value with no AMQP
// representation, or an array with elements of different types).
var ErrEncode = errors.New("amqp: encode error")

// DecodeError describes malformed input. It wraps ErrDecode.
type DecodeError struct {
	Offset int    // byte offset in the decoded buffer
	Msg    string // what was wrong
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("amqp: decode error at offset %d: %s", e.Offset, e.Msg)
}

// Unwrap returns ErrDecode.
func (e *DecodeError) Unwrap() error { return ErrDecode }

// EncodeError describes a value that cannot be encoded. It wraps ErrEncode.
type EncodeError struct {
	Msg string
}

func (e *EncodeError) Error() string { return "amqp: encode error: " + e.Msg }

// Unwrap returns ErrEncode.
func (e *EncodeError) Unwrap() error { return ErrEncode }

func encodeErrorf(format string, args ...any) error {
	return &EncodeError{Msg: fmt.Sprintf(format, args...)}
}
