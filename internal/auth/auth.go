// Package auth authenticates users against the tenant store and authorizes
// their actions on addresses. Every front-end uses it.
//
// Password checks cost a bcrypt comparison (tens of milliseconds), so a
// successful verification is cached: the cache remembers, per user, the
// stored hash it was verified against and a SHA-256 of the password. A
// later login with the same password against the same stored hash is then
// a hash comparison, and a password change or user deletion invalidates it
// by itself (the stored hash no longer matches or the user is gone).
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// ErrBadCredentials is returned for an unknown user or wrong password; the
// two are not distinguished, to give nothing away.
var ErrBadCredentials = errors.New("bad user name or password")

// ErrUnknownTenant is returned when the tenant named does not exist.
var ErrUnknownTenant = errors.New("unknown tenant")

// BcryptCost is the cost used for new password hashes.
const BcryptCost = 10

// HashPassword returns the bcrypt hash stored for a password.
func HashPassword(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), BcryptCost)
	return string(h), err
}

// Principal is an authenticated identity.
type Principal struct {
	Tenant   string
	User     string // empty for anonymous
	ClientID string
	Roles    []tenant.Role
	Perms    []tenant.Permission
}

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

// IsAdmin reports whether the principal administers the platform.
func (p *Principal) IsAdmin() bool { return hasRole(p.Roles, tenant.RoleAdmin) }

// IsTenantAdmin reports whether the principal administers its tenant.
func (p *Principal) IsTenantAdmin() bool {
	return p.IsAdmin() || hasRole(p.Roles, tenant.RoleTenantAdmin)
}

func hasRole(rs []tenant.Role, r tenant.Role) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// Users is what the authenticator needs from the tenant store.
type Users interface {
	Tenant(name string) (*tenant.Tenant, bool)
	User(tenant, name string) (*tenant.User, bool)
}

// Authenticator checks credentials, with a verification cache.
type Authenticator struct {
	users Users

	mu    sync.Mutex
	cache map[string]verified // key tenant+"\x00"+user; guarded by mu
}

type verified struct {
	hash string   // the stored bcrypt hash the password was checked against
	sum  [32]byte // SHA-256 of the password
}

// maxCache bounds the verification cache; on overflow it starts afresh.
const maxCache = 1 << 16

// New returns an authenticator over the store.
func New(users Users) *Authenticator {
	return &Authenticator{users: users, cache: map[string]verified{}}
}

// SplitUser splits "user@tenant" into its parts; without '@' the tenant is
// defaultTenant.
func SplitUser(s, defaultTenant string) (user, tenantName string) {
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, defaultTenant
}

// Authenticate checks a user name and password in a tenant.
func (a *Authenticator) Authenticate(tenantName, user, password string) (*Principal, error) {
	if _, ok := a.users.Tenant(tenantName); !ok {
		return nil, ErrUnknownTenant
	}
	u, ok := a.users.User(tenantName, user)
	if !ok || u.PasswordHash == "" {
		// Spend comparable time so that probing for user names is not cheaper.
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return nil, ErrBadCredentials
	}
	key := tenantName + "\x00" + user
	sum := sha256.Sum256([]byte(password))
	a.mu.Lock()
	v, hit := a.cache[key]
	a.mu.Unlock()
	if !hit || v.hash != u.PasswordHash || subtle.ConstantTimeCompare(v.sum[:], sum[:]) != 1 {
		if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
			return nil, ErrBadCredentials
		}
		a.mu.Lock()
		if len(a.cache) >= maxCache {
			a.cache = map[string]verified{}
		}
		a.cache[key] = verified{hash: u.PasswordHash, sum: sum}
		a.mu.Unlock()
	}
	return &Principal{Tenant: tenantName, User: u.Name, Roles: u.Roles, Perms: u.Permissions}, nil
}

var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("dummy"), BcryptCost)

// Authorize reports whether the principal may perform action on the
// address name (or filter, for subscriptions: a filter is allowed if the
// permission pattern covers it).
func Authorize(p *Principal, name string, action tenant.Action) bool {
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

func hasAction(as []tenant.Action, a tenant.Action) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// covers reports whether every name matched by filter f is matched by
// pattern p (for a plain name, this is Match).
func covers(p, f string) bool {
	if !address.IsWildcard(f) {
		return address.Match(p, f)
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
