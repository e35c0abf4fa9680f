// Package audit is throng's audit log: who logged in, who was refused,
// who was denied what, and who changed what through the admin API — one
// structured record per event, apart from the diagnostic log
// (docs/security.md, "Audit log").
//
// Front-ends report events with Record on a *Log they are given; a nil
// *Log records nothing, so a front-end built without one (tests,
// embedders) needs no check. Records are rate-limited per source and
// reason with a token bucket: a password-guessing storm from one address
// writes a few records, then one "audit events suppressed" summary with
// the count, instead of one line per attempt.
//
// The package depends on the standard library only: front-ends and the
// admin API import it, it imports none of them.
package audit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is what an event is about.
type Kind string

// The kinds of event.
const (
	// Login is a successful authentication of a connection (or of an
	// HTTP device's credentials, once per cache period).
	Login Kind = "login"
	// LoginFailed is a refused authentication: bad credentials, a
	// disabled device or tenant, an unavailable registry, anonymous
	// access refused.
	LoginFailed Kind = "login_failed"
	// Denied is an authenticated principal refused an action: a publish,
	// subscription or link to an address it has no permission for, an
	// admin request its role does not allow.
	Denied Kind = "denied"
	// AdminChange is a request through the admin API that changes
	// something (any method but GET and HEAD), whatever its outcome.
	AdminChange Kind = "admin"
)

// Protocols, as events name them.
const (
	MQTT  = "mqtt"
	AMQP  = "amqp"
	HTTP  = "http"
	Admin = "admin"
)

// Event is one audited event. Only Kind is required; empty fields are
// left out of the record. No field may hold a secret: events carry user
// names, never passwords, tokens or keys.
type Event struct {
	Kind     Kind
	Protocol string // MQTT, AMQP, HTTP or Admin
	Remote   string // the client's address (host:port)
	Tenant   string
	// User is the user name, or a device's auth-id: the authenticated
	// one for Login and Denied, the one claimed for LoginFailed.
	User      string
	Device    string // a device principal's device id
	ClientID  string // MQTT client identifier, AMQP container id
	Mechanism string // how the client authenticated: PLAIN, SCRAM-SHA-256, certificate, password, anonymous
	// Reason is a short stable code (bad_credentials, not_authorized,
	// unavailable, ...): with the source it keys the rate limit.
	Reason string
	Detail string // free text, e.g. the error; never a secret
	// Resource is what a Denied or AdminChange event concerns: an
	// address ("orders/eu"), or for the admin API "tenant acme",
	// "address acme/orders", "device acme/d1".
	Resource string
	Action   string // Denied: send, receive, manage, or the admin scope
	Method   string // admin API: the HTTP method
	Path     string // admin API: the request path
	Status   int    // admin API: the answer's HTTP status
}

// Limit is a token bucket: Burst records at once, then one every Every.
type Limit struct {
	Burst int
	Every time.Duration
}

// DefaultLimits are the rate limits per kind and key (source and reason).
var DefaultLimits = map[Kind]Limit{
	Login:       {Burst: 20, Every: 500 * time.Millisecond},
	LoginFailed: {Burst: 10, Every: time.Second},
	Denied:      {Burst: 10, Every: time.Second},
	AdminChange: {Burst: 100, Every: 50 * time.Millisecond},
}

// Options tune a Log; zero values take the defaults.
type Options struct {
	// Limits replaces DefaultLimits for the kinds it names.
	Limits map[Kind]Limit
	// SummaryEvery is how often the counts of suppressed records are
	// written (default 10 s); Close writes the rest.
	SummaryEvery time.Duration
	// MaxKeys bounds the rate-limit keys remembered (default 10,000);
	// events of further keys share one bucket per kind, source "*".
	MaxKeys int
	// Now is the clock (tests).
	Now func() time.Time
}

// Log writes audit records. Its methods are safe for concurrent use; a
// nil *Log discards everything.
type Log struct {
	h       slog.Handler
	limits  map[Kind]Limit
	maxKeys int
	now     func() time.Time
	closer  io.Closer // the file Open opened, or nil

	mu      sync.Mutex
	buckets map[bucketKey]*bucket // guarded by mu
	closed  bool                  // guarded by mu

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	tap atomic.Pointer[func(Event)] // SetTap
}

// SetTap sets a function that sees every event Record is given, before
// the rate limit (per-tenant metrics and the anomaly finder count them,
// internal/metrics). It must be quick.
func (l *Log) SetTap(f func(Event)) {
	if l != nil {
		l.tap.Store(&f)
	}
}

type bucketKey struct {
	kind           Kind
	source, reason string
}

type bucket struct {
	tokens     float64
	last       time.Time // last refill
	suppressed int
	first      time.Time // first suppressed record since the last summary
	protocol   string    // of the last suppressed record
}

// New returns a Log writing to h. Call Close to stop its summary
// goroutine and write the last summaries.
func New(h slog.Handler, o Options) *Log {
	l := &Log{
		h:       h,
		limits:  map[Kind]Limit{},
		maxKeys: o.MaxKeys,
		now:     o.Now,
		buckets: map[bucketKey]*bucket{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	for k, v := range DefaultLimits {
		l.limits[k] = v
	}
	for k, v := range o.Limits {
		l.limits[k] = v
	}
	if l.maxKeys <= 0 {
		l.maxKeys = 10000
	}
	if l.now == nil {
		l.now = time.Now
	}
	every := o.SummaryEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	go l.run(every)
	return l
}

// Open returns the Log a node's log.audit setting names: "off" (or
// empty) gives nil, which records nothing; "stderr" writes to stderr in
// the diagnostic log's format (text or json), whatever its level; any
// other value is a file, opened for appending (created with mode 0600),
// that gets JSON lines.
func Open(dest, format string, stderr io.Writer, o Options) (*Log, error) {
	switch dest {
	case "", "off":
		return nil, nil
	case "stderr":
		var h slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
		if format == "json" {
			h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
		}
		return New(h.WithAttrs([]slog.Attr{slog.String("component", "audit")}), o), nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	h := slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})
	l := New(h.WithAttrs([]slog.Attr{slog.String("component", "audit")}), o)
	l.closer = f
	return l, nil
}

// Source is the part of a remote address that rate limits count by: the
// host without the port.
func Source(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// Record writes the event, unless its key (kind, source, reason) has used
// up its budget: then it is counted in the next summary instead. The
// source is the remote host, or for admin changes the user.
func (l *Log) Record(e Event) {
	if l == nil {
		return
	}
	if f := l.tap.Load(); f != nil && *f != nil {
		(*f)(e)
	}
	k := bucketKey{kind: e.Kind, source: Source(e.Remote), reason: e.Reason}
	if e.Kind == AdminChange {
		// One administrator's changes share a budget wherever they come from.
		k.source, k.reason = e.User+"@"+e.Tenant, ""
	}
	now := l.now()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= l.maxKeys {
			k.source = "*"
			b = l.buckets[k]
		}
		if b == nil {
			b = &bucket{tokens: float64(l.limit(k.kind).Burst), last: now}
			l.buckets[k] = b
		}
	}
	l.refill(k.kind, b, now)
	if b.tokens < 1 {
		if b.suppressed == 0 {
			b.first = now
		}
		b.suppressed++
		b.protocol = e.Protocol
		l.mu.Unlock()
		return
	}
	b.tokens--
	var sum *summary
	if b.suppressed > 0 {
		sum = &summary{k, *b}
		b.suppressed = 0
	}
	l.mu.Unlock()
	if sum != nil {
		l.writeSummary(now, sum)
	}
	l.write(now, e)
}

func (l *Log) limit(k Kind) Limit {
	lim, ok := l.limits[k]
	if !ok || lim.Burst <= 0 {
		lim = Limit{Burst: 10, Every: time.Second}
	}
	return lim
}

// refill adds the tokens earned since the bucket's last refill.
func (l *Log) refill(k Kind, b *bucket, now time.Time) {
	lim := l.limit(k)
	if lim.Every <= 0 {
		b.tokens = float64(lim.Burst)
		b.last = now
		return
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(lim.Burst), b.tokens+float64(d)/float64(lim.Every))
		b.last = now
	}
}

type summary struct {
	k bucketKey
	b bucket
}

// run writes summaries every interval and forgets keys whose buckets
// are full again, so that the map holds only recent sources.
func (l *Log) run(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.flush(false)
		}
	}
}

// flush writes a summary for every key with suppressed records; with
// final, the Log is closing.
func (l *Log) flush(final bool) {
	now := l.now()
	var sums []summary
	l.mu.Lock()
	for k, b := range l.buckets {
		l.refill(k.kind, b, now)
		if b.suppressed > 0 {
			sums = append(sums, summary{k, *b})
			b.suppressed = 0
			continue
		}
		if b.tokens >= float64(l.limit(k.kind).Burst) {
			delete(l.buckets, k)
		}
	}
	if final {
		l.closed = true
	}
	l.mu.Unlock()
	for i := range sums {
		l.writeSummary(now, &sums[i])
	}
}

// Close writes the remaining summaries, stops the summary goroutine and
// closes the file Open opened. Events recorded afterwards are dropped.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	var err error
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.done
		l.flush(true)
		if l.closer != nil {
			err = l.closer.Close()
		}
	})
	return err
}

var messages = map[Kind]string{
	Login:       "login",
	LoginFailed: "login refused",
	Denied:      "permission denied",
	AdminChange: "admin request",
}

func (l *Log) write(now time.Time, e Event) {
	level := slog.LevelInfo
	if e.Kind == LoginFailed || e.Kind == Denied || (e.Kind == AdminChange && e.Status >= 400) {
		level = slog.LevelWarn
	}
	msg, ok := messages[e.Kind]
	if !ok {
		msg = string(e.Kind)
	}
	r := slog.NewRecord(now, level, msg, 0)
	r.AddAttrs(slog.String("event", string(e.Kind)))
	add := func(k, v string) {
		if v != "" {
			r.AddAttrs(slog.String(k, v))
		}
	}
	add("protocol", e.Protocol)
	add("remote", e.Remote)
	add("tenant", e.Tenant)
	add("user", e.User)
	add("device", e.Device)
	add("client_id", e.ClientID)
	add("mechanism", e.Mechanism)
	add("method", e.Method)
	add("path", e.Path)
	add("resource", e.Resource)
	add("action", e.Action)
	if e.Status != 0 {
		r.AddAttrs(slog.Int("status", e.Status))
	}
	add("reason", e.Reason)
	add("detail", e.Detail)
	_ = l.h.Handle(context.Background(), r)
}

func (l *Log) writeSummary(now time.Time, s *summary) {
	r := slog.NewRecord(now, slog.LevelWarn, "audit events suppressed", 0)
	r.AddAttrs(slog.String("event", string(s.k.kind)))
	if s.b.protocol != "" {
		r.AddAttrs(slog.String("protocol", s.b.protocol))
	}
	if s.k.kind == AdminChange {
		r.AddAttrs(slog.String("user", s.k.source))
	} else {
		r.AddAttrs(slog.String("source", s.k.source))
	}
	if s.k.reason != "" {
		r.AddAttrs(slog.String("reason", s.k.reason))
	}
	r.AddAttrs(slog.Int("suppressed", s.b.suppressed), slog.Time("since", s.b.first))
	_ = l.h.Handle(context.Background(), r)
}

// Reason turns an error's text into a rate-limit reason code when a
// front-end has no code of its own: lower case, spaces as underscores,
// cut at the first colon ("bad user name or password: ..." →
// "bad_user_name_or_password").
func Reason(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), ":")
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) > 48 {
		s = s[:48]
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return '_'
		}
		if r < 0x20 || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}
