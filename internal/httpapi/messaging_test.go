package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

func TestParseAPIPath(t *testing.T) {
	tok := newToken([tokenRandom]byte{1, 2, 3}, time.UnixMilli(1700000000000))
	cases := []struct {
		path string
		want apiPath
		ok   bool
	}{
		{"/api/v1/openapi.json", apiPath{op: opOpenAPI}, true},
		{"/api/v1/addresses/orders/messages", apiPath{op: opMessages, name: "orders"}, true},
		{"/api/v1/addresses/a/b/c/messages", apiPath{op: opMessages, name: "a/b/c"}, true},
		{"/api/v1/addresses/a%2Fb%2Fc/messages", apiPath{op: opMessages, name: "a/b/c"}, true},
		{"/api/v1/addresses/a%2Fb/c/messages", apiPath{op: opMessages, name: "a/b/c"}, true},
		{"/api/v1/addresses/sensors%2F%2B%2Ftemp/messages", apiPath{op: opMessages, name: "sensors/+/temp"}, true},
		{"/api/v1/addresses/t%3A%3Asub/messages/receive", apiPath{op: opReceive, name: "t::sub"}, true},
		{"/api/v1/addresses/t::sub/messages/receive", apiPath{op: opReceive, name: "t::sub"}, true},
		// A name may contain the levels the API uses: read from the end.
		{"/api/v1/addresses/x/messages/messages", apiPath{op: opMessages, name: "x/messages"}, true},
		{"/api/v1/addresses/x/messages/receive/messages", apiPath{op: opMessages, name: "x/messages/receive"}, true},
		{"/api/v1/addresses/messages/messages/receive", apiPath{op: opReceive, name: "messages"}, true},
		{"/api/v1/addresses/q/messages/" + tok, apiPath{op: opLock, name: "q", token: tok}, true},
		{"/api/v1/addresses/q/messages/" + tok + "/release", apiPath{op: opRelease, name: "q", token: tok}, true},
		{"/api/v1/addresses/q/messages/" + tok + "/reject", apiPath{op: opReject, name: "q", token: tok}, true},
		{"/api/v1/addresses/q/messages/" + tok + "/renew", apiPath{op: opRenew, name: "q", token: tok}, true},
		{"/api/v1/addresses/q/messages/" + tok + "/delete", apiPath{}, false},
		{"/api/v1/addresses/q/messages/not-a-token", apiPath{}, false},
		{"/api/v1/addresses/messages", apiPath{}, false}, // no name
		{"/api/v1/addresses//messages", apiPath{}, false},
		{"/api/v1/addresses/q", apiPath{}, false},
		{"/api/v1/addresses/q%zz/messages", apiPath{}, false},
		{"/api/v1/other", apiPath{}, false},
		{"/api/v2/addresses/q/messages", apiPath{}, false},
		{"/api/v1/addresses/" + strings.Repeat("a", 5000) + "/messages", apiPath{}, false},
	}
	for _, c := range cases {
		got, ok := parseAPIPath(c.path)
		if ok != c.ok || got != c.want {
			t.Errorf("%s: %+v %v, want %+v %v", c.path, got, ok, c.want, c.ok)
		}
	}
}

func TestToken(t *testing.T) {
	dl := time.UnixMilli(1700000000123)
	tok := newToken([tokenRandom]byte{0xff, 0xfe}, dl)
	if !validToken(tok) || len(tok) != tokenLen {
		t.Fatalf("token %q not valid", tok)
	}
	if got, ok := tokenDeadline(tok); !ok || !got.Equal(dl) {
		t.Fatalf("deadline %v %v", got, ok)
	}
	for _, bad := range []string{"", "lk", tok[1:], "xx" + tok[2:], tok[:len(tok)-1] + "!", tok + "A"} {
		if validToken(bad) {
			t.Errorf("%q valid", bad)
		}
	}
	if err := errLock(newToken([tokenRandom]byte{}, time.Now().Add(-time.Second)), time.Now()); !strings.Contains(err.Error(), string(codeLockExpired)) {
		t.Errorf("past deadline: %v", err)
	}
	if err := errLock(newToken([tokenRandom]byte{}, time.Now().Add(time.Minute)), time.Now()); !strings.Contains(err.Error(), string(codeLockNotFound)) {
		t.Errorf("future deadline: %v", err)
	}
}

func TestParseReceive(t *testing.T) {
	ok := map[string]receiveParams{
		"":                        {max: 1, lock: defaultLock},
		"max=10&wait=30s&lock=2m": {max: 10, wait: 30 * time.Second, lock: 2 * time.Minute},
		"wait=5&lock=90":          {max: 1, wait: 5 * time.Second, lock: 90 * time.Second},
		"wait=500ms":              {max: 1, wait: 500 * time.Millisecond, lock: defaultLock},
		"encoding=base64":         {max: 1, lock: defaultLock, base64: true},
		"encoding=auto&max=100":   {max: 100, lock: defaultLock},
	}
	for q, want := range ok {
		v, _ := url.ParseQuery(q)
		got, err := parseReceive(v)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", q, got, err, want)
		}
	}
	for _, q := range []string{"max=0", "max=101", "max=x", "wait=-1s", "wait=61s", "wait=x", "lock=0", "lock=500ms",
		"lock=301s", "encoding=hex", "max=1&max=2", "other=1"} {
		v, _ := url.ParseQuery(q)
		if _, err := parseReceive(v); err == nil {
			t.Errorf("%q accepted", q)
		}
	}
}

func TestMessageFromHeaders(t *testing.T) {
	now := time.Unix(1700000000, 0)
	h := http.Header{}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Encoding", "gzip")
	h.Set("Message-Id", "m1")
	h.Set("Correlation-Id", "c1")
	h.Set("Reply-To", "replies/x")
	h.Set("Subject", "s")
	h.Set("Group-Id", "g")
	h.Set("Priority", "9")
	h.Set("Ttl", "1500")
	h.Set("Durable", "false")
	h.Set("Throng-Prop-Colour", "red")
	h.Set("Throng-Prop-device_id", "d1")
	h.Set("Throng-Properties", `{"Count":3,"big":18446744073709551615,"f":1.5,"b":true,"n":null,"colour":"blue"}`)
	m, err := messageFromHeaders(h, now)
	if err != nil {
		t.Fatal(err)
	}
	want := &message.Message{
		ContentType: "application/json; charset=utf-8", ContentEncoding: "gzip", MessageID: "m1", CorrelationID: "c1",
		ReplyTo: "replies/x", Subject: "s", GroupID: "g", Priority: 9, TTL: 1500 * time.Millisecond, CreationTime: now,
		Properties: map[string]any{"device_id": "d1", "Count": int64(3), "big": uint64(18446744073709551615), "f": 1.5,
			"b": true, "n": nil, "colour": "blue"}, // Throng-Properties after Throng-Prop-*
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got  %+v\nwant %+v", m, want)
	}
	m, err = messageFromHeaders(http.Header{}, now)
	if err != nil || !m.Durable || m.Properties != nil || m.MessageID != nil {
		t.Fatalf("no headers: %+v %v", m, err)
	}
	bad := []http.Header{
		{"Priority": {"256"}}, {"Priority": {"x"}}, {"Ttl": {"0"}}, {"Ttl": {"1.5"}}, {"Ttl": {"4294967296"}},
		{"Durable": {"yes please"}}, {"Message-Id": {"a", "b"}}, {"Subject": {"\xff"}},
		{"Throng-Prop-": {"x"}}, {"Throng-Prop-A": {"1", "2"}},
		{"Throng-Properties": {`[1]`}}, {"Throng-Properties": {`null`}}, {"Throng-Properties": {`{"a":{}}`}},
		{"Throng-Properties": {`{"a":[1]}`}}, {"Throng-Properties": {`{"a":1} {}`}}, {"Throng-Properties": {`{"":1}`}},
		{"Throng-Properties": {`{"a":1e999}`}}, {"Throng-Properties": {`{`}},
	}
	for _, h := range bad {
		if _, err := messageFromHeaders(h, now); err == nil {
			t.Errorf("%v accepted", h)
		}
	}
}

func TestToAPIMessage(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 6e6, time.UTC)
	d := &router.Delivery{Address: "a/b", Count: 2, Sequence: 7, Message: &message.Message{
		MessageID: uint64(42), CorrelationID: []byte{0, 1}, UserID: []byte("alice"), Expiry: exp, Durable: true,
		Properties: map[string]any{"bin": []byte("hi"), "u": [16]byte{0x12, 0x34}, "i": int32(-1)},
		Body:       []byte("héllo"),
	}}
	got := toAPIMessage(d, false)
	if got.MessageID != "42" || got.MessageIDType != "ulong" || got.CorrelationID != "AAE=" || got.CorrelationIDType != "binary" ||
		got.UserID != "alice" || got.AbsoluteExpiryTime != "2030-01-02T03:04:05.006Z" || got.Body != "héllo" || got.BodyEncoding != "utf-8" ||
		got.Properties["bin"] != "aGk=" || got.Properties["u"] != "12340000-0000-0000-0000-000000000000" || got.Properties["i"] != int32(-1) {
		t.Fatalf("%+v", got)
	}
	if got := toAPIMessage(d, true); got.Body != "aMOpbGxv" || got.BodyEncoding != "base64" {
		t.Fatalf("base64: %+v", got)
	}
	d.Message = &message.Message{Body: []byte{0xff}, BodyKind: message.BodyData}
	if got := toAPIMessage(d, false); got.BodyEncoding != "base64" || got.Body != "/w==" {
		t.Fatalf("binary body: %+v", got)
	}
	d.Message = &message.Message{Body: []byte{0xa1, 1, 'x'}, BodyKind: message.BodyAMQPValue, ContentType: "text/plain"}
	if got := toAPIMessage(d, false); got.BodyEncoding != "base64" || got.ContentType != amqpBodyCT {
		t.Fatalf("amqp-value body: %+v", got)
	}
	// No HTML escaping, one line.
	b := marshalAPI(toAPIMessage(&router.Delivery{Message: &message.Message{Body: []byte("<a>\n&")}}, false))
	if !strings.Contains(string(b), `"body":"<a>\n&"`) || strings.Contains(string(b), "\n") {
		t.Fatalf("%s", b)
	}
}

// TestOpenAPI: the document describes every operation the server routes
// and every error code of the table, and nothing else.
func TestOpenAPI(t *testing.T) {
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas struct {
				Error struct {
					Properties struct {
						Error struct {
							Properties struct {
								Code struct {
									Enum []string `json:"enum"`
								} `json:"code"`
							} `json:"properties"`
						} `json:"error"`
					} `json:"properties"`
				} `json:"Error"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapiDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	paths := map[apiOp]string{
		opOpenAPI:  "/api/v1/openapi.json",
		opMessages: "/api/v1/addresses/{name}/messages",
		opReceive:  "/api/v1/addresses/{name}/messages/receive",
		opLock:     "/api/v1/addresses/{name}/messages/{token}",
		opRelease:  "/api/v1/addresses/{name}/messages/{token}/release",
		opReject:   "/api/v1/addresses/{name}/messages/{token}/reject",
		opRenew:    "/api/v1/addresses/{name}/messages/{token}/renew",
	}
	described := 0
	for _, ops := range doc.Paths {
		for m := range ops {
			if m != "parameters" {
				described++
			}
		}
	}
	routed := 0
	for op, allow := range apiMethods {
		for _, m := range strings.Split(allow, ", ") {
			if m == http.MethodHead {
				continue
			}
			routed++
			if _, ok := doc.Paths[paths[op]][strings.ToLower(m)]; !ok {
				t.Errorf("openapi.json lacks %s %s", m, paths[op])
			}
		}
	}
	if described != routed {
		t.Errorf("openapi.json describes %d operations, the server routes %d", described, routed)
	}
	var codes []string
	for c := range apiErrors {
		codes = append(codes, string(c))
	}
	enum := doc.Components.Schemas.Error.Properties.Error.Properties.Code.Enum
	sort.Strings(codes)
	sort.Strings(enum)
	if !reflect.DeepEqual(codes, enum) {
		t.Errorf("error codes: table %v, openapi.json %v", codes, enum)
	}
	for c := range apiErrors {
		if !strings.Contains(string(openapiDoc), string(c)+":") && c != codeInternal {
			t.Errorf("openapi.json describes no response with code %s", c)
		}
	}
}

func TestClassifyAPI(t *testing.T) {
	cases := map[error]int{
		ErrNoCredentials:        401,
		ErrTooLarge:             413,
		router.ErrNotFound:      404,
		router.ErrNoConsumers:   503,
		router.ErrLimitExceeded: 429,
		router.ErrInvalid:       400,
		&outcomeError{router.Outcome{Kind: router.Rejected}}: 422,
		&outcomeError{router.Outcome{Kind: router.Released}}: 503,
		newAPIError(codeLockExpired, "x"):                    410,
		newAPIError(codeWrongType, "x"):                      409,
	}
	for err, want := range cases {
		code, _ := classifyAPI(err)
		if got := apiErrors[code].status; got != want {
			t.Errorf("%v: %d (%s), want %d", err, got, code, want)
		}
	}
}
