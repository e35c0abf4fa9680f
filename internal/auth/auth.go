// Package auth authenticates users against the tenant store, and devices
// of IoT-enabled tenants against the device registry (device.go, cert.go),
// and authorizes their actions on addresses. Every front-end uses it.
//
// Password checks cost a bcrypt comparison (tens of milliseconds), so a
// successful verification is cached: the cache remembers, per user, the
// stored hash it was verified against and a SHA-256 of the password. A
// later login with the same password against the same stored hash is then
// a hash comparison, and a password change or user deletion invalidates it
// by itself (the stored hash no longer matches or the user is gone).
// Comparisons that do run go through a bounded pool (about GOMAXPROCS at
// once, pool.go), so a reconnect storm queues instead of running
// thousands of bcrypts side by side.
//
// Package registry must not import auth: auth imports registry for its
// types (the device source below is satisfied by *registry.Store).
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// ErrBadCredentials is returned for an unknown user or wrong password; the
// two are not distinguished, to give nothing away.
var ErrBadCredentials = errors.New("bad user name or password")

// ErrUnknownTenant is returned when the tenant named does not exist.
var ErrUnknownTenant = errors.New("unknown tenant")

// ErrNotAuthorized is returned for a device whose tenant, or the protocol
// adapter for that tenant, is disabled: MQTT answers "not authorized"
// (0x87, 3.1.1 return code 5) rather than "bad user name or password".
var ErrNotAuthorized = errors.New("not authorized")

// ErrUnavailable is returned when the device registry cannot answer: the
// client may retry (MQTT 0x88, AMQP SASL sys-temp).
var ErrUnavailable = errors.New("authentication service unavailable")

// BcryptCost is the cost used for new password hashes.
const BcryptCost = 10

// HashPassword returns the bcrypt hash stored for a password.
func HashPassword(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), BcryptCost)
	return string(h), err
}

// Principal is an authenticated identity: a throng user, an anonymous
// client, or a device of an IoT-enabled tenant (Device set).
type Principal struct {
	Tenant   string
	User     string // empty for anonymous and devices
	ClientID string
	Roles    []tenant.Role
	Perms    []tenant.Permission
	// Device is the device id of a device principal (empty otherwise). A
	// device is a principal of its own kind: it has no roles and no
	// permissions on ordinary addresses (Authorize refuses it everything);
	// the Hono topic layer grants it its own device topics.
	Device string
	// AuthID is the auth-id the device authenticated with, and AuthType
	// its credential type (registry.TypePassword, registry.TypeX509).
	AuthID   string
	AuthType string
	// hash is the stored password hash a user authenticated against
	// (empty for other methods): the live-connection registry (live.go)
	// tells a password change from it.
	hash string
	// expires is when the credentials stop being valid, in Unix
	// nanoseconds (a device's JWT: its exp plus the allowed skew); 0:
	// never. Live closes the connection then.
	expires int64
}

// Expired reports whether the principal's credentials (a device's JWT)
// are no longer valid at now.
func (p *Principal) Expired(now time.Time) bool {
	return p.expires != 0 && now.UnixNano() >= p.expires
}

// IsDevice reports whether the principal is a device.
func (p *Principal) IsDevice() bool { return p.Device != "" }

// Anonymous returns the principal of an anonymous connection to a tenant;
// it may send and receive on every address (front-ends only allow it where
// configuration does: loopback and the default tenant by default).
func Anonymous(tenantName string) *Principal {
	return &Principal{Tenant: tenantName, Perms: anonymousPerms}
}

// anonymousPerms is shared by every anonymous principal (read-only): one
// copy per connection was a tenth of an idle MQTT connection's memory.
var anonymousPerms = []tenant.Permission{{Pattern: "#", Actions: []tenant.Action{
	tenant.ActionSend, tenant.ActionReceive, tenant.ActionView}}}

// The roles (IsAdmin, IsTenantAdmin, IsOperator, MayAdminister) are in
// role.go.

// Users is what the authenticator needs from the tenant store.
type Users interface {
	Tenant(name string) (*tenant.Tenant, bool)
	User(tenant, name string) (*tenant.User, bool)
}

// Authenticator checks credentials, with a verification cache.
type Authenticator struct {
	users   Users
	devices Devices // nil: no device authentication
	log     *slog.Logger
	m       *authMetrics
	pool    *pool
	now     func() time.Time // time of validity checks (tests set it)
	live    *Live            // live connections (live.go)
	backoff *backoff         // login backoff (backoff.go); nil: off
	wrong   *knownWrong      // passwords that failed against a stored hash

	// Client certificates (cert.go): the node's tls.clientCA for users,
	// the tenants' trust anchors for devices.
	clientCAs *x509.CertPool
	anchors   anchorIndex

	mu    sync.Mutex
	cache map[string]verified // key tenant+"\x00"+user; guarded by mu

	devMu    sync.Mutex
	devCache map[string]devVerified // key tenant, auth-id, stored hash; guarded by devMu
	devKeys  map[string][]string    // tenant+"\x00"+device → its devCache keys; guarded by devMu
}

type verified struct {
	hash string   // the stored bcrypt hash the password was checked against
	sum  [32]byte // SHA-256 of the password
}

// maxCache bounds the verification cache; on overflow it starts afresh.
const maxCache = 1 << 16

// Option configures an Authenticator.
type Option func(*Authenticator)

// WithDevices authenticates devices of IoT-enabled tenants against d
// (*registry.Store) and drops cached verifications when d reports a
// change of a device's credentials.
func WithDevices(d Devices) Option { return func(a *Authenticator) { a.devices = d } }

// WithMetrics registers the authenticator's metrics.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(a *Authenticator) { a.m.register(reg) }
}

// WithLogger sets the logger (refusals are logged with their reason).
func WithLogger(l *slog.Logger) Option { return func(a *Authenticator) { a.log = l } }

// WithBcryptWorkers bounds the bcrypt comparisons that run at once
// (default GOMAXPROCS).
func WithBcryptWorkers(n int) Option { return func(a *Authenticator) { a.pool = newPool(n, a.m) } }

// New returns an authenticator over the store.
func New(users Users, opts ...Option) *Authenticator {
	a := &Authenticator{
		users:    users,
		log:      slog.New(slog.DiscardHandler),
		m:        newAuthMetrics(),
		now:      time.Now,
		cache:    map[string]verified{},
		devCache: map[string]devVerified{},
		devKeys:  map[string][]string{},
		wrong:    newKnownWrong(),
	}
	a.pool = newPool(0, a.m)
	for _, o := range opts {
		o(a)
	}
	a.log = a.log.With("component", "auth")
	if a.devices != nil {
		a.devices.OnCredentialsChange(a.forgetDevice)
	}
	a.live = newLive(a)
	a.live.watch()
	return a
}

// SplitUser splits "user@tenant" into its parts; without '@' the tenant is
// defaultTenant.
func SplitUser(s, defaultTenant string) (user, tenantName string) {
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, defaultTenant
}

// Protocol adapters, as Hono names them in a tenant's "adapters" list.
const (
	AdapterMQTT = "hono-mqtt"
	AdapterAMQP = "hono-amqp"
	AdapterHTTP = "hono-http"
)

// authenticateTimeout bounds Authenticate, which has no context: the
// wait for a bcrypt worker and the registry lookup.
const authenticateTimeout = 30 * time.Second

// Authenticate checks a user name and password in a tenant: a throng
// user of that name, else (IoT-enabled tenants) a device whose
// hashed-password credential has that auth-id. No protocol adapter is
// named, so the tenant's adapter settings are not consulted; front-ends
// use AuthenticateFor.
func (a *Authenticator) Authenticate(tenantName, user, password string) (*Principal, error) {
	ctx, cancel := context.WithTimeout(context.Background(), authenticateTimeout)
	defer cancel()
	return a.AuthenticateFor(ctx, "", tenantName, user, password)
}

// AuthenticateFor is Authenticate for a protocol adapter (AdapterMQTT,
// ...): a device is refused when the tenant disables that adapter. ctx
// bounds the wait for a bcrypt worker and the registry lookup. Errors
// wrap ErrBadCredentials, ErrNotAuthorized (disabled tenant or adapter),
// ErrUnknownTenant or ErrUnavailable; their text names the reason, for
// logs, and must not be sent to the client.
//
// With the login backoff on (WithLoginBackoff, backoff.go), a password
// check of a (tenant, user) or source address (WithSource) with failures
// waits its turn, and a refusal is answered after the backoff's delay.
func (a *Authenticator) AuthenticateFor(ctx context.Context, adapter, tenantName, user, password string) (*Principal, error) {
	if adapter == AdapterMQTT && LooksLikeJWT(password) {
		// Hono's MQTT adapter: a JWT in the password field (jwt.go).
		return a.authenticateMQTTToken(ctx, password)
	}
	t, ok := a.users.Tenant(tenantName)
	if !ok {
		return nil, ErrUnknownTenant
	}
	if a.backoff == nil {
		return a.authenticatePassword(ctx, adapter, t, tenantName, user, password)
	}
	st := &checkState{keys: a.backoff.keysFor(ctx, tenantName, user)}
	p, err := a.authenticatePassword(context.WithValue(ctx, turnKeys{}, st), adapter, t, tenantName, user, password)
	switch {
	case err == nil:
		a.backoff.succeeded(st)
	case errors.Is(err, ErrBadCredentials):
		a.loginFailed(ctx, st)
	default:
		a.backoff.release(st)
	}
	return p, err
}

// loginFailed counts a refused login in the backoff and waits its delay
// (or until ctx ends) before the refusal is answered.
func (a *Authenticator) loginFailed(ctx context.Context, st *checkState) {
	if d := a.backoff.failed(st); d > 0 {
		a.m.delayed.Inc()
		tm := time.NewTimer(d)
		select {
		case <-tm.C:
		case <-ctx.Done():
		}
		tm.Stop()
	}
}

// turnKeys carries a check's place in the backoff (*checkState) to
// compare.
type turnKeys struct{}

// compare is pool.compare after the backoff's turn of the check's keys.
// A password that failed against the same stored hash before is refused
// at once (known wrong: a client reconnecting with a stale password, or a
// guesser trying a password again, costs no bcrypt and no turn); the
// refusal is still counted and delayed by the caller like any other.
func (a *Authenticator) compare(ctx context.Context, hash []byte, password string) (bool, error) {
	fk := a.wrong.key(hash, password)
	if a.wrong.has(fk) {
		a.m.knownWrong.Inc()
		return false, nil
	}
	suspect, err := a.turn(ctx)
	if err != nil {
		return false, err
	}
	ok, err := a.pool.compare(ctx, hash, password, suspect)
	if err == nil && !ok {
		a.wrong.add(fk)
	}
	return ok, err
}

// imitate stands for a comparison of a password that cannot match (an
// unknown user or device, a disabled one): the same turn in the backoff
// and about the same time (pool.imitate), no bcrypt. id names what was
// asked for (kind, tenant, name): a password tried again for it is
// refused at once, as compare refuses a known wrong one, so that trying
// a password twice does not tell a real user from an unknown one.
func (a *Authenticator) imitate(ctx context.Context, id, password string) {
	fk := a.wrong.key([]byte(id), password)
	if a.wrong.has(fk) {
		a.m.knownWrong.Inc()
		return
	}
	if suspect, err := a.turn(ctx); err == nil {
		if a.pool.imitate(ctx, suspect) == nil {
			a.wrong.add(fk)
		}
	}
}

// turn waits for the backoff's turn of the check's keys (if the check is
// counted) and reports whether they have failures (a suspect check).
func (a *Authenticator) turn(ctx context.Context) (suspect bool, err error) {
	st, ok := ctx.Value(turnKeys{}).(*checkState)
	if !ok {
		return false, nil
	}
	if len(st.taken) == 0 { // one turn per login, whatever it compares
		if err := a.backoff.turn(ctx, st); err != nil {
			return false, err
		}
	}
	return a.backoff.suspect(st.keys), nil
}

// authenticatePassword is AuthenticateFor in a known tenant.
func (a *Authenticator) authenticatePassword(ctx context.Context, adapter string, t *tenant.Tenant, tenantName, user, password string) (*Principal, error) {
	u, ok := a.users.User(tenantName, user)
	if (!ok || u.PasswordHash == "") && t.IoT != nil && a.devices != nil {
		return a.authenticateDevice(ctx, adapter, t, user, password)
	}
	if !ok || u.PasswordHash == "" {
		// Take comparable time so that probing for user names is not
		// cheaper, but spend no CPU on it (imitate).
		a.imitate(ctx, "user\x00"+tenantName+"\x00"+user, password)
		return nil, ErrBadCredentials
	}
	key := tenantName + "\x00" + user
	sum := sha256.Sum256([]byte(password))
	a.mu.Lock()
	v, hit := a.cache[key]
	a.mu.Unlock()
	if !hit || v.hash != u.PasswordHash || subtle.ConstantTimeCompare(v.sum[:], sum[:]) != 1 {
		match, err := a.compare(ctx, []byte(u.PasswordHash), password)
		if err != nil {
			return nil, err
		}
		if !match {
			return nil, ErrBadCredentials
		}
		a.mu.Lock()
		if len(a.cache) >= maxCache {
			a.cache = map[string]verified{}
		}
		a.cache[key] = verified{hash: u.PasswordHash, sum: sum}
		a.mu.Unlock()
	} else {
		a.m.cacheHits.Inc()
	}
	return &Principal{Tenant: tenantName, User: u.Name, Roles: u.Roles, Perms: u.Permissions, hash: u.PasswordHash}, nil
}

// dummyHashTook is how long making a hash of BcryptCost took at start,
// the first estimate of a comparison's duration (pool.imitate).
var dummyHashTook = func() time.Duration {
	t0 := time.Now()
	_, _ = bcrypt.GenerateFromPassword([]byte("dummy"), BcryptCost)
	return time.Since(t0)
}()

// Authorize reports whether the principal may perform action on the
// address name (or filter, for subscriptions: a filter is allowed if the
// permission pattern covers it). Names under a reserved prefix (see
// Reserved) are refused to everyone, administrators included.
func Authorize(p *Principal, name string, action tenant.Action) bool {
	if Reserved(name, action) != nil {
		return false
	}
	if p.IsDevice() {
		return false // devices use their Hono topics only (not ordinary addresses)
	}
	if p.IsTenantAdmin() {
		return true
	}
	for _, perm := range p.Perms {
		if !hasAction(perm.Actions, action) {
			continue
		}
		pat := perm.Pattern
		if strings.Contains(pat, "${") {
			pat = strings.NewReplacer("${user}", p.User, "${client_id}", p.ClientID).Replace(pat)
		}
		if covers(pat, name) {
			return true
		}
	}
	return false
}

// Errors of Reserved.
var (
	// ErrReservedName: the name cannot be an address at all ("$share/…"
	// starts an MQTT shared subscription, never a topic): MQTT answers
	// "topic name/filter invalid".
	ErrReservedName = errors.New("reserved name")
	// ErrReservedUse: the name is an address, but this use of it is the
	// server's ("$SYS/…" is published by the server only) or its owner's
	// (only the link that created a "$temp/…" address receives from it):
	// MQTT answers "not authorized".
	ErrReservedUse = errors.New("reserved use")
)

// Reserved reports whether name (an address name or a subscription
// filter) falls under one of throng's reserved prefixes for action, and
// why. Every other name starting with '$' is an ordinary application
// name, covered by permissions like any other (docs/mqtt.md, Permissions).
// The reserved prefixes:
//
//   - "$SYS/": the server's statistics topics; receiving is allowed (with
//     a permission), sending is not.
//   - "$share/": shared subscriptions; never an address name.
//   - "$temp/": temporary (dynamic) addresses; any connection of the
//     tenant may send to one (its name is unguessable: reply addresses),
//     only the link that created it receives from it, and that link does
//     not ask Authorize.
//
// Each prefix also covers the bare name without the slash ("$SYS").
func Reserved(name string, action tenant.Action) error {
	switch {
	case underPrefix(name, "$share"):
		return fmt.Errorf("%w: %q: $share/ starts a shared subscription, not an address name", ErrReservedName, name)
	case underPrefix(name, "$SYS") && action == tenant.ActionSend:
		return fmt.Errorf("%w: %q: $SYS/ topics are published by the server only", ErrReservedUse, name)
	case underPrefix(name, "$temp") && action == tenant.ActionReceive:
		return fmt.Errorf("%w: %q: only the owner of a temporary address receives from it", ErrReservedUse, name)
	}
	return nil
}

// underPrefix reports whether name is the level prefix p or starts with
// p and a level separator.
func underPrefix(name, p string) bool {
	return strings.HasPrefix(name, p) && (len(name) == len(p) || name[len(p)] == '/')
}

func hasAction(as []tenant.Action, a tenant.Action) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// covers reports whether every name matched by filter f is matched by
// pattern p (for a plain name, this is matchPattern).
func covers(p, f string) bool {
	if !address.IsWildcard(f) {
		return matchPattern(p, f)
	}
	pl := strings.Split(p, "/")
	fl := strings.Split(f, "/")
	for i, l := range pl {
		if l == "#" {
			return true
		}
		if i >= len(fl) {
			return false
		}
		switch {
		case l == "+":
			if fl[i] == "#" {
				return false
			}
		case l != fl[i]:
			return false
		}
	}
	return len(pl) == len(fl)
}

// matchPattern reports whether the name matches the permission pattern
// ('+' one level, a trailing '#' any number of levels, including none).
// Unlike a subscription filter (address.Match, [MQTT-4.7.2-1]), a
// leading wildcard also matches names starting with '$': that rule keeps
// "#" subscribers from receiving the server's $SYS topics, it is not
// about permissions, and a user permitted "#" may use application topics
// such as "$devices/x" (the reserved prefixes are refused by Reserved).
func matchPattern(p, name string) bool {
	for {
		pl, prest, pmore := strings.Cut(p, "/")
		if pl == "#" {
			return true
		}
		nl, nrest, nmore := strings.Cut(name, "/")
		if pl != "+" && pl != nl {
			return false
		}
		if !pmore && !nmore {
			return true
		}
		if !nmore {
			// "a/#" matches "a".
			return pmore && prest == "#"
		}
		if !pmore {
			return false
		}
		p, name = prest, nrest
	}
}
