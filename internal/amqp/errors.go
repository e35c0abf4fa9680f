package amqp

import (
	"errors"
	"fmt"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
)

// Protocol errors are typed by the scope they end (STYLE habit 8): a
// *ConnError closes the connection, a *SessionError ends one session and a
// *LinkError detaches one link. Frame handlers return them; the connection
// loop turns each into the close, end or detach frame carrying its
// condition. Any other error closes the connection with amqp:internal-error
// (or amqp:decode-error when it wraps encoding.ErrDecode).

// ConnError closes the connection with Condition.
type ConnError struct {
	Condition   encoding.Symbol
	Description string
	Err         error // cause, if any
}

func (e *ConnError) Error() string {
	return scopeError("connection", e.Condition, e.Description, e.Err)
}

// Unwrap returns the cause.
func (e *ConnError) Unwrap() error { return e.Err }

// SessionError ends one session with Condition.
type SessionError struct {
	Condition   encoding.Symbol
	Description string
	Err         error
	s           *session
}

func (e *SessionError) Error() string {
	return scopeError("session", e.Condition, e.Description, e.Err)
}

// Unwrap returns the cause.
func (e *SessionError) Unwrap() error { return e.Err }

// LinkError detaches one link (closed) with Condition.
type LinkError struct {
	Condition   encoding.Symbol
	Description string
	Err         error
	l           *link
}

func (e *LinkError) Error() string { return scopeError("link", e.Condition, e.Description, e.Err) }

// Unwrap returns the cause.
func (e *LinkError) Unwrap() error { return e.Err }

func scopeError(scope string, cond encoding.Symbol, desc string, err error) string {
	s := fmt.Sprintf("amqp %s error %s", scope, cond)
	if desc != "" {
		s += ": " + desc
	}
	if err != nil && err.Error() != desc {
		s += " (" + err.Error() + ")"
	}
	return s
}

func connErr(cond encoding.Symbol, format string, args ...any) *ConnError {
	return &ConnError{Condition: cond, Description: fmt.Sprintf(format, args...)}
}

func sessionErr(s *session, cond encoding.Symbol, format string, args ...any) *SessionError {
	return &SessionError{Condition: cond, Description: fmt.Sprintf(format, args...), s: s}
}

func linkErr(l *link, cond encoding.Symbol, format string, args ...any) *LinkError {
	return &LinkError{Condition: cond, Description: fmt.Sprintf(format, args...), l: l}
}

// asConnError maps any error that is not session- or link-scoped to the
// condition the connection is closed with.
func asConnError(err error) *ConnError {
	var ce *ConnError
	if errors.As(err, &ce) {
		return ce
	}
	var fe *frames.FrameSizeError
	switch {
	case errors.As(err, &fe):
		return &ConnError{Condition: frames.CondFrameSizeTooSmall, Description: fe.Error(), Err: err}
	case errors.Is(err, frames.ErrFraming):
		return &ConnError{Condition: frames.CondFramingError, Description: err.Error(), Err: err}
	case errors.Is(err, encoding.ErrDecode):
		return &ConnError{Condition: frames.CondDecodeError, Description: err.Error(), Err: err}
	}
	return &ConnError{Condition: frames.CondInternalError, Description: err.Error(), Err: err}
}

func (e *ConnError) amqp() *encoding.Error {
	return &encoding.Error{Condition: e.Condition, Description: e.Description}
}
