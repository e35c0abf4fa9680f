package httpapi

import (
	"net/http"
	"net/url"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/throngmq/throng/internal/message"
)

// Fuzz targets of the messaging API's parsers; seed corpora in
// testdata/fuzz/<target>.

// FuzzParseAPIPath: no path panics parseAPIPath, and what it accepts
// names an address (non-empty) and a token of the right form, and parses
// the same again from its canonical escaped form.
func FuzzParseAPIPath(f *testing.F) {
	tok := newToken([tokenRandom]byte{9}, time.UnixMilli(1))
	for _, s := range []string{"/api/v1/openapi.json", "/api/v1/addresses/q/messages", "/api/v1/addresses/a/b/messages/receive",
		"/api/v1/addresses/a%2Fb/messages/" + tok, "/api/v1/addresses/x/messages/" + tok + "/renew",
		"/api/v1/addresses/x/messages/messages", "/api/v1/addresses/%2B%2F%23/messages", "/api/v1/addresses//messages"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		p, ok := parseAPIPath(path)
		if !ok {
			return
		}
		if p.op == opOpenAPI {
			return
		}
		if p.name == "" {
			t.Fatalf("%q: empty name", path)
		}
		if (p.token != "") != (p.op >= opLock && p.op <= opRenew) || (p.token != "" && !validToken(p.token)) {
			t.Fatalf("%q: %+v", path, p)
		}
		suffix := map[apiOp]string{opMessages: "/messages", opReceive: "/messages/receive", opLock: "/messages/" + p.token,
			opRelease: "/messages/" + p.token + "/release", opReject: "/messages/" + p.token + "/reject",
			opRenew: "/messages/" + p.token + "/renew"}[p.op]
		again, ok := parseAPIPath(apiPrefix + "addresses/" + url.PathEscape(p.name) + suffix)
		if !ok || again != p {
			t.Fatalf("%q: %+v, again %+v %v", path, p, again, ok)
		}
	})
}

// FuzzParseReceive: no query panics parseReceive, and what it accepts is
// within the bounds.
func FuzzParseReceive(f *testing.F) {
	for _, s := range []string{"", "max=10&wait=30s&lock=2m", "wait=5", "encoding=base64", "max=0", "lock=1h", "wait=1e9s", "max=%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		p, err := parseReceive(v)
		if err != nil {
			return
		}
		if p.max < 1 || p.max > maxReceive || p.wait < 0 || p.wait > maxWait || p.lock < minLock || p.lock > maxLock {
			t.Fatalf("%q: out of bounds %+v", q, p)
		}
	})
}

// FuzzMessageFromHeaders: no header set panics messageFromHeaders (a
// name and a value each for a message property, an application property
// and the JSON properties), and an accepted message has UTF-8 strings and
// encodes and decodes as the engine stores it.
func FuzzMessageFromHeaders(f *testing.F) {
	f.Add("Message-Id", "m1", "Throng-Prop-Colour", "red", `{"n":1,"b":true,"s":"x","z":null}`)
	f.Add("Ttl", "1500", "Throng-Prop-A", "", `{}`)
	f.Add("Priority", "300", "X-Other", "v", `[]`)
	f.Add("Durable", "false", "Throng-Prop-", "x", `{"big":18446744073709551616}`)
	f.Add("Correlation-Id", "\xff", "Throng-Prop-Ü", "ü", `{"a":1e400}`)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, props string) {
		h := http.Header{}
		h.Add(http.CanonicalHeaderKey(k1), v1)
		h.Add(http.CanonicalHeaderKey(k2), v2)
		h.Add(hdrProperties, props)
		m, err := messageFromHeaders(h, time.Unix(1, 0))
		if err != nil {
			return
		}
		for _, s := range []string{m.ContentType, m.ReplyTo, m.Subject, m.GroupID} {
			if !utf8.ValidString(s) {
				t.Fatalf("%v: not UTF-8: %q", h, s)
			}
		}
		for k := range m.Properties {
			if k == "" || len(k) > maxPropName {
				t.Fatalf("%v: property name %q", h, k)
			}
		}
		m.Body = []byte("b")
		if _, err := message.Unmarshal(m.Marshal()); err != nil {
			t.Fatalf("%v: %+v does not round-trip: %v", h, m, err)
		}
	})
}
