package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/throngmq/throng/internal/admin"
)

// apiError is an admin API answer of 400 or more: the console shows its
// message.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return http.StatusText(e.Status)
	}
	return e.Message
}

// recorder is an in-memory http.ResponseWriter for in-process API calls.
type recorder struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

// call makes an admin API request as the session's user: in-process,
// through the same handler (and the same access rules and audit log) as
// a request with the user's credentials. in, if not nil, is sent as
// JSON; a 2xx answer is decoded into out if not nil.
func (s *Server) call(r *http.Request, method, path string, in, out any) error {
	sess := sessionOf(r)
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(admin.WithPrincipal(r.Context(), sess.p), method, path, body)
	if err != nil {
		return err
	}
	req.RemoteAddr = r.RemoteAddr
	req.Host = r.Host
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// The audit log names the user from the Basic user name: no password
	// is sent or needed (the principal is in the context).
	req.SetBasicAuth(sess.p.User+"@"+sess.p.Tenant, "")
	rec := &recorder{h: http.Header{}}
	s.cfg.API.ServeHTTP(rec, req)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	if rec.code >= 400 {
		e := &apiError{Status: rec.code}
		var m struct {
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(rec.body.Bytes(), &m) == nil && len(m.Error) > 0 {
			var full struct{ Code, Message string }
			var msg string
			if json.Unmarshal(m.Error, &full) == nil {
				e.Code, e.Message = full.Code, full.Message
			} else if json.Unmarshal(m.Error, &msg) == nil { // Hono's shape under /v1
				e.Message = msg
			}
		}
		if e.Message == "" {
			e.Message = fmt.Sprintf("%s %s: %d %s", method, path, rec.code, http.StatusText(rec.code))
		}
		return e
	}
	if out != nil && rec.body.Len() > 0 {
		return json.Unmarshal(rec.body.Bytes(), out)
	}
	return nil
}

// notFound reports whether err is the API's 404.
func notFound(err error) bool {
	e, ok := err.(*apiError)
	return ok && e.Status == http.StatusNotFound
}

// status of an error for the page: the API's, or 500.
func statusOf(err error) int {
	if e, ok := err.(*apiError); ok {
		return e.Status
	}
	return http.StatusInternalServerError
}

// esc escapes one path segment; an address name keeps its '/'s escaped
// too (the API unescapes {name...}).
func esc(s string) string { return url.PathEscape(s) }

// addrPath escapes an address name for a console or API path, keeping
// '/' readable (both routes take the rest of the path as the name).
func addrPath(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}
