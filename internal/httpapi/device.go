package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// Hono's request and response headers (and query parameters of the same
// names for hono-ttd, hono-ttl and hono-cmd-status).
const (
	headerQoS          = "Qos-Level"
	headerTTD          = "Hono-Ttd"
	headerTTL          = "Hono-Ttl"
	headerCmd          = "hono-command" // response headers as Hono writes them
	headerCmdReqID     = "hono-cmd-req-id"
	headerCmdTarget    = "hono-cmd-target-device"
	headerCmdStatus    = "Hono-Cmd-Status"
	paramTTD           = "hono-ttd"
	paramTTL           = "hono-ttl"
	paramCmdStatus     = "hono-cmd-status"
	extMaxTTD          = "max-ttd"
	registryLookupTime = 10 * time.Second
	exactBody          = 64 << 10 // a body up to this length is read into a buffer of its size
)

// ServeHTTP serves Hono's HTTP adapter resources (docs/hono.md).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// The write deadline covers writing the answer only (ReadTimeout
	// from its first byte: a device that does not read its answer does
	// not hold the connection), not the wait for an application or a
	// command before it. None is left from an earlier request on a
	// kept-alive connection: net/http clears it after each request
	// (conn.serve, after finishRequest), so it is not cleared here.
	dw := &deadlineWriter{ResponseWriter: w, d: s.cfg.ReadTimeout}
	res, perr := ParsePath(r.URL.EscapedPath())
	st := s.serve(dw, r, res, perr)
	s.m.observe(res.Endpoint, st, time.Since(start))
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, res Resource, perr error) int {
	if r.Header.Get("Origin") != "" {
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			return s.preflight(w, r, res, perr)
		}
		cors(w.Header(), res, false)
	}
	if perr != nil {
		return s.writeError(w, perr)
	}
	// Short forms are POSTed by an authenticated device, long forms PUT
	// (Hono's routes; another method is 405 with Allow).
	want := http.MethodPost
	if res.Long {
		want = http.MethodPut
	}
	if r.Method != want {
		w.Header().Set("Allow", want)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return http.StatusMethodNotAllowed
	}
	p, err := s.authenticate(r, res)
	if err != nil {
		if !errors.Is(err, ErrNoCredentials) {
			// The client gets only the code; the reason is logged.
			s.log.Debug("device refused", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			s.auditAuth(r, nil, err)
		}
		return s.writeError(w, err)
	}
	release, err := s.openConn(p.Tenant)
	if err != nil {
		return s.writeError(w, err) // 429
	}
	defer release()
	if res.Endpoint == EndpointCommandResponse {
		return s.commandResponse(w, r, res, p)
	}
	return s.upload(w, r, res, p)
}

// preflight answers a CORS preflight request as Hono's adapter (Vert.x's
// CorsHandler) does: 204 with the origin, method and headers allowed for
// the resource, 403 for another method.
func (s *Server) preflight(w http.ResponseWriter, r *http.Request, res Resource, perr error) int {
	if perr != nil {
		return s.writeError(w, perr)
	}
	want := http.MethodPost
	if res.Long {
		want = http.MethodPut
	}
	if !strings.EqualFold(r.Header.Get("Access-Control-Request-Method"), want) {
		http.Error(w, "CORS Rejected - Invalid method", http.StatusForbidden)
		return http.StatusForbidden
	}
	cors(w.Header(), res, true)
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent
}

// cors sets the CORS response headers of a resource (Hono's adapter:
// any origin; qos-level, hono-ttd, authorization and content-type for
// telemetry; hono-ttd (and hono-ttl) for events; hono-cmd-status for
// responses; the command headers exposed).
func cors(h http.Header, res Resource, preflight bool) {
	h.Set("Access-Control-Allow-Origin", "*")
	if preflight {
		method := "POST"
		if res.Long {
			method = "PUT"
		}
		h.Set("Access-Control-Allow-Methods", method)
		switch res.Endpoint {
		case EndpointTelemetry:
			h.Set("Access-Control-Allow-Headers", "qos-level,hono-ttd,authorization,content-type")
		case EndpointEvent:
			h.Set("Access-Control-Allow-Headers", "hono-ttd,hono-ttl,authorization,content-type")
		case EndpointCommandResponse:
			h.Set("Access-Control-Allow-Headers", "hono-cmd-status,authorization,content-type")
		}
		return
	}
	if res.Endpoint != EndpointCommandResponse {
		h.Set("Access-Control-Expose-Headers", "hono-command,hono-cmd-req-id,hono-cmd-target-device")
	}
}

// authenticate finds the request's device, in Hono's order: a client
// certificate of a tenant's trust anchor, HTTP basic credentials
// (auth-id@tenant), else — for a long-form resource of a tenant whose
// hono-http adapter has device-authentication-required false — the
// device the path names, unauthenticated.
//
// A kept-alive connection reuses the principal of its last Authorization
// header (or certificate) while the header is the same, for at most
// AuthCacheTTL and only while no change of the device, its credentials or
// its tenant came since (changes, authcache.go): the reuse costs no
// decoding, no context and no allocation.
func (s *Server) authenticate(r *http.Request, res Resource) (*auth.Principal, error) {
	cs, _ := r.Context().Value(connKey{}).(*connState)
	if cs == nil {
		cs = &connState{}
	}
	now := time.Now()
	ttl := s.cfg.AuthCacheTTL
	if tlsState(r) != nil && s.cfg.Auth.HasDeviceCert(r.TLS) {
		cs.mu.Lock()
		p, perr, at, st := cs.certP, cs.certErr, cs.certAt, cs.certStamp
		cs.mu.Unlock()
		if (p != nil || perr != nil) && ttl > 0 && now.Sub(at) < ttl &&
			(p != nil && s.changes.current(st) || p == nil && s.changes.all.Load() == st.all) {
			return p, perr
		}
		before := s.changes.all.Load()
		ctx, cancel := context.WithTimeout(r.Context(), registryLookupTime)
		p, err := s.cfg.Auth.AuthenticateCert(ctx, auth.AdapterHTTP, r.TLS)
		cancel()
		if err == nil {
			s.auditAuth(r, p, nil)
		}
		if !errors.Is(err, auth.ErrNoDeviceCert) {
			if errors.Is(err, auth.ErrUnavailable) {
				return nil, err // not remembered: the next request may succeed
			}
			st, ok := stamp{all: before}, s.changes.all.Load() == before
			if p != nil {
				st, ok = s.changes.stampOf(before, p.Tenant, p.Device)
			}
			if ok {
				cs.mu.Lock()
				cs.certP, cs.certErr, cs.certAt, cs.certStamp = p, err, now, st
				cs.mu.Unlock()
			}
			return p, err
		}
	}
	if authz := r.Header.Get("Authorization"); authz != "" {
		scheme, token, _ := strings.Cut(authz, " ")
		bearer := strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(token) != ""
		key := authz
		if bearer {
			// A token without the hono-adapter audience is checked with
			// the path's tenant and auth-id: they are part of the key.
			key += "\x00" + res.Tenant + "\x00" + res.Device
		}
		cs.mu.Lock()
		p, same, at, st := cs.p, ctEqual(cs.authz, key), cs.at, cs.stamp
		cs.mu.Unlock()
		if p != nil && same && ttl > 0 && now.Sub(at) < ttl && s.changes.current(st) && !p.Expired(now) {
			return p, nil
		}
		user, pw, ok := r.BasicAuth()
		if !ok && !bearer {
			return nil, fmt.Errorf("%w: neither basic credentials nor a bearer token", ErrNoCredentials)
		}
		before := s.changes.all.Load()
		ctx, cancel := context.WithTimeout(r.Context(), registryLookupTime)
		defer cancel()
		var authID, tn string
		var err error
		if bearer {
			// Hono's HTTP bearer auth (auth/jwt.go): a JWT whose claims
			// name the tenant and auth-id, else the long form's path
			// levels do.
			tn, authID = res.Tenant, res.Device
			p, err = s.cfg.Auth.AuthenticateJWT(ctx, auth.AdapterHTTP, tn, authID, strings.TrimSpace(token))
		} else {
			authID, tn = auth.SplitUser(user, tenant.Default)
			p, err = s.cfg.Auth.AuthenticateFor(auth.WithSourceAddr(ctx, r.RemoteAddr), auth.AdapterHTTP, tn, authID, pw)
		}
		if err != nil {
			return nil, err
		}
		if !p.IsDevice() {
			return nil, fmt.Errorf("%w: %q of tenant %q is a user", ErrNotDevice, authID, tn)
		}
		s.auditAuth(r, p, nil)
		if st, ok := s.changes.stampOf(before, p.Tenant, p.Device); ok {
			cs.mu.Lock()
			cs.authz, cs.p, cs.at, cs.stamp = key, p, now, st
			cs.mu.Unlock()
		}
		return p, nil
	}
	if !res.Long || res.Tenant == "" {
		return nil, ErrNoCredentials
	}
	ctx, cancel := context.WithTimeout(r.Context(), registryLookupTime)
	defer cancel()
	return s.unauthenticated(ctx, res)
}

// unauthenticated is the principal of a device that does not
// authenticate: allowed where the tenant's hono-http adapter says
// device-authentication-required false (Hono's per-tenant setting); the
// device must be registered and enabled (else 404).
func (s *Server) unauthenticated(ctx context.Context, res Resource) (*auth.Principal, error) {
	t, ok := s.cfg.Tenants.Tenant(res.Tenant)
	if !ok || t.IoT == nil || s.cfg.Devices == nil {
		return nil, ErrNoCredentials
	}
	ad := httpAdapter(t.IoT)
	if ad == nil || ad.DeviceAuthenticationRequired == nil || *ad.DeviceAuthenticationRequired {
		return nil, ErrNoCredentials
	}
	if !t.IoT.IsEnabled() || ad.Enabled == nil || !*ad.Enabled {
		return nil, ErrAdapterDisabled
	}
	d, _, err := s.cfg.Devices.Device(ctx, res.Tenant, res.Device)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, fmt.Errorf("%w: %q", ErrUnknownDevice, res.Device)
	case err != nil:
		return nil, fmt.Errorf("%w: registry: %v", auth.ErrUnavailable, err)
	case !d.IsEnabled():
		return nil, fmt.Errorf("%w: %q", ErrUnknownDevice, res.Device)
	}
	return &auth.Principal{Tenant: res.Tenant, Device: res.Device}, nil
}

// httpAdapter is the tenant's hono-http adapter entry, nil if none.
func httpAdapter(iot *tenant.IoT) *tenant.Adapter {
	for i := range iot.Adapters {
		if iot.Adapters[i].Type == auth.AdapterHTTP {
			return &iot.Adapters[i]
		}
	}
	return nil
}

// maxTTD is the tenant's cap of hono-ttd: the hono-http adapter's ext
// "max-ttd" (seconds), else the server's.
func (s *Server) maxTTD(tenantName string) time.Duration {
	if t, ok := s.cfg.Tenants.Tenant(tenantName); ok && t.IoT != nil {
		if ad := httpAdapter(t.IoT); ad != nil {
			if raw, ok := ad.Ext[extMaxTTD]; ok {
				var n int64
				if json.Unmarshal(raw, &n) == nil && n > 0 {
					return time.Duration(n) * time.Second
				}
			}
		}
	}
	return s.cfg.MaxTTD
}

// maxSize is the largest body a device of the tenant may send.
func (s *Server) maxSize(tenantName string) int64 {
	if t, ok := s.cfg.Tenants.Tenant(tenantName); ok && t.Effective().MaxMessageSize > 0 {
		return int64(t.Effective().MaxMessageSize)
	}
	return s.cfg.MaxMessageSize
}

// readBody reads the request body, bounded by the tenant's maximum
// message size and by ReadTimeout.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, tenantName string) ([]byte, error) {
	limit := s.maxSize(tenantName)
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes, the maximum is %d", ErrTooLarge, r.ContentLength, limit)
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
	if n := r.ContentLength; n >= 0 && n <= exactBody {
		// The length is known and small, and net/http's body ends
		// there: one buffer of that size, no growing copies and no limit
		// reader. (A large one is read as it comes: a client announcing
		// 64 MiB and sending nothing must not cost 64 MiB at once.)
		body := make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, fmt.Errorf("%w: reading the body: %v", ErrBadRequest, err)
		}
		return body, nil
	}
	// Chunked: the server's own writer, which closes the connection
	// after a body cut at the limit.
	body, err := io.ReadAll(http.MaxBytesReader(unwrap(w), r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, fmt.Errorf("%w: the maximum is %d bytes", ErrTooLarge, limit)
	case err != nil:
		return nil, fmt.Errorf("%w: reading the body: %v", ErrBadRequest, err)
	}
	return body, nil
}

// param is a header, else the query parameter of the same meaning.
func param(r *http.Request, header, query string) string {
	if v := r.Header.Get(header); v != "" {
		return v
	}
	if r.URL.RawQuery == "" {
		return "" // most requests: no query to parse (and allocate)
	}
	return r.URL.Query().Get(query)
}

// isEmptyNotification reports whether a content type is Hono's empty
// notification (parameters ignored).
func isEmptyNotification(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), hono.ContentTypeEmpty)
}

// upload publishes a device's telemetry or event and, with hono-ttd,
// waits for a command to return in the response.
func (s *Server) upload(w http.ResponseWriter, r *http.Request, res Resource, p *auth.Principal) int {
	ctx := r.Context()
	var qos byte
	if res.Endpoint == EndpointEvent {
		qos = 1
	} else {
		switch v := r.Header.Get(headerQoS); v {
		case "", "0":
		case "1":
			qos = 1
		default:
			return s.writeError(w, fmt.Errorf("%w: qos-level %q (0 or 1)", ErrBadRequest, v))
		}
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return s.writeError(w, fmt.Errorf("%w: content-type header missing", ErrBadRequest))
	}
	var ttl time.Duration
	if v := param(r, headerTTL, paramTTL); v != "" && res.Endpoint == EndpointEvent {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return s.writeError(w, fmt.Errorf("%w: hono-ttl %q", ErrBadRequest, v))
		}
		ttl = time.Duration(n) * time.Second
	}
	// Hono ignores a hono-ttd that is not an integer; a positive one is
	// capped by the tenant's max-ttd.
	var ttd time.Duration
	if v := param(r, headerTTD, paramTTD); v != "" {
		if n, err := strconv.ParseInt(v, 10, 32); err == nil && n > 0 {
			ttd = min(time.Duration(n)*time.Second, s.maxTTD(p.Tenant))
		}
	}
	if err := s.checkRate(p.Tenant); err != nil {
		return s.writeError(w, err) // 429 before the body is read (ratecheck.go)
	}
	body, err := s.readBody(w, r, p.Tenant)
	if err != nil {
		return s.writeError(w, err)
	}
	empty := isEmptyNotification(ct)
	switch {
	case len(body) == 0 && !empty:
		return s.writeError(w, fmt.Errorf("%w: an empty body needs content-type %s", ErrBadRequest, hono.ContentTypeEmpty))
	case len(body) > 0 && empty:
		return s.writeError(w, fmt.Errorf("%w: an empty notification has no body", ErrBadRequest))
	}
	up, err := s.cfg.Hono.Upstream(ctx, p, hono.UpstreamRequest{
		Adapter: auth.AdapterHTTP, Topic: res.topic(""), QoS: qos, Payload: body, ContentType: ct, TTL: ttl, TTD: ttd,
	})
	if err != nil {
		return s.writeError(w, err)
	}
	m := up.Message
	m.Properties[hono.PropOrigAddress] = r.URL.RequestURI()
	var cw *commandWait
	if ttd > 0 {
		// Hono's order: ready for a command before the message goes out,
		// so that an application reacting to its ttd is not too early.
		m.Properties[hono.PropTTD] = int32(ttd / time.Second)
		cw, err = s.waitCommands(ctx, p, up)
		if err != nil {
			return s.writeError(w, err)
		}
		defer cw.close()
	}
	// QoS 0 telemetry is not waited for (Hono: 202 says nothing about
	// delivery); QoS 1 telemetry waits for the application's
	// acceptance, an event for the engine's.
	wait := qos == 1
	if err := s.publish(ctx, up.Tenant, up.Address, m, wait, true); err != nil {
		return s.writeError(w, err)
	}
	if cw == nil {
		w.WriteHeader(http.StatusAccepted)
		return http.StatusAccepted
	}
	return s.awaitCommand(w, r, cw, p, ttd)
}

// commandResponse forwards a device's response to a command to the
// application's command_response/T/<reply-id>.
func (s *Server) commandResponse(w http.ResponseWriter, r *http.Request, res Resource, p *auth.Principal) int {
	status := param(r, headerCmdStatus, paramCmdStatus)
	if n, err := strconv.Atoi(status); err != nil || len(status) != 3 || n < 200 || n > 599 {
		return s.writeError(w, fmt.Errorf("%w: hono-cmd-status %q (an HTTP status code)", ErrBadRequest, status))
	}
	body, err := s.readBody(w, r, p.Tenant)
	if err != nil {
		return s.writeError(w, err)
	}
	up, err := s.cfg.Hono.Upstream(r.Context(), p, hono.UpstreamRequest{
		Adapter: auth.AdapterHTTP, Topic: res.topic(status), QoS: 1, Payload: body,
		ContentType: r.Header.Get("Content-Type"),
	})
	if err != nil {
		return s.writeError(w, err)
	}
	// The application's receiver must take it: none (it gave up) is 503.
	if err := s.publish(r.Context(), up.Tenant, up.Address, up.Message, true, false); err != nil {
		return s.writeError(w, err)
	}
	w.WriteHeader(http.StatusAccepted)
	return http.StatusAccepted
}

// compile-time check that the router satisfies Router.
var _ Router = (*router.Router)(nil)

// deadlineWriter sets the connection's write deadline when the answer
// starts.
type deadlineWriter struct {
	http.ResponseWriter
	d       time.Duration
	started bool
}

func (w *deadlineWriter) WriteHeader(code int) {
	if !w.started {
		w.started = true
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.d))
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	if !w.started {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func unwrap(w http.ResponseWriter) http.ResponseWriter {
	if dw, ok := w.(*deadlineWriter); ok {
		return dw.ResponseWriter
	}
	return w
}
