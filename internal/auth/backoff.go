package auth

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Login backoff: failed password checks are counted per (tenant, user)
// and per source address. Once a key has had its free failures, each
// further password check of that key waits for its turn: 250 ms after
// the key's previous check, doubling with every further failure up to
// the maximum (5 s by default). Turns are handed out one at a time, so
// parallel connections of a guesser queue behind each other: a key in
// backoff gets at most one check per delay, whatever the number of
// connections, and its bcrypt work is bounded with it.
//
// What is not slowed: a login answered from the verification cache (a
// client that logged in with this password before: a device reconnecting
// while someone guesses its user's password is not delayed), and every
// login of other users from other addresses. What is: a login of the
// attacked user that needs a bcrypt check (the first after a restart or
// a password change) waits its turn like the guesser's; and logins from
// an address in backoff (a NAT shared with the guesser). A success
// forgets the user's failures; a source's are forgotten after a minute
// without one (a guesser with one valid account must not reset its
// address by logging in).
//
// Unknown tenants are refused without a check and are not counted.

// Backoff configures the login backoff (WithLoginBackoff).
type Backoff struct {
	// Max is the longest wait; 0 turns the backoff off.
	Max time.Duration
	// First is the first wait (default 250 ms).
	First time.Duration
	// FreeUser and FreeSource are the failures without a wait, per user
	// (default 3) and per source address (default 10: many clients may
	// share one address).
	FreeUser, FreeSource int
	// Exempt lists source prefixes not counted per source (their users
	// still are).
	Exempt []netip.Prefix
	// Forget is the quiet time after which a key's failures are forgotten
	// (default 1 minute).
	Forget time.Duration
}

// WithLoginBackoff turns the login backoff on (default off).
func WithLoginBackoff(b Backoff) Option {
	return func(a *Authenticator) {
		if b.Max > 0 {
			a.backoff = newBackoff(b)
		}
	}
}

// maxBackoffKeys bounds the keys remembered; on overflow the quiet ones
// are dropped, and if none is, further keys share one.
const maxBackoffKeys = 1 << 16

type backoff struct {
	cfg Backoff
	now func() time.Time

	mu   sync.Mutex
	keys map[string]*failKey // guarded by mu
}

type failKey struct {
	n        int       // failures since the last success or quiet spell
	inFlight int       // checks that took their turn and are not answered yet
	last     time.Time // the last failure
	next     time.Time // the next check's turn
	free     int
}

// checkState is one password check's place in the backoff: its keys, and
// those whose in-flight count its turn raised (release lowers them).
type checkState struct {
	keys  []string
	taken []string
}

func newBackoff(b Backoff) *backoff {
	if b.First <= 0 {
		b.First = 250 * time.Millisecond
	}
	if b.FreeUser <= 0 {
		b.FreeUser = 3
	}
	if b.FreeSource <= 0 {
		b.FreeSource = 10
	}
	if b.Forget <= 0 {
		b.Forget = time.Minute
	}
	return &backoff{cfg: b, now: time.Now, keys: map[string]*failKey{}}
}

// delay is the wait after n failures of a key allowed free of them:
// none for the free ones, then First, doubling up to Max.
func (b *backoff) delay(n, free int) time.Duration {
	if n <= free {
		return 0
	}
	d := b.cfg.First
	for i := free + 1; i < n && d < b.cfg.Max; i++ {
		d *= 2
	}
	return min(d, b.cfg.Max)
}

// keysFor returns the keys of a check: the user's and, if known and not
// exempt, the source address's.
func (b *backoff) keysFor(ctx context.Context, tenantName, user string) []string {
	ks := []string{"u\x00" + tenantName + "\x00" + user}
	if src, ok := ctx.Value(sourceKey{}).(netip.Addr); ok && src.IsValid() {
		for _, p := range b.cfg.Exempt {
			if p.Contains(src) {
				return ks
			}
		}
		ks = append(ks, "s\x00"+src.String())
	}
	return ks
}

// entryLocked returns the key's entry, made if need be; beyond
// maxBackoffKeys (after a sweep) further keys share the entry "overflow",
// whose key is returned.
func (b *backoff) entryLocked(k string, now time.Time) (string, *failKey) {
	if f := b.keys[k]; f != nil {
		return k, f
	}
	if len(b.keys) >= maxBackoffKeys {
		b.sweepLocked(now)
	}
	if len(b.keys) >= maxBackoffKeys {
		k = "overflow"
		if f := b.keys[k]; f != nil {
			return k, f
		}
	}
	free := b.cfg.FreeUser
	if k[0] == 's' {
		free = b.cfg.FreeSource
	}
	f := &failKey{free: free}
	b.keys[k] = f
	return k, f
}

// turn reserves the next check of st's keys and waits for it; it returns
// ErrUnavailable if ctx ends first (the client may retry later).
//
// Once a key has failed, its checks in flight count as failures to come:
// the wait of a check is the delay after the key's failures plus its
// checks in flight. So a guesser's parallel connections get turns spaced
// as if each check before them had failed, not the same short delay
// while the earlier ones are still being checked. A key without
// failures is not slowed, however many checks it has in flight: devices
// that share a user and reconnect together after an outage.
func (b *backoff) turn(ctx context.Context, st *checkState) error {
	now := b.now()
	var at time.Time
	b.mu.Lock()
	for _, k := range st.keys {
		k, f := b.entryLocked(k, now)
		if !f.last.IsZero() && now.Sub(f.last) > b.cfg.Forget {
			f.n = 0
		}
		p := f.n
		if p > 0 {
			p += f.inFlight
		}
		d := b.delay(p, f.free)
		f.inFlight++
		st.taken = append(st.taken, k)
		if d == 0 {
			continue
		}
		t := f.next
		if t.Before(now) {
			t = now
		}
		f.next = t.Add(d) // the turn after this one
		if t.After(at) {
			at = t
		}
	}
	b.mu.Unlock()
	if !at.After(now) {
		return nil
	}
	// The first turn of a key in backoff is now; a later one waits for
	// the checks before it. The delay before a refusal is the wait before
	// the next check, so both grow with the failures.
	tm := time.NewTimer(at.Sub(now))
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		b.release(st)
		return fmt.Errorf("%w: login backoff: %v", ErrUnavailable, ctx.Err())
	}
}

// release ends st's checks in flight (once; turn's keys).
func (b *backoff) release(st *checkState) {
	if len(st.taken) == 0 {
		return
	}
	b.mu.Lock()
	for _, k := range st.taken {
		f := b.keys[k]
		if f == nil {
			continue // forgotten by a success
		}
		if f.inFlight > 0 {
			f.inFlight--
		}
		if f.inFlight == 0 && f.n == 0 {
			delete(b.keys, k)
		}
	}
	b.mu.Unlock()
	st.taken = nil
}

// failed ends st's check with a failure of each key and returns the wait
// before the refusal is answered: the delay of the key's new count, so a
// guesser's first refusal in backoff is as slow as its later ones.
func (b *backoff) failed(st *checkState) time.Duration {
	now := b.now()
	var wait time.Duration
	b.mu.Lock()
	for _, k := range st.keys {
		_, f := b.entryLocked(k, now)
		if !f.last.IsZero() && now.Sub(f.last) > b.cfg.Forget {
			f.n = 0
		}
		f.n++
		f.last = now
		if d := b.delay(f.n, f.free); d > 0 {
			// The answer waits d; the key's next check waits for the end of
			// it at least.
			if f.next.Before(now.Add(d)) {
				f.next = now.Add(d)
			}
			wait = max(wait, d)
		}
	}
	b.mu.Unlock()
	b.release(st)
	return wait
}

// succeeded ends st's check: the user's failures are forgotten (not the
// source's).
func (b *backoff) succeeded(st *checkState) {
	b.release(st)
	b.mu.Lock()
	delete(b.keys, st.keys[0])
	b.mu.Unlock()
}

// suspect reports whether one of keys has failures not yet forgotten:
// its check runs in the bcrypt pool's narrower lane (pool.go).
func (b *backoff) suspect(keys []string) bool {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		if f := b.keys[k]; f != nil && f.n > 0 && now.Sub(f.last) <= b.cfg.Forget {
			return true
		}
	}
	return false
}

func (b *backoff) sweepLocked(now time.Time) {
	for k, f := range b.keys {
		if f.inFlight == 0 && now.Sub(f.last) > b.cfg.Forget {
			delete(b.keys, k)
		}
	}
}

// sourceKey carries a login's source address in its context.
type sourceKey struct{}

// WithSource returns ctx carrying the source address of a login (the
// client's IP; nil or unparsable: none), for the backoff per source.
func WithSource(ctx context.Context, ip []byte) context.Context {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return ctx
	}
	return context.WithValue(ctx, sourceKey{}, a.Unmap())
}

// WithSourceAddr is WithSource for a "host:port" remote address.
func WithSourceAddr(ctx context.Context, remote string) context.Context {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return context.WithValue(ctx, sourceKey{}, ap.Addr().Unmap())
	}
	return ctx
}
