package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/quota"
	"github.com/throngmq/throng/internal/router"
)

// Errors of the adapter itself (the others come from auth, hono and
// router and are mapped by statusOf).
var (
	// ErrNoCredentials: neither a client certificate, nor basic
	// credentials, nor an unauthenticated resource of a tenant that
	// allows it (401).
	ErrNoCredentials = errors.New("authentication required")
	// ErrNotDevice: the credentials are a user's, not a device's (403).
	ErrNotDevice = errors.New("not a device")
	// ErrBadRequest wraps every malformed request (400).
	ErrBadRequest = errors.New("bad request")
	// ErrTooLarge: the body exceeds the tenant's or the node's maximum
	// message size (413).
	ErrTooLarge = errors.New("message too large")
	// ErrUnknownDevice: an unauthenticated device that is not registered,
	// or disabled (404).
	ErrUnknownDevice = errors.New("unknown or disabled device")
	// ErrAdapterDisabled: the tenant is disabled or does not enable
	// hono-http (403).
	ErrAdapterDisabled = errors.New("tenant not allowed to use the HTTP adapter")
)

// retryAfter is the Retry-After (seconds) of a 429: tenant limits are
// plans, not short bursts, but a device retrying at once helps nobody.
const retryAfter = 5

// retryAfterOf is the Retry-After of err: a message rate limit says when
// its bucket has a token again (router/quota.go); other errors wait
// retryAfter.
func retryAfterOf(err error) int {
	var qe *quota.Error
	if errors.As(err, &qe) {
		return qe.RetryAfterSeconds()
	}
	return retryAfter
}

// statusOf is the one table from errors to Hono's HTTP adapter status
// codes (Hono's HTTP adapter user guide, "Status Codes" of each
// resource).
func statusOf(err error) int {
	var oe *outcomeError
	switch {
	case err == nil:
		return http.StatusAccepted
	case errors.Is(err, ErrNoCredentials), errors.Is(err, auth.ErrBadCredentials), errors.Is(err, auth.ErrUnknownTenant):
		return http.StatusUnauthorized
	case errors.Is(err, ErrNotDevice), errors.Is(err, ErrAdapterDisabled), errors.Is(err, auth.ErrNotAuthorized),
		errors.Is(err, hono.ErrNotAuthorized):
		return http.StatusForbidden
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrBadPath), errors.Is(err, hono.ErrMalformed),
		errors.Is(err, router.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrUnknownDevice), errors.Is(err, hono.ErrUnknownDevice),
		errors.Is(err, router.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrTooLarge),
		// The router's size check counts properties too.
		errors.Is(err, router.ErrLimitExceeded) && strings.Contains(err.Error(), "bytes exceeds"):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, router.ErrLimitExceeded):
		return http.StatusTooManyRequests
	case errors.As(err, &oe):
		if oe.o.Kind == router.Rejected {
			return http.StatusBadRequest
		}
		return http.StatusServiceUnavailable // released, modified: nobody took it
	case errors.Is(err, router.ErrNoConsumers), errors.Is(err, auth.ErrUnavailable), errors.Is(err, router.ErrClosed),
		errors.Is(err, router.ErrTimeout), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// realm is Hono's default realm of its basic authentication.
const realm = `Basic realm="Hono"`

// writeError answers a request with err's status, its headers and a
// short text body (Hono's adapter answers errors in plain text). The
// text of authentication failures is not sent: it names the reason.
func (s *Server) writeError(w http.ResponseWriter, err error) int {
	st := statusOf(err)
	if st == http.StatusInternalServerError {
		s.log.Warn("request failed", "err", err)
	}
	h := w.Header()
	switch st {
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", realm)
	case http.StatusTooManyRequests:
		h.Set("Retry-After", strconv.Itoa(retryAfterOf(err)))
	}
	msg := err.Error()
	var de *auth.DeviceError
	if errors.As(err, &de) || st == http.StatusUnauthorized || st == http.StatusInternalServerError {
		msg = http.StatusText(st)
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(st)
	_, _ = w.Write([]byte(msg + "\n"))
	return st
}
