package admin

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// Audited wraps the admin API handler h so that it reports to the audit
// log (docs/security.md, "Audit log"):
//
//   - every request that may change something (any method but GET, HEAD
//     and OPTIONS), with its principal, method, path, resource and the
//     answer's status, whatever the outcome;
//   - a refused login: 401 for a request that carried credentials (a
//     request without any, such as a probe, is not an event);
//   - a permission denial: 403.
//
// Reads that succeed are not audited: they change nothing, and a
// dashboard polling the API would drown the changes. The principal is
// the Basic user name as sent, "name@tenant" normalised to its user and
// tenant: the handler has authenticated it when the status is not 401.
// With l nil, h is returned as it is.
func Audited(h http.Handler, l *audit.Log) http.Handler {
	if l == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isAPIPath(r.URL.Path) {
			// The web console's pages: its API calls come back through
			// here with the logged-in user's name (internal/console).
			h.ServeHTTP(w, r)
			return
		}
		sw := &auditWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		name, _, hasCreds := r.BasicAuth()
		change := r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions
		e := audit.Event{Protocol: audit.Admin, Remote: r.RemoteAddr, Method: r.Method, Path: r.URL.Path, Status: sw.code}
		if hasCreds {
			e.User, e.Tenant = auth.SplitUser(name, tenant.Default)
		}
		switch {
		case sw.code == http.StatusUnauthorized:
			if !hasCreds {
				return
			}
			e.Kind, e.Reason = audit.LoginFailed, "bad_credentials"
		case sw.code == http.StatusForbidden:
			e.Kind, e.Reason, e.Action = audit.Denied, "forbidden", r.Method
		case change:
			e.Kind = audit.AdminChange
		default:
			return
		}
		p := r.URL.Path
		if loc := sw.Header().Get("Location"); loc != "" && sw.code == http.StatusCreated {
			p = loc // a create names the new resource here
		}
		e.Resource = resourceOf(p)
		l.Record(e)
	})
}

// auditWriter remembers the status written.
type auditWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *auditWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *auditWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *auditWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// resourceOf names what an admin API path concerns, for the audit log:
// "tenant acme", "address acme/orders/eu", "user acme/app1", "device
// acme/d1", "credentials acme/d1", or a collection ("addresses of tenant
// acme", "tenants"). Other paths are returned as they are.
func resourceOf(p string) string {
	var rest string
	switch {
	case strings.HasPrefix(p, "/api/"):
		rest = p[len("/api/"):]
	case strings.HasPrefix(p, "/v1/"):
		rest = p[len("/v1/"):]
	default:
		return p
	}
	segs := strings.Split(strings.Trim(rest, "/"), "/")
	for i, s := range segs {
		if u, err := url.PathUnescape(s); err == nil {
			segs[i] = u
		}
	}
	singular := map[string]string{"tenants": "tenant", "addresses": "address", "users": "user", "devices": "device", "credentials": "credentials"}
	switch {
	case len(segs) == 1:
		return segs[0] // "tenants", "status"
	case segs[0] == "tenants" && len(segs) == 2:
		return "tenant " + segs[1]
	case segs[0] == "tenants" && len(segs) == 3:
		return segs[2] + " of tenant " + segs[1]
	case segs[0] == "tenants" && len(segs) >= 4:
		kind := singular[segs[2]]
		if kind == "" {
			kind = segs[2]
		}
		return kind + " " + segs[1] + "/" + strings.Join(segs[3:], "/")
	case (segs[0] == "devices" || segs[0] == "credentials") && len(segs) == 2:
		return segs[0] + " of tenant " + segs[1]
	case segs[0] == "devices" || segs[0] == "credentials":
		return singular[segs[0]] + " " + strings.Join(segs[1:], "/")
	}
	return p
}
