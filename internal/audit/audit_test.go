package audit_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/audit"
)

// lines is a concurrency-safe JSON-lines sink.
type lines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lines) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLog(t *testing.T, o audit.Options) (*audit.Log, *lines) {
	t.Helper()
	sink := &lines{}
	if o.SummaryEvery == 0 {
		o.SummaryEvery = time.Hour // summaries from Close or the next allowed record only
	}
	l := audit.New(slog.NewJSONHandler(sink, nil), o)
	t.Cleanup(func() { l.Close() })
	return l, sink
}

func TestRecordFields(t *testing.T) {
	l, sink := newLog(t, audit.Options{})
	l.Record(audit.Event{Kind: audit.Login, Protocol: audit.MQTT, Remote: "10.0.0.1:5555", Tenant: "acme", User: "app1", ClientID: "c1"})
	l.Record(audit.Event{Kind: audit.AdminChange, Protocol: audit.Admin, Remote: "127.0.0.1:1", Tenant: "default", User: "admin",
		Method: "DELETE", Path: "/api/tenants/acme", Resource: "tenant acme", Status: 204})
	l.Record(audit.Event{Kind: audit.LoginFailed, Protocol: audit.AMQP, Remote: "[::1]:7", User: "x", Reason: "bad_credentials"})
	l.Close()
	rs := sink.records(t)
	if len(rs) != 3 {
		t.Fatalf("records %v", rs)
	}
	if rs[0]["msg"] != "login" || rs[0]["event"] != "login" || rs[0]["protocol"] != "mqtt" || rs[0]["remote"] != "10.0.0.1:5555" ||
		rs[0]["tenant"] != "acme" || rs[0]["user"] != "app1" || rs[0]["client_id"] != "c1" || rs[0]["level"] != "INFO" {
		t.Errorf("login %v", rs[0])
	}
	if _, ok := rs[0]["device"]; ok {
		t.Errorf("empty fields written: %v", rs[0])
	}
	if rs[1]["event"] != "admin" || rs[1]["method"] != "DELETE" || rs[1]["resource"] != "tenant acme" || rs[1]["status"] != 204.0 {
		t.Errorf("admin %v", rs[1])
	}
	if rs[2]["msg"] != "login refused" || rs[2]["level"] != "WARN" || rs[2]["reason"] != "bad_credentials" {
		t.Errorf("refusal %v", rs[2])
	}
	// After Close nothing more is written; a nil Log takes anything.
	l.Record(audit.Event{Kind: audit.Login})
	if n := len(sink.records(t)); n != 3 {
		t.Fatalf("%d records after Close", n)
	}
	var nl *audit.Log
	nl.Record(audit.Event{Kind: audit.Login})
	if err := nl.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRateLimitStorm: 200 refusals from one address in a burst write the
// bucket's burst and one summary that counts the rest; another source is
// not affected; records come back once tokens are earned.
func TestRateLimitStorm(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l, sink := newLog(t, audit.Options{Now: c.now})
	for i := range 200 {
		l.Record(audit.Event{Kind: audit.LoginFailed, Protocol: audit.MQTT, Remote: "192.0.2.7:" + string(rune('0'+i%10)), User: "admin", Reason: "bad_credentials"})
	}
	l.Record(audit.Event{Kind: audit.LoginFailed, Protocol: audit.MQTT, Remote: "192.0.2.8:1", Reason: "bad_credentials"})
	burst := audit.DefaultLimits[audit.LoginFailed].Burst
	if got := len(sink.records(t)); got != burst+1 {
		t.Fatalf("%d records during the storm, want %d", got, burst+1)
	}
	// A token later the next refusal is written, after the summary.
	c.add(audit.DefaultLimits[audit.LoginFailed].Every)
	l.Record(audit.Event{Kind: audit.LoginFailed, Protocol: audit.MQTT, Remote: "192.0.2.7:9", Reason: "bad_credentials"})
	rs := sink.records(t)
	if len(rs) != burst+3 {
		t.Fatalf("%d records", len(rs))
	}
	sum := rs[burst+1]
	if sum["msg"] != "audit events suppressed" || sum["suppressed"] != float64(200-burst) || sum["source"] != "192.0.2.7" ||
		sum["reason"] != "bad_credentials" || sum["event"] != "login_failed" || sum["protocol"] != "mqtt" {
		t.Fatalf("summary %v", sum)
	}
	if rs[burst+2]["msg"] != "login refused" {
		t.Fatalf("after the summary: %v", rs[burst+2])
	}
	// A storm that ends gets its summary from Close.
	for range 50 {
		l.Record(audit.Event{Kind: audit.LoginFailed, Remote: "192.0.2.9:1", Reason: "bad_credentials"})
	}
	l.Close()
	rs = sink.records(t)
	last := rs[len(rs)-1]
	if last["suppressed"] != float64(50-burst) || last["source"] != "192.0.2.9" {
		t.Fatalf("final summary %v", last)
	}
	total := 0
	for _, r := range rs {
		if r["msg"] == "login refused" {
			total++
		} else if n, ok := r["suppressed"].(float64); ok {
			total += int(n)
		}
	}
	if total != 200+1+1+50 {
		t.Fatalf("written + suppressed = %d, want 252", total)
	}
}

// TestRateLimitPeriodicSummary: the summary goroutine writes the count of
// an ended storm without waiting for another record.
func TestRateLimitPeriodicSummary(t *testing.T) {
	l, sink := newLog(t, audit.Options{SummaryEvery: 20 * time.Millisecond,
		Limits: map[audit.Kind]audit.Limit{audit.Denied: {Burst: 2, Every: time.Hour}}})
	for range 10 {
		l.Record(audit.Event{Kind: audit.Denied, Remote: "198.51.100.1:2", Reason: "not_authorized", Resource: "orders", Action: "send"})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		rs := sink.records(t)
		if len(rs) == 3 && rs[2]["suppressed"] == 8.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records %v", rs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMaxKeys: sources beyond MaxKeys share one bucket, so a spoofed
// flood of addresses cannot grow the map or the output without bound.
func TestMaxKeys(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l, sink := newLog(t, audit.Options{Now: c.now, MaxKeys: 4,
		Limits: map[audit.Kind]audit.Limit{audit.LoginFailed: {Burst: 1, Every: time.Hour}}})
	for i := range 100 {
		l.Record(audit.Event{Kind: audit.LoginFailed, Remote: "10.1.0." + strings.Repeat("1", 1+i%3) + string(rune('a'+i)) + ":1", Reason: "x"})
	}
	l.Close()
	rs := sink.records(t)
	if len(rs) > 10 {
		t.Fatalf("%d records", len(rs))
	}
	if last := rs[len(rs)-1]; last["source"] != "*" {
		t.Fatalf("overflow summary %v", last)
	}
}

func TestOpen(t *testing.T) {
	if l, err := audit.Open("off", "text", nil, audit.Options{}); l != nil || err != nil {
		t.Fatalf("off: %v %v", l, err)
	}
	var stderr lines
	l, err := audit.Open("stderr", "text", &stderr, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(audit.Event{Kind: audit.Login, Protocol: audit.AMQP, User: "u"})
	l.Close()
	if s := stderr.b.String(); !strings.Contains(s, "component=audit") || !strings.Contains(s, `msg=login`) {
		t.Fatalf("text: %q", s)
	}
	file := filepath.Join(t.TempDir(), "audit.log")
	for range 2 { // appends
		l, err = audit.Open(file, "text", nil, audit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		l.Record(audit.Event{Kind: audit.Login, Protocol: audit.AMQP, User: "u"})
		l.Close()
	}
	b, _ := os.ReadFile(file)
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(got) != 2 || !json.Valid([]byte(got[1])) || !strings.Contains(got[1], `"component":"audit"`) {
		t.Fatalf("file: %q", b)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if _, err := audit.Open(filepath.Join(t.TempDir(), "no", "such", "dir", "a.log"), "json", nil, audit.Options{}); err == nil {
		t.Fatal("no error for a file that cannot be created")
	}
}

func TestReason(t *testing.T) {
	for in, want := range map[string]string{
		"bad user name or password: x":  "bad_user_name_or_password",
		"not authorized":                "not_authorized",
		"authentication service unavai": "authentication_service_unavai",
	} {
		if got := audit.Reason(errString(in)); got != want {
			t.Errorf("Reason(%q) = %q, want %q", in, got, want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
