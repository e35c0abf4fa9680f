// Package console is throng's web console: server-rendered pages
// (html/template) for the dashboard, tenants, addresses, connections,
// users and devices, served by the admin listener at "/" (admin.Config
// Console). Static files, the templates and two small vendored libraries
// (htmx, uPlot; static/vendor, licences beside them) are embedded: there
// is no front-end build step.
//
// Every view and action goes through the admin API, called in-process as
// the logged-in user (admin.WithPrincipal): the console has no rights of
// its own, and a tenant operator sees in the console exactly what the API
// shows it. Sessions (session.go) are random tokens held in memory with
// an idle and an absolute expiry; POSTs need the session's CSRF token and
// a same-origin request. docs/console.md describes the views and the
// decisions.
package console

import (
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/auth"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Authenticator checks a user's password (*auth.Authenticator).
type Authenticator interface {
	Authenticate(tenantName, user, password string) (*auth.Principal, error)
}

// Config wires the console.
type Config struct {
	// API is the admin API handler (audited); the console calls it
	// in-process for each page and action.
	API http.Handler
	// Auth checks the login form's password.
	Auth Authenticator
	// Producers publishes the address page's test messages (the router);
	// nil: the form is not shown.
	Producers Producers
	// Audit receives console logins and refused logins; may be nil.
	Audit *audit.Log
	// DataDir is where the node stores its data; the dashboard shows the
	// free space of its file system ("" hides it).
	DataDir string
	Version string
	Logger  *slog.Logger
	// IdleTimeout ends a session not used for that long (default 30
	// minutes); MaxAge ends any session (default 12 hours).
	IdleTimeout time.Duration
	MaxAge      time.Duration
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Server serves the console.
type Server struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	sessions *sessions
	pages    map[string]*template.Template
	rates    *rates
	static   http.Handler
}

// New returns the console handler.
func New(cfg Config) (*Server, error) {
	if cfg.API == nil || cfg.Auth == nil {
		return nil, errors.New("console: the admin API and an authenticator are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 12 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "console"),
		mux:      http.NewServeMux(),
		sessions: newSessions(cfg.IdleTimeout, cfg.MaxAge, cfg.Now),
		rates:    newRates(cfg.Now),
	}
	if err := s.parse(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	s.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	s.routes()
	return s, nil
}

func (s *Server) parse() error {
	s.pages = map[string]*template.Template{}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return err
		}
		s.pages[base] = t
	}
	return nil
}

// ServeHTTP serves the console.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// The pages load only their own scripts and styles; uPlot sets
	// element styles from script, which style-src does not restrict.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	m := s.mux
	m.Handle("GET /static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		s.static.ServeHTTP(w, r)
	}))
	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.authed(s.logout))

	m.HandleFunc("GET /{$}", s.authed(s.dashboard))
	m.HandleFunc("GET /dashboard.json", s.authed(s.dashboardJSON))
	m.HandleFunc("GET /history.json", s.authed(s.history))
	m.HandleFunc("GET /tenants", s.authed(s.tenants))
	m.HandleFunc("GET /switch", s.authed(s.switchTenant))
	m.HandleFunc("POST /tenants", s.authed(s.createTenant))
	m.HandleFunc("GET /connections", s.authed(s.connections))
	m.HandleFunc("GET /connections/{id}", s.authed(s.connection))
	m.HandleFunc("POST /connections/{id}", s.authed(s.closeConnection))
	m.HandleFunc("GET /anomalies", s.authed(s.anomalies)) // anomalies.go
	m.HandleFunc("GET /t/{tenant}", s.authed(s.tenant))
	m.HandleFunc("GET /t/{tenant}/addresses", s.authed(s.addresses))
	m.HandleFunc("GET /t/{tenant}/addresses/new", s.authed(s.newAddress))
	m.HandleFunc("POST /t/{tenant}/addresses", s.authed(s.createAddress))
	m.HandleFunc("GET /t/{tenant}/address/{name...}", s.authed(s.address))
	m.HandleFunc("POST /t/{tenant}/address/{name...}", s.authed(s.addressAction))
	m.HandleFunc("GET /t/{tenant}/users", s.authed(s.users))
	m.HandleFunc("POST /t/{tenant}/users", s.authed(s.createUser))
	m.HandleFunc("GET /t/{tenant}/devices", s.authed(s.devices))
	m.HandleFunc("POST /t/{tenant}/devices", s.authed(s.createDevice))
	m.HandleFunc("GET /t/{tenant}/device/{id}", s.authed(s.device))
	m.HandleFunc("POST /t/{tenant}/device/{id}", s.authed(s.deviceAction))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.renderError(w, r, nil, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
	})
}
