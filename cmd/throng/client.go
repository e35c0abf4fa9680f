package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/admin"
)

// DefaultServer is the admin API the CLI talks to by default.
const DefaultServer = "http://localhost:8161"

// client talks to the admin REST API.
type client struct {
	server, user, password string
	output                 string // "text" or "json"
	hc                     *http.Client
}

// clientFlags registers the connection and output flags of an admin
// command; the defaults come from the environment. pwFlag names the flag of
// the administrator's password ("password" unless the command uses that
// name for something else).
func (c *cli) clientFlags(fs *flag.FlagSet, pwFlag string) *client {
	cl := &client{hc: &http.Client{Timeout: time.Minute}}
	server := c.env.get("THRONG_SERVER")
	if server == "" {
		server = DefaultServer
	}
	user := c.env.get("THRONG_USER")
	if user == "" {
		user = "admin"
	}
	fs.StringVar(&cl.server, "server", server, "admin API base URL (env THRONG_SERVER)")
	fs.StringVar(&cl.user, "user", user, "user name, 'admin' or 'name@tenant' (env THRONG_USER)")
	secretVar(fs, &cl.password, pwFlag, c.env.get("THRONG_PASSWORD"), "`password` of --user (env THRONG_PASSWORD)")
	fs.StringVar(&cl.output, "o", "text", "output format: text or json")
	return cl
}

func (cl *client) check() error {
	if cl.output != "text" && cl.output != "json" {
		return usagef("-o %q: want text or json", cl.output)
	}
	u, err := url.Parse(cl.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--server %q: want a URL such as %s", cl.server, DefaultServer)
	}
	cl.server = strings.TrimRight(cl.server, "/")
	return nil
}

// apiError is an error answered by the server.
type apiError struct {
	Status  int
	Code    admin.Code
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (%s)", e.Message, e.Code) }

// honoCode names a /v1 error status with the admin API's codes.
func honoCode(status int) admin.Code {
	switch status {
	case http.StatusBadRequest:
		return admin.CodeInvalid
	case http.StatusUnauthorized:
		return admin.CodeUnauthorized
	case http.StatusForbidden:
		return admin.CodeForbidden
	case http.StatusNotFound:
		return admin.CodeNotFound
	case http.StatusConflict:
		return admin.CodeExists
	case http.StatusPreconditionFailed:
		return "precondition_failed"
	case http.StatusRequestEntityTooLarge:
		return admin.CodeBodyTooLarge
	}
	return "http"
}

// seg escapes one path segment; address names with '/' become one segment.
// "." and ".." are escaped too, so that they are not taken as path steps.
func seg(s string) string {
	e := url.PathEscape(s)
	if strings.Trim(e, ".") == "" {
		e = strings.ReplaceAll(e, ".", "%2E")
	}
	return e
}

// call sends a request with in as JSON (if not nil) and decodes the answer
// into out (if not nil); it returns the raw answer body too.
func (cl *client) call(ctx context.Context, method, path string, in, out any) ([]byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, cl.server+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if cl.password != "" || cl.user != "admin" {
		req.SetBasicAuth(cl.user, cl.password)
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the admin API at %s: %w", cl.server, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var eb admin.ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			ae := &apiError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
			if resp.StatusCode == http.StatusUnauthorized && cl.password == "" {
				ae.Message += "; give --password or set THRONG_PASSWORD"
			}
			return nil, ae
		}
		// The /v1 (Hono) API answers {"error": "..."}: the code follows
		// from the status.
		var he admin.HonoError
		if json.Unmarshal(raw, &he) == nil && he.Error != "" {
			ae := &apiError{Status: resp.StatusCode, Code: honoCode(resp.StatusCode), Message: he.Error}
			if resp.StatusCode == http.StatusUnauthorized && cl.password == "" {
				ae.Message += "; give --password or set THRONG_PASSWORD"
			}
			return nil, ae
		}
		return nil, &apiError{Status: resp.StatusCode, Code: "http", Message: strings.TrimSpace(resp.Status + " " + string(raw))}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("unexpected answer from %s: %w", cl.server, err)
		}
	}
	return raw, nil
}
