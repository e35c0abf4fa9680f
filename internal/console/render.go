package console

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/auth"
)

// page is what every template gets.
type page struct {
	Title string
	Nav   string // the navigation entry to highlight
	// Tenant is the tenant the page is about ("" for platform pages).
	Tenant string
	// Tenants the user may switch between (the platform administrator:
	// all; anyone else: its own).
	Tenants []string
	User    string // "name@tenant"
	Home    string // the user's tenant
	IsAdmin bool   // the platform administrator
	CanEdit bool   // may change Tenant (not an operator)
	CSRF    string
	Error   string
	Flash   string
	Self    string // this page's URL, for htmx refreshes
	Version string
	Data    any
}

var funcs = template.FuncMap{
	"rate": func(v float64) string {
		switch {
		case v == 0:
			return "0"
		case v < 10:
			return fmt.Sprintf("%.1f", v)
		}
		return fmt.Sprintf("%.0f", v)
	},
	"bytes": humanBytes,
	"num": func(v any) string {
		switch n := v.(type) {
		case float64:
			if n == math.Trunc(n) {
				return fmt.Sprintf("%.0f", n)
			}
			return fmt.Sprintf("%.1f", n)
		}
		return fmt.Sprint(v)
	},
	"limit": func(v float64) string {
		if v == 0 {
			return "unlimited"
		}
		return fmt.Sprintf("%.0f", v)
	},
	"since": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return time.Since(t).Truncate(time.Second).String()
	},
	"when": func(v any) string {
		var t time.Time
		switch x := v.(type) {
		case time.Time:
			t = x
		case *time.Time:
			if x != nil {
				t = *x
			}
		}
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"esc": esc,
	// stamp shows an RFC 3339 time of the API to the second.
	"stamp": func(v string) string {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return v
		}
		return t.UTC().Format("2006-01-02 15:04:05Z") + " (" + time.Since(t).Truncate(time.Second).String() + " ago)"
	},
	"deref":    func(b *bool) bool { return b != nil && *b },
	"addrPath": addrPath,
	"join":     strings.Join,
	"list":     func(v ...string) []string { return v },
	// field is the first of keys present in a JSON object, as text.
	"field": func(m map[string]any, keys ...string) string {
		for _, k := range keys {
			if v, ok := m[k]; ok && v != nil {
				switch x := v.(type) {
				case float64:
					if x == math.Trunc(x) {
						return fmt.Sprintf("%.0f", x)
					}
					return fmt.Sprintf("%.1f", x)
				case bool:
					if !x {
						return ""
					}
				}
				return fmt.Sprint(v)
			}
		}
		return ""
	},
	"pct": func(used, limit float64) string {
		if limit <= 0 {
			return ""
		}
		return fmt.Sprintf("%.0f%%", 100*used/limit)
	},
}

func humanBytes(v any) string {
	var n float64
	switch x := v.(type) {
	case int64:
		n = float64(x)
	case uint64:
		n = float64(x)
	case float64:
		n = x
	case int:
		n = float64(x)
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}

// fill sets the session's part of p.
func (s *Server) fill(r *http.Request, sess *session, p *page) {
	p.Version = s.cfg.Version
	p.Self = r.URL.RequestURI()
	if sess == nil {
		return
	}
	p.User = sess.p.User + "@" + sess.p.Tenant
	p.Home = sess.p.Tenant
	p.IsAdmin = sess.p.IsAdmin()
	p.CSRF = sess.csrf
	if p.Tenant != "" {
		p.CanEdit = sess.p.MayAdminister(p.Tenant, auth.ScopeTenantWrite)
	} else {
		p.CanEdit = p.IsAdmin
	}
	p.Flash = s.sessions.takeFlash(sess)
	if p.IsAdmin {
		var ts []struct {
			Name string `json:"name"`
		}
		if err := s.call(r, http.MethodGet, "/api/tenants", nil, &ts); err == nil {
			for _, t := range ts {
				p.Tenants = append(p.Tenants, t.Name)
			}
		}
	} else {
		p.Tenants = []string{sess.p.Tenant}
	}
}

// render writes a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page) {
	t := s.pages[name]
	if t == nil {
		http.Error(w, "no template "+name, http.StatusInternalServerError)
		return
	}
	s.fill(r, sessionOf(r), p)
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		s.log.Error("console template failed", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// renderError shows an error page with the status.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, sess *session, status int, msg string) {
	if sess != nil && sessionOf(r) == nil {
		r = r.WithContext(withSession(r.Context(), sess))
	}
	s.render(w, r, status, "error", &page{Title: http.StatusText(status), Error: msg})
}

// fail shows an API error on an error page with the API's status.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if _, ok := err.(*apiError); !ok {
		s.log.Error("console request failed", "path", r.URL.Path, "err", err)
	}
	s.renderError(w, r, nil, statusOf(err), err.Error())
}

// done ends a successful POST: a one-time message and a redirect (so
// that reload and back do not send the form again).
func (s *Server) done(w http.ResponseWriter, r *http.Request, to, msg string) {
	if sess := sessionOf(r); sess != nil {
		s.sessions.setFlash(sess, msg)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}
