package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// cookieName is the session cookie.
const cookieName = "throng_session"

// maxSessions bounds the sessions held: a new login beyond it ends the
// session used least recently (each is a few hundred bytes).
const maxSessions = 10000

// session is one logged-in browser. The cookie holds a random token; the
// server keeps only its SHA-256, the principal and the CSRF token.
type session struct {
	p       *auth.Principal
	csrf    string
	created time.Time
	seen    time.Time // last request
	flash   string    // a message for the next page (after a POST)
}

// sessions is the in-memory session table; mu guards m and each
// session's seen.
type sessions struct {
	mu        sync.Mutex
	m         map[[32]byte]*session
	idle, max time.Duration
	now       func() time.Time
}

func newSessions(idle, max time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[[32]byte]*session{}, idle: idle, max: max, now: now}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for p and returns its token.
func (ss *sessions) create(p *auth.Principal) string {
	tok := randomToken()
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= maxSessions {
		ss.sweepLocked(now)
	}
	if len(ss.m) >= maxSessions {
		var oldest [32]byte
		var at time.Time
		for k, s := range ss.m {
			if at.IsZero() || s.seen.Before(at) {
				oldest, at = k, s.seen
			}
		}
		delete(ss.m, oldest)
	}
	ss.m[sha256.Sum256([]byte(tok))] = &session{p: p, csrf: randomToken(), created: now, seen: now}
	return tok
}

func (ss *sessions) sweepLocked(now time.Time) {
	for k, s := range ss.m {
		if ss.expired(s, now) {
			delete(ss.m, k)
		}
	}
}

func (ss *sessions) expired(s *session, now time.Time) bool {
	return now.Sub(s.seen) > ss.idle || now.Sub(s.created) > ss.max
}

// get returns the live session of a token and marks it used.
func (ss *sessions) get(tok string) *session {
	if tok == "" {
		return nil
	}
	k := sha256.Sum256([]byte(tok))
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[k]
	if s == nil {
		return nil
	}
	if ss.expired(s, now) {
		delete(ss.m, k)
		return nil
	}
	s.seen = now
	return s
}

func (ss *sessions) end(tok string) {
	ss.mu.Lock()
	delete(ss.m, sha256.Sum256([]byte(tok)))
	ss.mu.Unlock()
}

func (ss *sessions) setFlash(s *session, msg string) {
	ss.mu.Lock()
	s.flash = msg
	ss.mu.Unlock()
}

func (ss *sessions) takeFlash(s *session) string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	m := s.flash
	s.flash = ""
	return m
}

type sessionKey struct{}

func withSession(ctx context.Context, s *session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(sessionKey{}).(*session)
	return s
}

// authed lets a request with a live session through (with the session
// in its context); others go to the login page, which returns to the
// page asked for. A POST also needs the session's CSRF token and, when
// the browser sends one, a same-origin Origin header.
func (s *Server) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var sess *session
		if c, err := r.Cookie(cookieName); err == nil {
			sess = s.sessions.get(c.Value)
		}
		if sess == nil {
			if r.Method != http.MethodGet || r.Header.Get("HX-Request") != "" || strings.HasSuffix(r.URL.Path, ".json") {
				if r.Header.Get("HX-Request") != "" {
					w.Header().Set("HX-Redirect", "/login")
				}
				http.Error(w, "your session has ended: log in again", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			_ = r.ParseForm()
			if !sameOrigin(r) {
				s.renderError(w, r, sess, http.StatusForbidden, "This form was sent from another site.")
				return
			}
			tok := r.Header.Get("X-CSRF-Token")
			if tok == "" {
				tok = r.PostFormValue("csrf")
			}
			if subtle.ConstantTimeCompare([]byte(tok), []byte(sess.csrf)) != 1 {
				s.renderError(w, r, sess, http.StatusForbidden, "This form is out of date (its security token does not match your session): reload the page and try again.")
				return
			}
		}
		h(w, r.WithContext(withSession(r.Context(), sess)))
	}
}

// sameOrigin reports whether a POST's Origin (if any) is this host.
// SameSite=Strict already keeps the cookie off cross-site requests; this
// also refuses a cross-site login form.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil && s.sessions.get(c.Value) != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "login", &page{Title: "Log in", Data: map[string]string{"Next": r.URL.Query().Get("next")}})
}

// safeNext keeps a post-login redirect on this site.
func safeNext(n string) string {
	if n == "" || !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.HasPrefix(n, "/\\") {
		return "/"
	}
	return n
}

// sourceAuthenticator is an Authenticator that takes the login's source
// address (*auth.Authenticator).
type sourceAuthenticator interface {
	AuthenticateFor(ctx context.Context, adapter, tenantName, user, password string) (*auth.Principal, error)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		s.renderError(w, r, nil, http.StatusForbidden, "This form was sent from another site.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	name, password := r.PostFormValue("user"), r.PostFormValue("password")
	next := r.PostFormValue("next")
	user, ten := auth.SplitUser(strings.TrimSpace(name), tenant.Default)
	fail := func(msg string) {
		s.render(w, r, http.StatusUnauthorized, "login", &page{Title: "Log in", Error: msg, Data: map[string]string{"Next": next, "User": name}})
	}
	if user == "" || password == "" {
		fail("Enter your user name and password.")
		return
	}
	var p *auth.Principal
	var err error
	if af, ok := s.cfg.Auth.(sourceAuthenticator); ok {
		// The source address counts in the login backoff, as for the API
		// and every protocol (auth/backoff.go).
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		p, err = af.AuthenticateFor(auth.WithSourceAddr(ctx, r.RemoteAddr), "", ten, user, password)
		cancel()
	} else {
		p, err = s.cfg.Auth.Authenticate(ten, user, password)
	}
	e := audit.Event{Protocol: audit.Admin, Remote: r.RemoteAddr, Tenant: ten, User: user, Mechanism: "console"}
	if err != nil {
		e.Kind, e.Reason = audit.LoginFailed, "bad_credentials"
		s.cfg.Audit.Record(e)
		s.log.Info("console login failed", "user", name, "remote", r.RemoteAddr)
		fail("Wrong user name or password.")
		return
	}
	if !p.MayUseAdminAPI() {
		e.Kind, e.Reason = audit.Denied, "forbidden"
		e.Resource = "console"
		s.cfg.Audit.Record(e)
		fail("This user may not use the console: it needs the admin, tenant-admin or operator role.")
		return
	}
	e.Kind = audit.Login
	s.cfg.Audit.Record(e)
	tok := s.sessions.create(p)
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: tok, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		s.sessions.end(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
