package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// The parsers of the messaging API (docs/http-messaging.md): request
// paths, query parameters, and the headers that carry a published
// message's properties; and the JSON form of a received message. Each
// parser has a fuzz target (messaging_fuzz_test.go).

// apiPrefix starts every messaging API path.
const apiPrefix = "/api/v1/"

// apiOp is what a messaging API path names.
type apiOp int

const (
	opNone     apiOp = iota
	opMessages       // …/{name}/messages: publish (POST), stream (GET)
	opReceive        // …/{name}/messages/receive (POST)
	opLock           // …/{name}/messages/{token}: accept (DELETE)
	opRelease        // …/{name}/messages/{token}/release (POST)
	opReject         // …/{name}/messages/{token}/reject (POST)
	opRenew          // …/{name}/messages/{token}/renew (POST)
	opOpenAPI        // /api/v1/openapi.json (GET)
)

func (o apiOp) String() string {
	switch o {
	case opMessages:
		return "messages"
	case opReceive:
		return "receive"
	case opLock, opRelease, opReject, opRenew:
		return "settle"
	case opOpenAPI:
		return "openapi"
	}
	return "other"
}

// apiPath is a parsed messaging API path.
type apiPath struct {
	op    apiOp
	name  string // the address name (or filter), unescaped
	token string // the lock token of opLock … opRenew
}

// parseAPIPath parses an escaped request path under /api/v1/:
//
//	/api/v1/openapi.json
//	/api/v1/addresses/{name}/messages
//	/api/v1/addresses/{name}/messages/receive
//	/api/v1/addresses/{name}/messages/{token}
//	/api/v1/addresses/{name}/messages/{token}/{release|reject|renew}
//
// {name} is one or more path levels: an address name's '/' may be sent
// as is or escaped (%2F); each level is unescaped on its own. The path is
// read from its end, so a name may itself contain a "messages" level. ok
// is false for any other path (404).
// maxAPIName bounds an address name in a messaging API path (bytes,
// unescaped).
const maxAPIName = 4096

func parseAPIPath(escaped string) (apiPath, bool) {
	if escaped == apiPrefix+"openapi.json" {
		return apiPath{op: opOpenAPI}, true
	}
	// The name is bounded after unescaping (maxAPIName); the escaped path
	// may be up to three times longer (%XX per byte), so that a name
	// accepted once is accepted again in its canonical escaped form.
	rest, found := strings.CutPrefix(escaped, apiPrefix+"addresses/")
	if !found || len(rest) > 3*maxAPIName+128 {
		return apiPath{}, false
	}
	lv := strings.Split(rest, "/")
	n := len(lv)
	var p apiPath
	var nameLv []string
	switch {
	case n >= 2 && lv[n-1] == "messages":
		p.op, nameLv = opMessages, lv[:n-1]
	case n >= 3 && lv[n-2] == "messages" && lv[n-1] == "receive":
		p.op, nameLv = opReceive, lv[:n-2]
	case n >= 3 && lv[n-2] == "messages" && validToken(lv[n-1]):
		p.op, p.token, nameLv = opLock, lv[n-1], lv[:n-2]
	case n >= 4 && lv[n-3] == "messages" && validToken(lv[n-2]):
		switch lv[n-1] {
		case "release":
			p.op = opRelease
		case "reject":
			p.op = opReject
		case "renew":
			p.op = opRenew
		default:
			return apiPath{}, false
		}
		p.token, nameLv = lv[n-2], lv[:n-3]
	default:
		return apiPath{}, false
	}
	for i, s := range nameLv {
		u, err := url.PathUnescape(s)
		if err != nil {
			return apiPath{}, false
		}
		nameLv[i] = u
	}
	p.name = strings.Join(nameLv, "/")
	if p.name == "" || len(p.name) > maxAPIName {
		return apiPath{}, false
	}
	return p, true
}

// Lock tokens: "lk" and the base64url (unpadded) of 16 random bytes
// followed by the lock's first deadline (Unix milliseconds, big endian),
// which lets a node tell an expired lock (410) from one it never held
// (404) without remembering either.
const (
	tokenPrefix = "lk"
	tokenRandom = 16
	tokenLen    = len(tokenPrefix) + (tokenRandom+8)*4/3
)

// validToken reports whether s has the form of a lock token.
func validToken(s string) bool {
	if len(s) != tokenLen || !strings.HasPrefix(s, tokenPrefix) {
		return false
	}
	return validReqID(s[len(tokenPrefix):]) // the base64url alphabet
}

// newToken makes a lock token from random bytes and a deadline.
func newToken(random [tokenRandom]byte, deadline time.Time) string {
	var b [tokenRandom + 8]byte
	copy(b[:], random[:])
	binary.BigEndian.PutUint64(b[tokenRandom:], uint64(deadline.UnixMilli()))
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// tokenDeadline is the first deadline a token was issued with.
func tokenDeadline(tok string) (time.Time, bool) {
	if !validToken(tok) {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(tok[len(tokenPrefix):])
	if err != nil || len(b) != tokenRandom+8 {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(b[tokenRandom:]))), true
}

// receiveParams are the query parameters of a receive request.
type receiveParams struct {
	max    int           // messages at most (1…maxReceive; default 1)
	wait   time.Duration // how long to wait for the first (0…maxWait; default 0: what is there now)
	lock   time.Duration // lock duration (minLock…maxLock; default defaultLock)
	base64 bool          // bodies always base64 (encoding=base64)
}

// Bounds of the receive parameters.
const (
	maxReceive  = 100
	maxWait     = 60 * time.Second
	minLock     = time.Second
	maxLock     = 5 * time.Minute
	defaultLock = time.Minute
)

// parseDuration reads a duration parameter: a Go duration ("30s",
// "500ms") or whole seconds ("30").
func parseDuration(name, v string) (time.Duration, error) {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w: %s=%q: a duration (30s, 500ms) or whole seconds", ErrBadRequest, name, v)
	}
	return d, nil
}

// parseReceive parses a receive request's query. Unknown parameters are
// refused, so that a misspelt one is not silently ignored.
func parseReceive(q url.Values) (receiveParams, error) {
	p := receiveParams{max: 1, lock: defaultLock}
	for k, vs := range q {
		if len(vs) != 1 {
			return p, fmt.Errorf("%w: %s given %d times", ErrBadRequest, k, len(vs))
		}
		v := vs[0]
		switch k {
		case "max":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxReceive {
				return p, fmt.Errorf("%w: max=%q: 1 to %d", ErrBadRequest, v, maxReceive)
			}
			p.max = n
		case "wait":
			d, err := parseDuration(k, v)
			if err != nil {
				return p, err
			}
			if d > maxWait {
				return p, fmt.Errorf("%w: wait=%q: at most %v", ErrBadRequest, v, maxWait)
			}
			p.wait = d
		case "lock":
			d, err := parseLock(v)
			if err != nil {
				return p, err
			}
			p.lock = d
		case "encoding":
			switch v {
			case "auto":
			case "base64":
				p.base64 = true
			default:
				return p, fmt.Errorf("%w: encoding=%q: auto or base64", ErrBadRequest, v)
			}
		default:
			return p, fmt.Errorf("%w: unknown parameter %q", ErrBadRequest, k)
		}
	}
	return p, nil
}

// parseLock reads a lock duration (receive, renew).
func parseLock(v string) (time.Duration, error) {
	d, err := parseDuration("lock", v)
	if err != nil {
		return 0, err
	}
	if d < minLock || d > maxLock {
		return 0, fmt.Errorf("%w: lock=%q: %v to %v", ErrBadRequest, v, minLock, maxLock)
	}
	return d, nil
}

// Request headers of a publish that carry message properties
// (docs/http-messaging.md, "Properties"; the same names in the JSON of a
// received message, in camel case).
const (
	hdrMessageID     = "Message-Id"
	hdrCorrelationID = "Correlation-Id"
	hdrReplyTo       = "Reply-To"
	hdrSubject       = "Subject"
	hdrGroupID       = "Group-Id"
	hdrPriority      = "Priority"
	hdrTTL           = "Ttl" // milliseconds, as AMQP's header.ttl
	hdrDurable       = "Durable"
	hdrPropPrefix    = "Throng-Prop-"      // one application property (string), name lower-cased
	hdrProperties    = "Throng-Properties" // application properties as a JSON object (typed)
	maxPropName      = 256
)

// messageFromHeaders builds the message of a publish from its headers
// (the body is set by the caller). now is its creation time.
func messageFromHeaders(h http.Header, now time.Time) (*message.Message, error) {
	m := &message.Message{CreationTime: now, Durable: true}
	one := func(k string) (string, bool, error) {
		vs := h[k]
		switch len(vs) {
		case 0:
			return "", false, nil
		case 1:
		default:
			return "", false, fmt.Errorf("%w: header %s given %d times", ErrBadRequest, k, len(vs))
		}
		if !utf8.ValidString(vs[0]) {
			return "", false, fmt.Errorf("%w: header %s is not UTF-8", ErrBadRequest, k)
		}
		return vs[0], true, nil
	}
	strs := []struct {
		k string
		p *string
	}{
		{"Content-Type", &m.ContentType}, {"Content-Encoding", &m.ContentEncoding},
		{hdrReplyTo, &m.ReplyTo}, {hdrSubject, &m.Subject}, {hdrGroupID, &m.GroupID},
	}
	for _, s := range strs {
		v, _, err := one(s.k)
		if err != nil {
			return nil, err
		}
		*s.p = v
	}
	for _, id := range []struct {
		k string
		p *any
	}{{hdrMessageID, &m.MessageID}, {hdrCorrelationID, &m.CorrelationID}} {
		v, ok, err := one(id.k)
		if err != nil {
			return nil, err
		}
		if ok && v != "" {
			*id.p = v
		}
	}
	if v, ok, err := one(hdrPriority); err != nil {
		return nil, err
	} else if ok {
		n, err := strconv.ParseUint(v, 10, 8)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: 0 to 255", ErrBadRequest, hdrPriority, v)
		}
		m.Priority = uint8(n)
	}
	if v, ok, err := one(hdrTTL); err != nil {
		return nil, err
	} else if ok {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%w: %s %q: milliseconds, 1 to %d", ErrBadRequest, hdrTTL, v, uint32(1<<32-1))
		}
		m.TTL = time.Duration(n) * time.Millisecond
	}
	if v, ok, err := one(hdrDurable); err != nil {
		return nil, err
	} else if ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: true or false", ErrBadRequest, hdrDurable, v)
		}
		m.Durable = b
	}
	props := map[string]any{}
	for k := range h {
		name, ok := strings.CutPrefix(k, hdrPropPrefix)
		if !ok {
			continue
		}
		v, _, err := one(k)
		if err != nil {
			return nil, err
		}
		name = strings.ToLower(name)
		if name == "" || len(name) > maxPropName {
			return nil, fmt.Errorf("%w: header %s: property name of 1 to %d bytes", ErrBadRequest, k, maxPropName)
		}
		props[name] = v
	}
	if v, ok, err := one(hdrProperties); err != nil {
		return nil, err
	} else if ok {
		if err := jsonProperties(v, props); err != nil {
			return nil, err
		}
	}
	if len(props) > 0 {
		m.Properties = props
	}
	return m, nil
}

// jsonProperties adds the application properties of a Throng-Properties
// header: a JSON object whose values are strings, booleans, numbers
// (integers become int64, or uint64 above its range; others float64) or
// null.
func jsonProperties(v string, props map[string]any) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: header %s: %s", ErrBadRequest, hdrProperties, why)
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return bad("not a JSON object")
	}
	if obj == nil {
		return bad("not a JSON object")
	}
	if dec.More() {
		return bad("more than one JSON value")
	}
	for k, x := range obj {
		if k == "" || len(k) > maxPropName {
			return bad(fmt.Sprintf("property name of 1 to %d bytes", maxPropName))
		}
		switch x := x.(type) {
		case string, bool, nil:
			props[k] = x
		case json.Number:
			if i, err := x.Int64(); err == nil {
				props[k] = i
			} else if u, err := strconv.ParseUint(x.String(), 10, 64); err == nil {
				props[k] = u
			} else if f, err := x.Float64(); err == nil {
				props[k] = f
			} else {
				return bad(fmt.Sprintf("property %q: number out of range", k))
			}
		default:
			return bad(fmt.Sprintf("property %q: a string, number, boolean or null", k))
		}
	}
	return nil
}

// amqpBodyCT is the content type of a body that is the AMQP encoding of
// an amqp-value or amqp-sequence body (docs/mapping.md, as for MQTT).
const amqpBodyCT = "application/vnd.throng.amqp-body"

// apiMessage is a received message in JSON (receive answers, stream
// events). Ids that are not strings carry their type: "ulong" (decimal),
// "uuid" (canonical form) or "binary" (base64).
type apiMessage struct {
	LockToken          string         `json:"lockToken,omitempty"`
	LockedUntil        string         `json:"lockedUntil,omitempty"`
	Address            string         `json:"address"`
	DeliveryCount      uint64         `json:"deliveryCount,omitempty"`
	Sequence           uint64         `json:"sequence,omitempty"`
	MessageID          string         `json:"messageId,omitempty"`
	MessageIDType      string         `json:"messageIdType,omitempty"`
	CorrelationID      string         `json:"correlationId,omitempty"`
	CorrelationIDType  string         `json:"correlationIdType,omitempty"`
	UserID             string         `json:"userId,omitempty"`
	To                 string         `json:"to,omitempty"`
	Subject            string         `json:"subject,omitempty"`
	ReplyTo            string         `json:"replyTo,omitempty"`
	ContentType        string         `json:"contentType,omitempty"`
	ContentEncoding    string         `json:"contentEncoding,omitempty"`
	GroupID            string         `json:"groupId,omitempty"`
	CreationTime       string         `json:"creationTime,omitempty"`
	AbsoluteExpiryTime string         `json:"absoluteExpiryTime,omitempty"`
	Priority           uint8          `json:"priority,omitempty"`
	Durable            bool           `json:"durable"`
	Properties         map[string]any `json:"properties,omitempty"`
	Body               string         `json:"body"`
	BodyEncoding       string         `json:"bodyEncoding"` // "utf-8" or "base64"
}

// renderID is an id's JSON value and type ("" for a string).
func renderID(id any) (string, string) {
	switch x := id.(type) {
	case nil:
		return "", ""
	case string:
		return x, ""
	case uint64:
		return strconv.FormatUint(x, 10), "ulong"
	case [16]byte:
		h := hex.EncodeToString(x[:])
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], "uuid"
	case []byte:
		return base64.StdEncoding.EncodeToString(x), "binary"
	}
	return fmt.Sprint(id), ""
}

// jsonValue is an application property's value in JSON: binary as
// base64, a UUID in its canonical form, a float JSON cannot hold (NaN,
// ±Inf) as its text; the others as they are.
func jsonValue(v any) any {
	switch x := v.(type) {
	case []byte:
		return base64.StdEncoding.EncodeToString(x)
	case [16]byte:
		s, _ := renderID(x)
		return s
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return strconv.FormatFloat(float64(x), 'g', -1, 32)
		}
	}
	return v
}

const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// toAPIMessage renders a delivery; base64 forces a base64 body, else a
// body that is valid UTF-8 is sent as a string.
func toAPIMessage(d *router.Delivery, base64Body bool) apiMessage {
	m := d.Message
	am := apiMessage{
		Address: d.Address, DeliveryCount: d.Count, Sequence: d.Sequence,
		To: m.To, Subject: m.Subject, ReplyTo: m.ReplyTo, ContentType: m.ContentType,
		ContentEncoding: m.ContentEncoding, GroupID: m.GroupID, Priority: m.Priority, Durable: m.Durable,
	}
	am.MessageID, am.MessageIDType = renderID(m.MessageID)
	am.CorrelationID, am.CorrelationIDType = renderID(m.CorrelationID)
	if len(m.UserID) > 0 && utf8.Valid(m.UserID) {
		am.UserID = string(m.UserID)
	}
	if !m.CreationTime.IsZero() {
		am.CreationTime = m.CreationTime.UTC().Format(timeLayout)
	}
	if !m.Expiry.IsZero() {
		am.AbsoluteExpiryTime = m.Expiry.UTC().Format(timeLayout)
	}
	if len(m.Properties) > 0 {
		am.Properties = make(map[string]any, len(m.Properties))
		for k, v := range m.Properties {
			am.Properties[k] = jsonValue(v)
		}
	}
	switch m.BodyKind {
	case message.BodyData, message.BodyAMQPString:
	default:
		am.ContentType = amqpBodyCT
		base64Body = true
	}
	if !base64Body && utf8.Valid(m.Body) {
		am.Body, am.BodyEncoding = string(m.Body), "utf-8"
	} else {
		am.Body, am.BodyEncoding = base64.StdEncoding.EncodeToString(m.Body), "base64"
	}
	return am
}

// marshalAPI encodes v without escaping HTML characters (bodies are
// data, not markup) and without the encoder's trailing newline.
func marshalAPI(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the types above always encode
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
