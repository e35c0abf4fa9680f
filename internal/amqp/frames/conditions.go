package frames

import "github.com/throngmq/throng/internal/amqp/encoding"

// Error conditions (part 2.8.15–2.8.18), for encoding.Error.Condition.
const (
	CondInternalError         encoding.Symbol = "amqp:internal-error"
	CondNotFound              encoding.Symbol = "amqp:not-found"
	CondUnauthorizedAccess    encoding.Symbol = "amqp:unauthorized-access"
	CondDecodeError           encoding.Symbol = "amqp:decode-error"
	CondResourceLimitExceeded encoding.Symbol = "amqp:resource-limit-exceeded"
	CondNotAllowed            encoding.Symbol = "amqp:not-allowed"
	CondInvalidField          encoding.Symbol = "amqp:invalid-field"
	CondNotImplemented        encoding.Symbol = "amqp:not-implemented"
	CondResourceLocked        encoding.Symbol = "amqp:resource-locked"
	CondPreconditionFailed    encoding.Symbol = "amqp:precondition-failed"
	CondResourceDeleted       encoding.Symbol = "amqp:resource-deleted"
	CondIllegalState          encoding.Symbol = "amqp:illegal-state"
	CondFrameSizeTooSmall     encoding.Symbol = "amqp:frame-size-too-small"

	CondConnectionForced encoding.Symbol = "amqp:connection:forced"
	CondFramingError     encoding.Symbol = "amqp:connection:framing-error"
	CondConnRedirect     encoding.Symbol = "amqp:connection:redirect"

	CondWindowViolation  encoding.Symbol = "amqp:session:window-violation"
	CondErrantLink       encoding.Symbol = "amqp:session:errant-link"
	CondHandleInUse      encoding.Symbol = "amqp:session:handle-in-use"
	CondUnattachedHandle encoding.Symbol = "amqp:session:unattached-handle"

	CondDetachForced          encoding.Symbol = "amqp:link:detach-forced"
	CondTransferLimitExceeded encoding.Symbol = "amqp:link:transfer-limit-exceeded"
	CondMessageSizeExceeded   encoding.Symbol = "amqp:link:message-size-exceeded"
	CondLinkRedirect          encoding.Symbol = "amqp:link:redirect"
	CondStolen                encoding.Symbol = "amqp:link:stolen"
)
