// Package admin is throng's admin REST API: tenants, addresses and users
// as JSON resources under /api, the OpenAPI document at /openapi.json,
// health and readiness probes, and Prometheus metrics.
//
// Every /api route and /metrics need HTTP Basic credentials ("admin" for
// the default tenant, or "user@tenant") of a user whose role allows the
// request (access.go, one rule for /api and /v1; docs/admin-api.md,
// "Roles"); the probes and the OpenAPI document are public. Errors are always
// {"error":{"code","message"}} with the status from the table in errors.go.
//
// The package serves an http.Handler; the composition root owns the
// listener and the http.Server.
package admin

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// Router changes tenants and addresses; it is the router, because those
// changes also touch the engine (accounts, streams).
type Router interface {
	CreateTenant(ctx context.Context, t *tenant.Tenant) error
	UpdateTenant(ctx context.Context, t *tenant.Tenant) error
	DeleteTenant(ctx context.Context, name string) error
	CreateAddress(ctx context.Context, tenantName string, a *address.Address) error
	UpdateAddress(ctx context.Context, tenantName string, a *address.Address) error
	DeleteAddress(ctx context.Context, tenantName, name string) error
	AddressStats(ctx context.Context, tenantName, name string) (address.Stats, error)
}

// Store is what the API reads, and where users are managed (*tenant.Store).
type Store interface {
	Tenant(name string) (*tenant.Tenant, bool)
	Tenants() []*tenant.Tenant
	Address(tenantName, name string) (*address.Address, bool)
	Addresses(tenantName string) []*address.Address
	User(tenantName, name string) (*tenant.User, bool)
	Users(tenantName string) []*tenant.User
	PutUser(ctx context.Context, u *tenant.User, create bool) error
	DeleteUser(ctx context.Context, tenantName, name string) error
}

// Authenticator checks credentials (*auth.Authenticator).
type Authenticator interface {
	Authenticate(tenantName, user, password string) (*auth.Principal, error)
}

// Config wires the API to the rest of the platform.
type Config struct {
	Router Router
	Store  Store
	Auth   Authenticator
	// Gatherer is served at /metrics; nil serves an empty page.
	Gatherer prometheus.Gatherer
	// Registerer receives the API's own metrics; may be nil.
	Registerer prometheus.Registerer
	// Ready reports whether the platform is ready (for /readyz); nil
	// means always.
	Ready func() bool
	// Cluster reports the cluster for GET /api/status; nil leaves it out.
	Cluster func() *ClusterStatus
	// RemoveNode takes a stopped node out of the cluster for good
	// (cluster.go); nil answers 404.
	RemoveNode func(ctx context.Context, name string) (*NodeRemoval, error)
	Version    string
	Logger     *slog.Logger
	// SetPassword stores a new user's password (bcrypt hash and SCRAM
	// verifier); nil uses auth.SetPassword.
	SetPassword func(u *tenant.User, password string) error
	// Registry serves Hono's device registry API under /v1 (hono.go); nil
	// answers 404 for devices and credentials.
	Registry Registry
	// Console serves every path that is not the API's (/api, /v1 and the
	// routes above): the web console (internal/console); nil answers 404.
	Console http.Handler
	// Observe serves connections, queue actions and history
	// (connections.go); its nil parts answer 404.
	Observe Observe
}

// MaxBodyBytes bounds request bodies; larger ones get 413.
const MaxBodyBytes = 1 << 20

// Server is the admin API handler.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	started time.Time
	reqs    *prometheus.CounterVec
	prom    http.Handler // /metrics
}

// route is one API route; the table is also checked against the OpenAPI
// document by the tests.
type route struct {
	method, path string
	need         access // who may call it (access.go)
	h            func(*Server, http.ResponseWriter, *http.Request)
}

var routes = []route{
	{"GET", "/healthz", accessPublic, (*Server).healthz},
	{"GET", "/readyz", accessPublic, (*Server).readyz},
	{"GET", "/openapi.json", accessPublic, (*Server).openapi},
	{"GET", "/metrics", accessPlatform, (*Server).metrics},
	{"GET", "/api/status", accessPlatform, (*Server).status},
	{"POST", "/api/cluster/nodes/{node}/remove", accessPlatform, (*Server).removeNode},
	{"GET", "/api/tenants", accessPlatform, (*Server).listTenants},
	{"POST", "/api/tenants", accessPlatform, (*Server).createTenant},
	{"GET", "/api/tenants/{tenant}", accessTenant, (*Server).getTenant},
	{"PUT", "/api/tenants/{tenant}", accessTenant, (*Server).updateTenant},
	{"DELETE", "/api/tenants/{tenant}", accessPlatform, (*Server).deleteTenant},
	{"GET", "/api/tenants/{tenant}/addresses", accessTenant, (*Server).listAddresses},
	{"POST", "/api/tenants/{tenant}/addresses", accessTenant, (*Server).createAddress},
	// Address names contain '/': the last wildcard takes the rest of the
	// path, unescaped, so "orders/eu" may be sent as is or as orders%2Feu.
	{"GET", "/api/tenants/{tenant}/addresses/{name...}", accessTenant, (*Server).getAddress},
	{"PUT", "/api/tenants/{tenant}/addresses/{name...}", accessTenant, (*Server).updateAddress},
	{"DELETE", "/api/tenants/{tenant}/addresses/{name...}", accessTenant, (*Server).deleteAddress},
	{"GET", "/api/tenants/{tenant}/users", accessTenant, (*Server).listUsers},
	{"POST", "/api/tenants/{tenant}/users", accessTenant, (*Server).createUser},
	{"GET", "/api/tenants/{tenant}/users/{name}", accessTenant, (*Server).getUser},
	{"PUT", "/api/tenants/{tenant}/users/{name}", accessTenant, (*Server).updateUser},
	{"DELETE", "/api/tenants/{tenant}/users/{name}", accessTenant, (*Server).deleteUser},
	// Hono's Device Registry Management API (hono.go): its handlers name
	// the scope (allow, the same rule) and answer in Hono's error shape.
	{"POST", "/v1/tenants", accessV1, (*Server).v1CreateTenant},
	{"GET", "/v1/tenants", accessV1, (*Server).v1SearchTenants},
	{"POST", "/v1/tenants/{tenantId}", accessV1, (*Server).v1CreateTenant},
	{"GET", "/v1/tenants/{tenantId}", accessV1, (*Server).v1GetTenant},
	{"PUT", "/v1/tenants/{tenantId}", accessV1, (*Server).v1UpdateTenant},
	{"DELETE", "/v1/tenants/{tenantId}", accessV1, (*Server).v1DeleteTenant},
	{"POST", "/v1/devices/{tenantId}", accessV1, (*Server).v1CreateDevice},
	{"GET", "/v1/devices/{tenantId}", accessV1, (*Server).v1SearchDevices},
	{"DELETE", "/v1/devices/{tenantId}", accessV1, (*Server).v1DeleteDevices},
	{"POST", "/v1/devices/{tenantId}/{deviceId}", accessV1, (*Server).v1CreateDevice},
	{"GET", "/v1/devices/{tenantId}/{deviceId}", accessV1, (*Server).v1GetDevice},
	{"PUT", "/v1/devices/{tenantId}/{deviceId}", accessV1, (*Server).v1UpdateDevice},
	{"DELETE", "/v1/devices/{tenantId}/{deviceId}", accessV1, (*Server).v1DeleteDevice},
	{"GET", "/v1/credentials/{tenantId}/{deviceId}", accessV1, (*Server).v1GetCredentials},
	{"PUT", "/v1/credentials/{tenantId}/{deviceId}", accessV1, (*Server).v1SetCredentials},
}

// New returns the API handler.
func New(cfg Config) (*Server, error) {
	if cfg.Router == nil || cfg.Store == nil || cfg.Auth == nil {
		return nil, errors.New("admin: router, store and authenticator are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SetPassword == nil {
		cfg.SetPassword = auth.SetPassword
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "admin"),
		mux:     http.NewServeMux(),
		started: time.Now(),
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "throng", Subsystem: "admin", Name: "requests_total",
			Help: "Admin API requests by method and status code.",
		}, []string{"method", "code"}),
	}
	g := cfg.Gatherer
	if g == nil {
		g = prometheus.NewRegistry()
	}
	s.prom = promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
	})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.reqs); err != nil {
			return nil, fmt.Errorf("admin: metrics: %w", err)
		}
	}
	for _, rt := range routes {
		h := rt.h
		var hf http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(s, w, r) })
		switch rt.need {
		case accessPlatform, accessTenant:
			hf = s.requireAccess(rt.need, hf)
		case accessV1:
			hf = s.requireRegistryUser(hf)
		}
		s.mux.Handle(rt.method+" "+rt.path, hf)
	}
	return s, nil
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		s.reqs.WithLabelValues(r.Method, strconv.Itoa(sw.code)).Inc()
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.code)
	}()
	h, pattern := s.mux.Handler(r)
	if pattern == "" && s.cfg.Console != nil && !isAPIPath(r.URL.Path) {
		s.cfg.Console.ServeHTTP(sw, r)
		return
	}
	if pattern != "" {
		// ServeHTTP (not h) so that the path values are set on r.
		s.mux.ServeHTTP(sw, r)
		return
	}
	// No route: the mux answers 404, 405 or a redirect to the cleaned
	// path in plain text; let it decide, then answer in JSON.
	rec := &headerRecorder{h: http.Header{}, code: http.StatusOK}
	h.ServeHTTP(rec, r)
	if isV1(r.URL.Path) && (rec.code == http.StatusNotFound || rec.code == http.StatusMethodNotAllowed) {
		// Hono's error shape under /v1.
		if allow := rec.h.Get("Allow"); allow != "" {
			sw.Header().Set("Allow", allow)
		}
		honoError(sw, rec.code, fmt.Sprintf("%s %s: no such resource or method", r.Method, r.URL.Path))
		return
	}
	switch rec.code {
	case http.StatusNotFound:
		writeError(sw, CodeNotFound, "no such resource: "+r.URL.Path)
	case http.StatusMethodNotAllowed:
		sw.Header().Set("Allow", rec.h.Get("Allow"))
		writeError(sw, CodeMethodNotAllowed, r.Method+" is not allowed here (allowed: "+rec.h.Get("Allow")+")")
	default:
		for k, v := range rec.h {
			sw.Header()[k] = v
		}
		sw.WriteHeader(rec.code)
	}
}

// isAPIPath reports whether p is the API's rather than the console's.
func isAPIPath(p string) bool {
	return p == "/api" || strings.HasPrefix(p, "/api/") || isV1(p) ||
		p == "/metrics" || p == "/healthz" || p == "/readyz" || p == "/openapi.json"
}

// isV1 reports whether a path belongs to Hono's registry API.
func isV1(p string) bool { return p == "/v1" || strings.HasPrefix(p, "/v1/") }

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type headerRecorder struct {
	h    http.Header
	code int
}

func (r *headerRecorder) Header() http.Header         { return r.h }
func (r *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *headerRecorder) WriteHeader(code int)        { r.code = code }

type principalKey struct{}

// WithPrincipal returns ctx carrying p as the authenticated caller: a
// request with it skips the Basic credentials check and is held to p's
// rights by the same rule (access.go). Only code in this process can set
// it; the web console calls the API this way for its logged-in user.
func WithPrincipal(ctx context.Context, p *auth.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principal(r *http.Request) *auth.Principal {
	p, _ := r.Context().Value(principalKey{}).(*auth.Principal)
	return p
}

// writeJSON writes v with the status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads a JSON body of at most MaxBodyBytes into v, rejecting
// unknown fields and trailing data. It writes the error response itself
// and reports whether decoding succeeded.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.ContentLength > MaxBodyBytes {
		writeError(w, CodeBodyTooLarge, "")
		return false
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Only white space may follow the object.
		if err2 := dec.Decode(&struct{}{}); !errors.Is(err2, io.EOF) {
			err = errors.New("unexpected data after the JSON object")
			var mbe *http.MaxBytesError
			if errors.As(err2, &mbe) {
				err = err2
			}
		}
	}
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, CodeBodyTooLarge, "")
	case errors.Is(err, io.EOF):
		writeError(w, CodeInvalidBody, "the request body is empty")
	default:
		writeError(w, CodeInvalidBody, "request body: "+bodyProblem(err))
	}
	return false
}

// fail renders an error from the router or the store.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := classify(err)
	if code == CodeInternal {
		s.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, code, msg)
}

// ---- probes, documents, metrics

//go:embed openapi.json
var openapiDoc []byte

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) ready() bool { return s.cfg.Ready == nil || s.cfg.Ready() }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.ready() {
		writeError(w, CodeNotReady, "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiDoc)
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) { s.prom.ServeHTTP(w, r) }

// Status is the body of GET /api/status.
type Status struct {
	Version   string    `json:"version"`
	Ready     bool      `json:"ready"`
	Started   time.Time `json:"started"`
	Uptime    string    `json:"uptime"`
	Tenants   int       `json:"tenants"`
	Addresses int       `json:"addresses"`
	Users     int       `json:"users"`
	// Cluster: the nodes and routes (cluster.go).
	Cluster *ClusterStatus `json:"cluster,omitempty"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st := Status{
		Version: s.cfg.Version,
		Ready:   s.ready(),
		Started: s.started.UTC(),
		Uptime:  time.Since(s.started).Truncate(time.Second).String(),
	}
	for _, t := range s.cfg.Store.Tenants() {
		st.Tenants++
		st.Addresses += len(s.cfg.Store.Addresses(t.Name))
		st.Users += len(s.cfg.Store.Users(t.Name))
	}
	if s.cfg.Cluster != nil {
		st.Cluster = s.cfg.Cluster()
	}
	writeJSON(w, http.StatusOK, st)
}
