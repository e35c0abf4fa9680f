package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// apiCode is a stable error code of the messaging API
// (docs/http-messaging.md, "Errors"); the OpenAPI document lists them all.
type apiCode string

// The messaging API's error codes.
const (
	codeUnauthorized     apiCode = "unauthorized"
	codeForbidden        apiCode = "forbidden"
	codeBadRequest       apiCode = "bad_request"
	codeNotFound         apiCode = "not_found"
	codeLockNotFound     apiCode = "lock_not_found"
	codeLockExpired      apiCode = "lock_expired"
	codeMethodNotAllowed apiCode = "method_not_allowed"
	codeWrongType        apiCode = "wrong_address_type"
	codeTooLarge         apiCode = "too_large"
	codeRejected         apiCode = "rejected"
	codeLimitExceeded    apiCode = "limit_exceeded"
	codeNoConsumer       apiCode = "no_consumer"
	codeUnavailable      apiCode = "unavailable"
	codeInternal         apiCode = "internal"
)

// apiErrors is the one table of the messaging API's errors: code → HTTP
// status and the message used when the error's own text is not shown.
var apiErrors = map[apiCode]struct {
	status  int
	message string
}{
	codeUnauthorized:     {http.StatusUnauthorized, "authentication required: HTTP Basic credentials user@tenant"},
	codeForbidden:        {http.StatusForbidden, "not authorized"},
	codeBadRequest:       {http.StatusBadRequest, "bad request"},
	codeNotFound:         {http.StatusNotFound, "no such address"},
	codeLockNotFound:     {http.StatusNotFound, "no such lock: settled already, never issued, or held by another node"},
	codeLockExpired:      {http.StatusGone, "the lock has expired: the message was given back for redelivery"},
	codeMethodNotAllowed: {http.StatusMethodNotAllowed, "method not allowed"},
	codeWrongType:        {http.StatusConflict, "the address type does not allow this operation"},
	codeTooLarge:         {http.StatusRequestEntityTooLarge, "message too large"},
	codeRejected:         {http.StatusUnprocessableEntity, "the consumer rejected the message"},
	codeLimitExceeded:    {http.StatusTooManyRequests, "limit exceeded"},
	codeNoConsumer:       {http.StatusServiceUnavailable, "no consumer took the message"},
	codeUnavailable:      {http.StatusServiceUnavailable, "service unavailable"},
	codeInternal:         {http.StatusInternalServerError, "internal error"},
}

// apiError is an error of the messaging API with its code; the message
// is shown to the client.
type apiError struct {
	code apiCode
	msg  string
}

func (e *apiError) Error() string { return string(e.code) + ": " + e.msg }

func newAPIError(code apiCode, msg string) *apiError { return &apiError{code: code, msg: msg} }

// apiRealm is the basic-authentication challenge of the messaging API
// (the admin API's realm: the same users).
const apiRealm = `Basic realm="throng", charset="UTF-8"`

// classifyAPI maps an error of auth, the router or this package onto a
// code and the message the client sees. Authentication failures show no
// reason (it is logged), internal errors no text.
func classifyAPI(err error) (apiCode, string) {
	var ae *apiError
	var oe *outcomeError
	switch {
	case errors.As(err, &ae):
		return ae.code, ae.msg
	case errors.Is(err, ErrNoCredentials), errors.Is(err, auth.ErrBadCredentials), errors.Is(err, auth.ErrUnknownTenant):
		return codeUnauthorized, ""
	case errors.Is(err, auth.ErrNotAuthorized):
		return codeForbidden, ""
	case errors.Is(err, ErrTooLarge),
		// The router's size check counts properties too.
		errors.Is(err, router.ErrLimitExceeded) && strings.Contains(err.Error(), "bytes exceeds"):
		return codeTooLarge, err.Error()
	case errors.Is(err, ErrBadRequest), errors.Is(err, router.ErrInvalid):
		return codeBadRequest, err.Error()
	case errors.Is(err, router.ErrNotFound):
		return codeNotFound, err.Error()
	case errors.Is(err, router.ErrLimitExceeded), errors.Is(err, tenant.ErrLimit):
		return codeLimitExceeded, err.Error()
	case errors.Is(err, router.ErrNoConsumers):
		return codeNoConsumer, err.Error()
	case errors.As(err, &oe):
		if oe.o.Kind == router.Rejected {
			return codeRejected, oe.Error()
		}
		return codeNoConsumer, oe.Error() // released, modified: nobody took it
	case errors.Is(err, auth.ErrUnavailable), errors.Is(err, router.ErrClosed), errors.Is(err, router.ErrTimeout),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders), errors.Is(err, context.DeadlineExceeded):
		return codeUnavailable, ""
	}
	return codeInternal, ""
}

// apiErrorBody is the JSON body of every error answer of the messaging
// API, the admin API's shape: {"error":{"code":"…","message":"…"}}.
type apiErrorBody struct {
	Error struct {
		Code    apiCode `json:"code"`
		Message string  `json:"message"`
	} `json:"error"`
}

// writeAPIError answers a request with err's status and JSON body and
// returns the status.
func (s *Server) writeAPIError(w http.ResponseWriter, err error) int {
	code, msg := classifyAPI(err)
	spec, ok := apiErrors[code]
	if !ok {
		code, spec = codeInternal, apiErrors[codeInternal]
	}
	if code == codeInternal {
		s.log.Warn("messaging request failed", "err", err)
	}
	if msg == "" {
		msg = spec.message
	}
	h := w.Header()
	switch spec.status {
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", apiRealm)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		h.Set("Retry-After", strconv.Itoa(retryAfterOf(err)))
	}
	var b apiErrorBody
	b.Error.Code, b.Error.Message = code, msg
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(spec.status)
	_ = json.NewEncoder(w).Encode(b)
	return spec.status
}
