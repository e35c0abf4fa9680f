package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// The plain REST messaging API of DESIGN.md §4.3 (docs/http-messaging.md):
//
//	POST   /api/v1/addresses/{name}/messages                   publish
//	GET    /api/v1/addresses/{name}/messages                   stream (text/event-stream): topics, multicast, topic space
//	POST   /api/v1/addresses/{name}/messages/receive           receive and lock: queues, subscriptions, anycast
//	DELETE /api/v1/addresses/{name}/messages/{token}           accept a locked message
//	POST   /api/v1/addresses/{name}/messages/{token}/release   give it back (redelivered)
//	POST   /api/v1/addresses/{name}/messages/{token}/reject    reject it (dead-lettered)
//	POST   /api/v1/addresses/{name}/messages/{token}/renew     extend its lock
//	GET    /api/v1/openapi.json                                this API's OpenAPI document
//
// Clients authenticate as users (HTTP Basic, user@tenant), the users of
// AMQP and MQTT, with their send and receive permissions.

//go:embed openapi.json
var openapiDoc []byte

// route is the listener's handler: the messaging API under /api/, Hono's
// HTTP adapter for everything else.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		s.serveAPI(w, r)
		return
	}
	s.ServeHTTP(w, r)
}

// serveAPI serves one request of the messaging API.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// No write deadline is left from an earlier request on a kept-alive
	// connection; each answer sets its own (answerDeadline).
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	p, ok := parseAPIPath(r.URL.EscapedPath())
	st := s.serveAPIOp(w, r, p, ok)
	ep := "api_" + p.op.String()
	if p.op == opMessages {
		ep = "api_publish"
		if r.Method == http.MethodGet {
			ep = "api_stream"
		}
	}
	s.m.requests.WithLabelValues(ep, strconv.Itoa(st)).Inc()
	s.m.duration.WithLabelValues(ep).Observe(time.Since(start).Seconds())
}

// apiMethods are the methods each operation allows (405 otherwise).
var apiMethods = map[apiOp]string{
	opMessages: "GET, POST",
	opReceive:  http.MethodPost,
	opLock:     http.MethodDelete,
	opRelease:  http.MethodPost,
	opReject:   http.MethodPost,
	opRenew:    http.MethodPost,
	opOpenAPI:  "GET, HEAD",
}

func (s *Server) serveAPIOp(w http.ResponseWriter, r *http.Request, p apiPath, ok bool) int {
	if !ok {
		return s.answerError(w, newAPIError(codeNotFound, "no such resource: see /api/v1/openapi.json"))
	}
	allow := apiMethods[p.op]
	if !allowed(allow, r.Method) {
		w.Header().Set("Allow", allow)
		return s.answerError(w, newAPIError(codeMethodNotAllowed, r.Method+" is not allowed here; allowed: "+allow))
	}
	if p.op == opOpenAPI {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(openapiDoc)))
		return s.answer(w, http.StatusOK, openapiDoc)
	}
	pr, err := s.apiPrincipal(r)
	if err != nil {
		if !errors.Is(err, ErrNoCredentials) {
			s.log.Debug("messaging client refused", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		}
		return s.answerError(w, err)
	}
	action := tenant.ActionReceive
	if p.op == opMessages && r.Method == http.MethodPost {
		action = tenant.ActionSend
	}
	tn, err := s.apiTenant(pr, p.name, action)
	if err != nil {
		return s.answerError(w, err)
	}
	release, err := s.openConn(tn)
	if err != nil {
		return s.answerError(w, err) // 429 limit_exceeded
	}
	defer release()
	key := rkey{tenant: tn, name: p.name}
	switch p.op {
	case opMessages:
		if r.Method == http.MethodPost {
			return s.apiPublish(w, r, key)
		}
		return s.apiStream(w, r, pr, key)
	case opReceive:
		return s.apiReceive(w, r, pr, key)
	case opRenew:
		return s.apiRenew(w, r, key, p.token)
	default:
		return s.apiSettle(w, r, key, p)
	}
}

func allowed(allow, method string) bool {
	for _, m := range strings.Split(allow, ", ") {
		if m == method {
			return true
		}
	}
	return false
}

// apiPrincipal authenticates a request's basic credentials as a user
// (user@tenant; without a tenant, the default one). Devices
// authenticate too, but no address permits them anything (403).
func (s *Server) apiPrincipal(r *http.Request) (*auth.Principal, error) {
	user, pw, ok := r.BasicAuth()
	if !ok {
		return nil, ErrNoCredentials
	}
	ctx, cancel := context.WithTimeout(r.Context(), registryLookupTime)
	defer cancel()
	authID, tn := auth.SplitUser(user, tenant.Default)
	return s.cfg.Auth.AuthenticateFor(auth.WithSourceAddr(ctx, r.RemoteAddr), "", tn, authID, pw)
}

// apiTenant finds the tenant of an address and authorizes the action on
// it, as AMQP links do: a Hono northbound address (telemetry/T, event/T,
// command/T…, command_response/T/…) names its tenant, which must be the
// principal's own (then its permissions apply) or, for the platform
// administrator, another IoT-enabled tenant; every other name is in the
// principal's tenant. Any tenant's client may send to a temporary
// address ($temp/…: reply addresses, unguessable).
func (s *Server) apiTenant(p *auth.Principal, name string, action tenant.Action) (string, error) {
	if _, tn, _, ok := hono.Northbound(name); ok && tn != p.Tenant {
		if !p.IsAdmin() {
			return "", newAPIError(codeForbidden, "not authorized for "+name)
		}
		if t, ok := s.cfg.Tenants.Tenant(tn); !ok || t.IoT == nil {
			return "", newAPIError(codeNotFound, "no IoT-enabled tenant "+tn)
		}
		return tn, nil
	}
	if action == tenant.ActionSend && strings.HasPrefix(name, router.TempPrefix) && !p.IsDevice() {
		return p.Tenant, nil
	}
	if !auth.Authorize(p, name, action) {
		verb := "send to "
		if action == tenant.ActionReceive {
			verb = "receive from "
		}
		return "", newAPIError(codeForbidden, "not authorized to "+verb+name)
	}
	return p.Tenant, nil
}

// answer writes a status and body under a write deadline: a client that
// does not read its answer does not hold the connection.
func (s *Server) answer(w http.ResponseWriter, status int, body []byte) int {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.ReadTimeout))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if len(body) > 0 {
		_, _ = w.Write(body)
	}
	return status
}

func (s *Server) answerJSON(w http.ResponseWriter, status int, v any) int {
	w.Header().Set("Content-Type", "application/json")
	return s.answer(w, status, append(marshalAPI(v), '\n'))
}

func (s *Server) answerError(w http.ResponseWriter, err error) int {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.ReadTimeout))
	return s.writeAPIError(w, err)
}

// publishResult is the body of a successful publish.
type publishResult struct {
	Address    string `json:"address"`
	Type       string `json:"type"`
	TopicSpace bool   `json:"topicSpace,omitempty"`
	// Outcome: "stored" (queue, topic: 201), "accepted" (an anycast
	// consumer accepted it: 200), "sent" (multicast, topic space: sent
	// to the subscribers there are, at most once unless durable: 202).
	Outcome string `json:"outcome"`
}

// apiPublish publishes the request body with the properties of its
// headers and answers once the router's outcome is known.
func (s *Server) apiPublish(w http.ResponseWriter, r *http.Request, key rkey) int {
	ctx := r.Context()
	if r.URL.RawQuery != "" {
		return s.answerError(w, fmt.Errorf("%w: a publish takes no query parameters: properties are headers", ErrBadRequest))
	}
	m, err := messageFromHeaders(r.Header, time.Now())
	if err != nil {
		return s.answerError(w, err)
	}
	if err := s.checkRate(key.tenant); err != nil {
		return s.answerError(w, err) // 429 before the body is read (ratecheck.go)
	}
	body, err := s.readBody(w, r, key.tenant)
	if err != nil {
		return s.answerError(w, err)
	}
	m.Body = body
	p, err := s.cfg.Router.Producer(ctx, key.tenant, key.name)
	if err != nil {
		return s.answerError(w, err)
	}
	o, err := p.PublishSync(ctx, m)
	if err != nil {
		if ctx.Err() != nil {
			return 499 // the client went away while the outcome was awaited
		}
		return s.answerError(w, err)
	}
	if o.Kind != router.Accepted {
		return s.answerError(w, &outcomeError{o})
	}
	res := publishResult{Address: key.name, Type: string(p.Type()), TopicSpace: p.TopicSpace()}
	st := http.StatusAccepted
	switch {
	case p.TopicSpace(), p.Type() == address.Multicast:
		res.Outcome = "sent"
	case p.Type() == address.Anycast:
		res.Outcome, st = "accepted", http.StatusOK
	default:
		res.Outcome, st = "stored", http.StatusCreated
	}
	return s.answerJSON(w, st, res)
}

// receiveResult is the body of a receive that got messages.
type receiveResult struct {
	Messages []apiMessage `json:"messages"`
}

// apiReceive receives and locks up to max messages (messaging_pool.go).
func (s *Server) apiReceive(w http.ResponseWriter, r *http.Request, p *auth.Principal, key rkey) int {
	ctx := r.Context()
	params, err := parseReceive(r.URL.Query())
	if err != nil {
		return s.answerError(w, err)
	}
	user := p.Tenant + "\x00" + p.User
	if err := s.msg.mayLock(user); err != nil {
		return s.answerError(w, err)
	}
	actx, cancel := context.WithTimeout(ctx, registryLookupTime)
	rc, err := s.msg.acquire(actx, key)
	cancel()
	if err != nil {
		return s.answerError(w, err)
	}
	got, ok := s.msg.receive(ctx, rc, params, s.closing)
	if !ok {
		return s.answerError(w, fmt.Errorf("%w: the engine did not answer a drain", router.ErrTimeout))
	}
	releaseAll := func() {
		for _, d := range got {
			d.Settle(router.Outcome{Kind: router.Released})
		}
	}
	if ctx.Err() != nil {
		// The client is gone: nobody can settle what came.
		releaseAll()
		s.msg.release(rc)
		return 499
	}
	if len(got) == 0 {
		s.msg.release(rc)
		if s.msg.isGone(rc) {
			return s.answerError(w, fmt.Errorf("%w: %q while it was received from", router.ErrDeleted, key.name))
		}
		return s.answer(w, http.StatusNoContent, nil)
	}
	msgs, err := s.msg.lockAll(rc, got, user, params.lock, params.base64)
	s.msg.release(rc)
	if err != nil {
		releaseAll()
		return s.answerError(w, err)
	}
	return s.answerJSON(w, http.StatusOK, receiveResult{Messages: msgs})
}

// rejectBody is the optional body of a reject: the error that goes with
// the message to the dead-letter address (and to an anycast producer).
type rejectBody struct {
	Condition   string `json:"condition"`
	Description string `json:"description"`
}

// apiSettle accepts (DELETE), releases or rejects a locked message.
func (s *Server) apiSettle(w http.ResponseWriter, r *http.Request, key rkey, p apiPath) int {
	if r.URL.RawQuery != "" {
		return s.answerError(w, fmt.Errorf("%w: accept, release and reject take no query parameters", ErrBadRequest))
	}
	o := router.Outcome{Kind: router.Accepted}
	switch p.op {
	case opRelease:
		o.Kind = router.Released
	case opReject:
		o.Kind = router.Rejected
		rb, err := readRejectBody(r)
		if err != nil {
			return s.answerError(w, err)
		}
		o.Condition, o.Description = rb.Condition, rb.Description
	}
	d, err := s.msg.take(key, p.token)
	if err != nil {
		return s.answerError(w, err)
	}
	d.Settle(o)
	return s.answer(w, http.StatusNoContent, nil)
}

// maxRejectBody bounds a reject's body.
const maxRejectBody = 16 << 10

func readRejectBody(r *http.Request) (rejectBody, error) {
	var rb rejectBody
	b, err := io.ReadAll(io.LimitReader(r.Body, maxRejectBody+1))
	switch {
	case err != nil:
		return rb, fmt.Errorf("%w: reading the body: %v", ErrBadRequest, err)
	case len(b) > maxRejectBody:
		return rb, fmt.Errorf("%w: a reject's body is at most %d bytes", ErrTooLarge, maxRejectBody)
	case len(strings.TrimSpace(string(b))) == 0:
		return rb, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rb); err != nil {
		return rb, fmt.Errorf("%w: a reject's body is {\"condition\": …, \"description\": …}: %v", ErrBadRequest, err)
	}
	return rb, nil
}

// renewResult is the body of a renewed lock.
type renewResult struct {
	LockedUntil string `json:"lockedUntil"`
}

// apiRenew extends a lock (?lock=, default defaultLock, from now).
func (s *Server) apiRenew(w http.ResponseWriter, r *http.Request, key rkey, tok string) int {
	dur := defaultLock
	for k, vs := range r.URL.Query() {
		if k != "lock" || len(vs) != 1 {
			return s.answerError(w, fmt.Errorf("%w: renew takes one parameter, lock", ErrBadRequest))
		}
		d, err := parseLock(vs[0])
		if err != nil {
			return s.answerError(w, err)
		}
		dur = d
	}
	dl, err := s.msg.renew(key, tok, dur)
	if err != nil {
		return s.answerError(w, err)
	}
	return s.answerJSON(w, http.StatusOK, renewResult{LockedUntil: dl.UTC().Format(timeLayout)})
}
