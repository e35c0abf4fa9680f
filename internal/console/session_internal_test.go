package console

import (
	"testing"
	"time"

	"github.com/throngmq/throng/internal/auth"
)

func TestSessionExpiry(t *testing.T) {
	now := time.Unix(1e9, 0)
	ss := newSessions(30*time.Minute, 12*time.Hour, func() time.Time { return now })
	tok := ss.create(&auth.Principal{User: "admin", Tenant: "default"})
	if ss.get(tok) == nil || ss.get("other") != nil || ss.get("") != nil {
		t.Fatal("lookup")
	}
	now = now.Add(29 * time.Minute) // used: the idle time restarts
	if ss.get(tok) == nil {
		t.Fatal("expired while in use")
	}
	now = now.Add(31 * time.Minute)
	if ss.get(tok) != nil {
		t.Fatal("idle session still valid")
	}
	tok = ss.create(&auth.Principal{User: "admin", Tenant: "default"})
	for i := 0; i < 12*3; i++ { // used every 20 minutes for 12 hours
		now = now.Add(20 * time.Minute)
		if ss.get(tok) == nil {
			t.Fatalf("ended after %d uses", i)
		}
	}
	now = now.Add(time.Minute)
	if ss.get(tok) != nil {
		t.Fatal("session older than 12 h still valid")
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"": "/", "/t/acme": "/t/acme", "//evil.example": "/", "/\\evil.example": "/",
		"https://evil.example/": "/", "t/acme": "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRates(t *testing.T) {
	now := time.Unix(1e9, 0)
	rs := newRates(func() time.Time { return now })
	if in, _ := rs.observe("a", 100, 0); in != 0 {
		t.Fatal("first reading has a rate")
	}
	now = now.Add(2 * time.Second)
	if in, out := rs.observe("a", 120, 10); in != 10 || out != 5 {
		t.Fatalf("rates %v %v", in, out)
	}
	now = now.Add(500 * time.Millisecond) // too soon: the last rate
	if in, _ := rs.observe("a", 500, 10); in != 10 {
		t.Fatalf("rate %v", in)
	}
	now = now.Add(time.Second)
	if in, _ := rs.observe("a", 5, 0); in != 0 { // restarted counters
		t.Fatalf("rate after restart %v", in)
	}
}
