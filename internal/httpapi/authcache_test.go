package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/testkit"
)

// liveBound is docs/security.md's bound for a change to apply to live
// connections, counted from the admin call's return.
const liveBound = time.Second

// TestCachedPrincipalFollowsChanges: a kept-alive connection reuses the
// principal of its Authorization header (AuthCacheTTL, 10 s), yet a
// changed password, a disabled device and a tenant's disabled hono-http
// adapter are refused on that same connection within liveBound — well
// before the cache period — and a device enabled again is accepted.
func TestCachedPrincipalFollowsChanges(t *testing.T) {
	p := testkit.Start(t)
	v1 := func(method, path string, body any, status int) {
		t.Helper()
		b, _ := json.Marshal(body)
		resp := p.Do(t, method, path, bytes.NewReader(b))
		defer resp.Body.Close()
		if resp.StatusCode != status {
			msg, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, status, msg)
		}
	}
	v1("POST", "/v1/tenants/iot", map[string]any{}, 201)
	v1("POST", "/v1/devices/iot/dev1", map[string]any{}, 201)
	password := func(pw string) {
		v1("PUT", "/v1/credentials/iot/dev1", []any{map[string]any{"type": "hashed-password", "auth-id": "sensor1",
			"secrets": []any{map[string]any{"pwd-plain": pw}}}}, 204)
	}
	password("secret1")

	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	n := 0
	post := func(pw string) int {
		t.Helper()
		r, _ := http.NewRequest("POST", "http://"+p.HTTPAddr+"/telemetry", strings.NewReader(`{"temp":1}`))
		r.SetBasicAuth("sensor1@iot", pw)
		r.Header.Set("Content-Type", "application/json")
		reused := false
		r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused },
		}))
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// Every request but the first on the one connection: else the
		// cache would not be what is tested.
		if n++; n > 1 && !reused {
			t.Fatalf("request %d: a new connection", n)
		}
		return resp.StatusCode
	}
	// until posts with pw until the answer is not 202 and returns that
	// answer; a request sent more than liveBound after the change (the
	// admin call has returned) must not be accepted. (The refusal itself
	// may take longer: a wrong password's hash check, slow under -race.)
	until := func(what, pw string) int {
		t.Helper()
		start := time.Now()
		for {
			sent := time.Since(start)
			st := post(pw)
			if st != http.StatusAccepted {
				t.Logf("%s: %d for a request sent %v after the change", what, st, sent)
				return st
			}
			if sent > liveBound {
				t.Fatalf("%s: a request sent %v after the change was accepted (the cached principal)", what, sent)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	for i := 0; i < 3; i++ {
		if st := post("secret1"); st != http.StatusAccepted {
			t.Fatalf("post %d: %d", i, st)
		}
	}

	password("secret2")
	if st := until("old password after the change", "secret1"); st != http.StatusUnauthorized {
		t.Fatalf("old password: %d, want 401", st)
	}
	if st := post("secret2"); st != http.StatusAccepted {
		t.Fatalf("new password: %d", st)
	}
	if st := post("secret2"); st != http.StatusAccepted {
		t.Fatalf("new password, again: %d", st)
	}

	v1("PUT", "/v1/devices/iot/dev1", map[string]any{"enabled": false}, 204)
	if st := until("disabled device", "secret2"); st != http.StatusUnauthorized && st != http.StatusForbidden && st != http.StatusNotFound {
		t.Fatalf("disabled device: %d", st)
	}
	v1("PUT", "/v1/devices/iot/dev1", map[string]any{"enabled": true}, 204)
	start := time.Now()
	for {
		sent := time.Since(start)
		st := post("secret2")
		if st == http.StatusAccepted {
			break
		}
		if sent > liveBound {
			t.Fatalf("enabled again: %d for a request sent %v after the change", st, sent)
		}
		time.Sleep(10 * time.Millisecond)
	}

	v1("PUT", "/v1/tenants/iot", map[string]any{"adapters": []any{map[string]any{"type": "hono-http", "enabled": false}}}, 204)
	if st := until("hono-http adapter disabled", "secret2"); st != http.StatusForbidden {
		t.Fatalf("adapter disabled: %d, want 403", st)
	}
}
