package auth

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/tenant"
)

// Failed logins are cheap (issue 14): a password that failed against the
// same stored hash is refused without a bcrypt, an unknown user is
// answered after a comparison's usual time without computing one, and
// both still count in the backoff.
func TestFailedLoginsCostNoBcrypt(t *testing.T) {
	f := backoffUsers(t, "app")
	a := New(f, WithLoginBackoff(Backoff{First: time.Second, Max: time.Second, FreeUser: 100, FreeSource: 100}))
	ctx := WithSource(context.Background(), net.ParseIP("192.0.2.7"))
	bcrypts := func() float64 { return value(a.m.bcrypts) }
	login := func(user, pw string) error {
		_, err := a.AuthenticateFor(ctx, "", "acme", user, pw)
		return err
	}

	// The same wrong password twice: one bcrypt.
	for range 3 {
		if err := login("app", "stale"); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	if n, k := bcrypts(), value(a.m.knownWrong); n != 1 || k != 2 {
		t.Fatalf("3 logins with one wrong password: %v bcrypts, %v known wrong", n, k)
	}
	// The right password still gets in; another wrong one costs a bcrypt.
	if err := login("app", "right"); err != nil {
		t.Fatal(err)
	}
	if err := login("app", "other"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	if n := bcrypts(); n != 3 {
		t.Fatalf("bcrypts %v, want 3", n)
	}
	// A new stored hash is checked afresh: "stale" becomes the password.
	h, _ := bcrypt.GenerateFromPassword([]byte("stale"), bcrypt.MinCost)
	f.users["acme/app"] = &tenant.User{Name: "app", Tenant: "acme", PasswordHash: string(h)}
	if err := login("app", "stale"); err != nil {
		t.Fatalf("the old wrong password after it was set: %v", err)
	}

	// Unknown users: no bcrypt, about a comparison's time, and the same
	// password again is refused at once, as for a known user.
	before := bcrypts()
	a.pool.took.Store(int64(200 * time.Millisecond))
	t0 := time.Now()
	if err := login("nobody", "x"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 190*time.Millisecond || d > 2*time.Second {
		t.Fatalf("unknown user answered after %v, want about 200 ms", d)
	}
	t0 = time.Now()
	if err := login("nobody", "x"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 150*time.Millisecond {
		t.Fatalf("unknown user, same password again: %v", d)
	}
	if n := bcrypts(); n != before || value(a.m.imitated) != 1 {
		t.Fatalf("unknown users ran %v bcrypts, %v imitated", n-before, value(a.m.imitated))
	}
}

// The suspects' lane: with two workers, checks of keys with failures run
// one at a time, and a clean check still finds a worker.
func TestSuspectLane(t *testing.T) {
	m := newAuthMetrics()
	p := newPool(2, m)
	if cap(p.suspect) != 1 {
		t.Fatalf("suspect lane of %d", cap(p.suspect))
	}
	p.suspect <- struct{}{} // a suspect check runs
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	h := []byte(bcryptHash(t, "pw"))
	if _, err := p.compare(ctx, h, "pw", true); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a second suspect check ran: %v", err)
	}
	if ok, err := p.compare(context.Background(), h, "pw", false); !ok || err != nil {
		t.Fatalf("a clean check: %v %v", ok, err)
	}
	<-p.suspect
	b := newBackoff(Backoff{Max: time.Second})
	keys := []string{"u\x00acme\x00app", "s\x00192.0.2.7"}
	if b.suspect(keys) {
		t.Fatal("suspect without failures")
	}
	b.failed(&checkState{keys: keys[1:]})
	if !b.suspect(keys) {
		t.Fatal("a source with a failure is not suspect")
	}
}
