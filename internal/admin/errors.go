package admin

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// Code is a stable, machine-readable API error code. Clients switch on
// codes, never on messages.
type Code string

// The API error codes. The table below gives each its HTTP status and a
// default message; writeError is the one function that renders them.
const (
	CodeInvalidBody      Code = "invalid_body"       // body is not JSON of the expected shape
	CodeInvalid          Code = "invalid"            // a name, type, limit or other value is not valid
	CodeUnauthorized     Code = "unauthorized"       // no or bad credentials
	CodeForbidden        Code = "forbidden"          // authenticated, but the role does not allow it
	CodeNotFound         Code = "not_found"          // no such resource
	CodeMethodNotAllowed Code = "method_not_allowed" // the resource exists but not with this method
	CodeExists           Code = "exists"             // the resource already exists
	CodeConflict         Code = "conflict"           // the request contradicts the current state
	CodeInUse            Code = "in_use"             // an address with consumers attached (delete without force)
	CodeLimitExceeded    Code = "limit_exceeded"     // a tenant limit (plan) would be exceeded
	CodeBodyTooLarge     Code = "body_too_large"     // body over MaxBodyBytes
	CodeNotReady         Code = "not_ready"          // the platform is starting or stopping
	CodeInternal         Code = "internal"           // a bug or an engine failure; details are logged
)

type errorSpec struct {
	status  int
	message string
}

var errorTable = map[Code]errorSpec{
	CodeInvalidBody:      {http.StatusBadRequest, "the request body is not valid JSON for this resource"},
	CodeInvalid:          {http.StatusBadRequest, "invalid request"},
	CodeUnauthorized:     {http.StatusUnauthorized, "authentication required"},
	CodeForbidden:        {http.StatusForbidden, "your role does not allow this request"},
	CodeNotFound:         {http.StatusNotFound, "not found"},
	CodeMethodNotAllowed: {http.StatusMethodNotAllowed, "method not allowed"},
	CodeExists:           {http.StatusConflict, "already exists"},
	CodeConflict:         {http.StatusConflict, "conflict with the current state"},
	CodeInUse:            {http.StatusConflict, "the address has consumers attached"},
	CodeLimitExceeded:    {http.StatusConflict, "a tenant limit would be exceeded"},
	CodeBodyTooLarge:     {http.StatusRequestEntityTooLarge, "request body larger than 1 MiB"},
	CodeNotReady:         {http.StatusServiceUnavailable, "not ready"},
	CodeInternal:         {http.StatusInternalServerError, "internal error"},
}

// Status returns the HTTP status of a code.
func (c Code) Status() int { return errorTable[c].status }

// ErrorBody is the JSON body of every error response:
// {"error":{"code":"...","message":"..."}}.
type ErrorBody struct {
	Error struct {
		Code    Code   `json:"code"`
		Message string `json:"message"`
		// Consumers is the number of consumers attached (in_use only).
		Consumers int `json:"consumers,omitempty"`
	} `json:"error"`
}

// writeError renders an API error; an empty message uses the table's.
func writeError(w http.ResponseWriter, code Code, message string) {
	writeErrorBody(w, code, message, func(*ErrorBody) {})
}

// writeErrorBody is writeError with extra fields set by more.
func writeErrorBody(w http.ResponseWriter, code Code, message string, more func(*ErrorBody)) {
	spec, ok := errorTable[code]
	if !ok {
		code, spec = CodeInternal, errorTable[CodeInternal]
	}
	if message == "" {
		message = spec.message
	}
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, message
	more(&b)
	if code == CodeUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="throng", charset="UTF-8"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(spec.status)
	_ = json.NewEncoder(w).Encode(b)
}

// classify maps an error from the router, the store or auth.SetPassword
// onto an API code.
// Errors wrapping a sentinel carry a message written for users; anything
// else is internal and its text is not shown.
func classify(err error) (Code, string) {
	switch {
	case errors.Is(err, tenant.ErrNotFound):
		return CodeNotFound, err.Error()
	case errors.Is(err, tenant.ErrExists):
		return CodeExists, err.Error()
	case errors.Is(err, tenant.ErrLimit):
		return CodeLimitExceeded, err.Error()
	case errors.Is(err, tenant.ErrConflict):
		return CodeConflict, err.Error()
	case errors.Is(err, tenant.ErrInvalid), errors.Is(err, address.ErrInvalidName):
		return CodeInvalid, err.Error()
	case errors.Is(err, auth.ErrSASLprep):
		// A new password SASLprep refuses (auth.SetPassword); the message
		// names the rule, not the character.
		return CodeInvalid, err.Error()
	}
	return CodeInternal, ""
}
