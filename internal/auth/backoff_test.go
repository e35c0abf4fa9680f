package auth

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/tenant"
)

func backoffUsers(t *testing.T, names ...string) *fakeUsers {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost) // fast under -race
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUsers{tenants: map[string]*tenant.Tenant{"acme": {Name: "acme"}}, users: map[string]*tenant.User{}}
	for _, n := range names {
		f.users["acme/"+n] = &tenant.User{Name: n, Tenant: "acme", PasswordHash: string(h)}
	}
	return f
}

func TestBackoffDelays(t *testing.T) {
	b := newBackoff(Backoff{Max: 5 * time.Second})
	var got []time.Duration
	for n := 1; n <= 10; n++ {
		got = append(got, b.delay(n, 3))
	}
	ms := time.Millisecond
	want := []time.Duration{0, 0, 0, 250 * ms, 500 * ms, 1000 * ms, 2000 * ms, 4000 * ms, 5000 * ms, 5000 * ms}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
}

// timed runs one login and returns how long it took and its error.
func timed(a *Authenticator, ctx context.Context, user, pw string) (time.Duration, error) {
	t0 := time.Now()
	_, err := a.AuthenticateFor(ctx, "", "acme", user, pw)
	return time.Since(t0), err
}

func TestLoginBackoffPerUser(t *testing.T) {
	// Long enough to tell from a bcrypt check, which takes up to a few
	// hundred milliseconds under -race even at the minimum cost.
	const first, maxD = 500 * time.Millisecond, time.Second
	a := New(backoffUsers(t, "app", "other"), WithLoginBackoff(Backoff{First: first, Max: maxD}))
	ctx := context.Background()
	// A login with the right password before the attack: cached.
	if _, err := timed(a, ctx, "app", "right"); err != nil {
		t.Fatal(err)
	}
	// Three free failures, then 500 ms, 1 s, 1 s.
	wantAtLeast := []time.Duration{0, 0, 0, first, maxD, maxD}
	for i, w := range wantAtLeast {
		d, err := timed(a, ctx, "app", "guess")
		if !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("guess %d: %v", i+1, err)
		}
		if d < w || (w == 0 && d > first*9/10) || d > w+2*time.Second {
			t.Fatalf("guess %d answered after %v, want %v", i+1, d, w)
		}
	}
	// Other users are not slowed; the attacked user's cached password
	// is not either.
	for _, u := range []string{"other", "app"} {
		if d, err := timed(a, ctx, u, "right"); err != nil || d > first*9/10 {
			t.Fatalf("%s's login took %v (%v) during the attack", u, d, err)
		}
	}
	// The success forgot the user's failures.
	if d, err := timed(a, ctx, "app", "guess"); !errors.Is(err, ErrBadCredentials) || d > first*9/10 {
		t.Fatalf("first failure after a success: %v %v", d, err)
	}
}

func TestLoginBackoffParallel(t *testing.T) {
	// Guesses on parallel connections take turns: four of them, in
	// backoff at 100 ms, take at least 3 x 100 ms together (each waits for
	// the one before), not 100 ms.
	const first = 100 * time.Millisecond
	a := New(backoffUsers(t, "app"), WithLoginBackoff(Backoff{First: first, Max: first, FreeUser: 1}))
	ctx := context.Background()
	for _, g := range []string{"g0", "g1"} { // the second failure starts the backoff
		if _, err := timed(a, ctx, "app", g); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			// Each a new guess: a password tried before is refused without
			// a check, and without a turn (TestKnownWrong).
			if _, err := timed(a, ctx, "app", "p"+strconv.Itoa(i)); !errors.Is(err, ErrBadCredentials) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if d := time.Since(t0); d < 3*first {
		t.Fatalf("4 parallel guesses answered within %v, want at least %v", d, 3*first)
	}
	// A context that ends while waiting for the turn: unavailable.
	for i := range 3 { // queue turns up
		go timed(a, ctx, "app", "q"+strconv.Itoa(i))
	}
	time.Sleep(10 * time.Millisecond)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := timed(a, short, "app", "q"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("ended while waiting: %v", err)
	}
}

func TestLoginBackoffPerSource(t *testing.T) {
	const first = 500 * time.Millisecond
	// Known users only: an unknown one costs a bcrypt of the real cost.
	a := New(backoffUsers(t, "u1", "n1", "n2", "n3", "n4", "n5", "na", "nb", "nc", "nd", "ne", "nf"), WithLoginBackoff(Backoff{First: first, Max: first, FreeSource: 4,
		Exempt: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}))
	guesser := WithSource(context.Background(), net.ParseIP("192.0.2.7"))
	// Four free failures from the address, one per user name (each user
	// key stays free), then the fifth waits.
	for i, u := range []string{"n1", "n2", "n3", "n4", "n5"} {
		d, err := timed(a, guesser, u, "x")
		if !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
		if (i < 4 && d > first*9/10) || (i == 4 && d < first) {
			t.Fatalf("failure %d from the address took %v", i+1, d)
		}
	}
	// Another address, and an exempt one, are not slowed.
	for _, src := range []string{"192.0.2.8", "10.1.2.3"} {
		ctx := WithSourceAddr(context.Background(), net.JoinHostPort(src, "5555"))
		if d, err := timed(a, ctx, "u1", "right"); err != nil || d > first*9/10 {
			t.Fatalf("login from %s took %v (%v)", src, d, err)
		}
	}
	exempt := WithSource(context.Background(), net.ParseIP("10.9.9.9"))
	for i := range 6 {
		if d, _ := timed(a, exempt, "n"+string(rune('a'+i)), "x"); d > first*9/10 {
			t.Fatalf("failure %d from an exempt address took %v", i+1, d)
		}
	}
	// Unknown tenants are not counted (and cost nothing).
	for range 20 {
		if _, err := a.AuthenticateFor(guesser, "", "nope", "u", "x"); !errors.Is(err, ErrUnknownTenant) {
			t.Fatal(err)
		}
	}
}

// scramLogin runs one SCRAM-SHA-256 exchange of user@acme with pw from
// src and returns how long it took and its error.
func scramLogin(t *testing.T, a *Authenticator, src, user, pw string) (time.Duration, error) {
	t.Helper()
	ctx := WithSource(context.Background(), net.ParseIP(src))
	t0 := time.Now()
	err := scramRun(t, a.NewScramExchange(ctx, "acme"), &scramClient{user: user, pw: pw, cnonce: "fyko+d2lbbFgONRv9qkxdawL"})
	return time.Since(t0), err
}

func TestLoginBackoffScram(t *testing.T) {
	// SCRAM failures count in the login backoff as PLAIN's do: per user
	// and per source, and a failure of either kind slows the other.
	const first = 500 * time.Millisecond
	f := backoffUsers(t, "app", "other")
	cred, err := NewScramCredential("right")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range f.users {
		u.Scram = cred
	}
	a := New(f, WithLoginBackoff(Backoff{First: first, Max: first, FreeSource: 5}))
	// Three free failures of the user over SCRAM, then the fourth waits.
	for i := range 4 {
		d, err := scramLogin(t, a, "192.0.2.7", "app", "guess")
		if !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("guess %d: %v", i+1, err)
		}
		if (i < 3 && d > first*9/10) || (i == 3 && d < first) {
			t.Fatalf("SCRAM guess %d answered after %v", i+1, d)
		}
	}
	// PLAIN for the same user is in backoff too (its turn comes after the
	// last SCRAM failure's delay).
	if d, err := timed(a, context.Background(), "app", "guess"); !errors.Is(err, ErrBadCredentials) || d < first {
		t.Fatalf("PLAIN after SCRAM failures: %v %v", d, err)
	}
	// Unknown users count per source: the source's fifth free failure is
	// the unknown user, its sixth (another known user) waits.
	if _, err := scramLogin(t, a, "192.0.2.7", "nobody", "x"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	if d, err := scramLogin(t, a, "192.0.2.7", "other", "x"); !errors.Is(err, ErrBadCredentials) || d < first {
		t.Fatalf("sixth failure from the address: %v %v", d, err)
	}
	// Another source and user is not slowed; a success over SCRAM forgets
	// the user's failures.
	if d, err := scramLogin(t, a, "192.0.2.8", "other", "right"); err != nil || d > first*9/10 {
		t.Fatalf("other user from another address: %v %v", d, err)
	}
	if d, err := scramLogin(t, a, "192.0.2.9", "app", "right"); err != nil {
		t.Fatalf("right password in backoff: %v %v", d, err)
	}
	if d, err := scramLogin(t, a, "192.0.2.9", "app", "guess"); !errors.Is(err, ErrBadCredentials) || d > first*9/10 {
		t.Fatalf("first failure after a success: %v %v", d, err)
	}
	// A turn not reached before the context ends: unavailable (AMQP
	// answers SASL sys-temp).
	var queued sync.WaitGroup
	defer queued.Wait()
	for range 3 {
		queued.Go(func() { _, _ = scramLogin(t, a, "192.0.2.7", "app", "x") })
	}
	for deadline := time.Now().Add(10 * time.Second); a.backoff.inFlight("s\x00192.0.2.7") < 2; {
		if time.Now().After(deadline) {
			t.Fatal("two of the three exchanges did not wait for their turns")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(WithSource(context.Background(), net.ParseIP("192.0.2.7")), 50*time.Millisecond)
	defer cancel()
	if err := scramRun(t, a.NewScramExchange(ctx, "acme"), &scramClient{user: "app", pw: "x", cnonce: "abc"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("ended while waiting: %v", err)
	}
	// Unknown tenants are not counted.
	for range 20 {
		if _, err := scramLogin(t, a, "192.0.2.10", "u@nope", "x"); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	if d, err := scramLogin(t, a, "192.0.2.10", "other", "right"); err != nil || d > first*9/10 {
		t.Fatalf("after unknown tenants: %v %v", d, err)
	}
}

// inFlight returns the key's checks in flight.
func (b *backoff) inFlight(k string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f := b.keys[k]; f != nil {
		return f.inFlight
	}
	return 0
}

func TestLoginBackoffInFlight(t *testing.T) {
	// Once a user has failed, its parallel checks count as failures to
	// come: four guesses in flight after two failures (100 ms, doubling)
	// get turns at 0, 100, 300 and 700 ms, not 0, 100, 200, 300.
	const first = 100 * time.Millisecond
	a := New(backoffUsers(t, "app", "fleet"), WithLoginBackoff(Backoff{First: first, Max: 10 * time.Second, FreeUser: 1}))
	ctx := context.Background()
	for _, g := range []string{"g0", "g1"} {
		if _, err := timed(a, ctx, "app", g); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	time.Sleep(first) // g1's delay before the next turn
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			if _, err := timed(a, ctx, "app", "p"+strconv.Itoa(i)); !errors.Is(err, ErrBadCredentials) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if d := time.Since(t0); d < 700*time.Millisecond {
		t.Fatalf("4 parallel guesses after 2 failures all answered within %v, want the last turn at 700 ms at least", d)
	}
	// A user without failures is not slowed by its checks in flight
	// (devices sharing a user, reconnecting together).
	t0 = time.Now()
	for range 8 {
		wg.Go(func() {
			if _, err := timed(a, ctx, "fleet", "right"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if d := time.Since(t0); d > first*9/10+a.pool.typical()*8 {
		t.Fatalf("8 parallel right logins took %v", d)
	}
	if n := a.backoff.inFlight("u\x00acme\x00fleet") + a.backoff.inFlight("u\x00acme\x00app"); n != 0 {
		t.Fatalf("%d checks still in flight", n)
	}
}
