package console_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// A browser-less client of the console: what a forged or careless request
// gets (no chromium needed).

type client struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newClient(t *testing.T, base string) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (c *client) req(method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

var csrfRe = regexp.MustCompile(`data-csrf="([^"]+)"`)

func TestConsoleSessionRules(t *testing.T) {
	p := platform(t)
	c := newClient(t, p.AdminURL)

	// Not logged in: pages redirect to the login form, keeping the page.
	resp, _ := c.req("GET", "/t/acme/addresses?q=x", nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Ft%2Facme%2Faddresses%3Fq%3Dx" {
		t.Errorf("anonymous page: %s %q", resp.Status, resp.Header.Get("Location"))
	}
	// The API is still the API (JSON 401), not the console.
	resp, body := c.req("GET", "/api/tenants", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"unauthorized"`) {
		t.Errorf("/api/tenants: %s %s", resp.Status, body)
	}
	// A wrong password: 401 and the form again.
	resp, body = c.req("POST", "/login", url.Values{"user": {"admin"}, "password": {"nope"}}, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong user name or password") {
		t.Errorf("bad login: %s", resp.Status)
	}
	// An application user may not use the console.
	resp, body = c.req("POST", "/login", url.Values{"user": {"app@acme"}, "password": {"app-secret"}}, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "may not use the console") {
		t.Errorf("app login: %s", resp.Status)
	}
	// A login form posted from another site is refused.
	resp, _ = c.req("POST", "/login", url.Values{"user": {"admin"}, "password": {p.AdminPassword}}, map[string]string{"Origin": "https://evil.example"})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site login: %s", resp.Status)
	}
	// The next page stays on this site.
	resp, _ = c.req("POST", "/login", url.Values{"user": {"admin"}, "password": {p.AdminPassword}, "next": {"//evil.example/"}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("login: %s %q", resp.Status, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "throng_session" {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || len(cookie.Value) < 40 {
		t.Fatalf("session cookie %+v", cookie)
	}
	resp, body = c.req("GET", "/", nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("dashboard: %s", resp.Status)
	}
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no CSRF token on the page")
	}
	csrf := m[1]
	create := url.Values{"name": {"q1"}, "type": {"queue"}}
	// Without the token, or with another one: 403, nothing created.
	for _, tok := range []string{"", "forged"} {
		f := url.Values{"csrf": {tok}}
		for k, v := range create {
			f[k] = v
		}
		resp, _ = c.req("POST", "/t/acme/addresses", f, nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("csrf %q: %s", tok, resp.Status)
		}
	}
	if _, ok := p.Store.Address("acme", "q1"); ok {
		t.Fatal("created without a valid CSRF token")
	}
	// With it (as a form, or in the header htmx would send): created.
	create.Set("csrf", csrf)
	resp, _ = c.req("POST", "/t/acme/addresses", create, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create: %s", resp.Status)
	}
	if _, ok := p.Store.Address("acme", "q1"); !ok {
		t.Fatal("not created")
	}
	resp, _ = c.req("POST", "/t/acme/address/q1", url.Values{"action": {"delete"}}, map[string]string{"X-CSRF-Token": csrf})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete: %s", resp.Status)
	}
	// An API error keeps its status: an unknown address is 404.
	resp, body = c.req("GET", "/t/acme/address/nope", nil, nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `address &#34;nope&#34; not found`) {
		t.Errorf("unknown address: %s", resp.Status)
	}
	// Logout ends the session on the server: the old cookie is dead.
	resp, _ = c.req("POST", "/logout", url.Values{"csrf": {csrf}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %s", resp.Status)
	}
	old := newClient(t, p.AdminURL)
	u, _ := url.Parse(p.AdminURL)
	old.c.Jar.SetCookies(u, []*http.Cookie{{Name: "throng_session", Value: cookie.Value}})
	resp, _ = old.req("GET", "/", nil, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("old cookie after logout: %s", resp.Status)
	}
}
