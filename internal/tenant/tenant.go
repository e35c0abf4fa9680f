// Package tenant holds throng's platform state: tenants, their address
// definitions and their users. The state lives in JetStream key-value
// buckets of the engine's system account, so it survives restarts and is
// shared by every node; each node keeps a read cache fed by a bucket watch,
// so lookups on hot paths (publish, connect) never go to the engine.
package tenant

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

// Default is the tenant that always exists.
const Default = "default"

// Sentinel errors; front-ends and the admin API map them to protocol errors.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrInvalid  = errors.New("invalid")
	ErrLimit    = errors.New("limit exceeded")
	// ErrConflict: the change contradicts the current state (an
	// address's new limits below what it holds now).
	ErrConflict = errors.New("conflict")
)

// Tenant is an isolated namespace.
type Tenant struct {
	Name string `json:"name"`
	// Strict refuses names that are neither defined nor matched by an
	// auto-create rule, instead of treating them as topic space.
	Strict     bool             `json:"strict"`
	AutoCreate []AutoCreateRule `json:"autoCreate"`
	Limits     Limits           `json:"limits"`
	// Plan names a plan (plan.go) whose limits apply where Limits leaves
	// a field zero.
	Plan    string    `json:"plan,omitempty"`
	Created time.Time `json:"created"`
	// eff is Limits over the plan's, set by the store's cache (plan.go).
	eff *Limits
	// IoT, when set, makes the tenant IoT-enabled: its Eclipse Hono
	// tenant configuration (trust anchors, adapters, limits), served by
	// the device registry's /v1/tenants API.
	IoT *IoT `json:"iot,omitempty"`
	// AnomalyThresholds are the tenant's own thresholds of the anomaly
	// finder (internal/metrics.Thresholds as JSON), set with PUT
	// /api/tenants/{t}/anomaly-thresholds; empty: the node's.
	AnomalyThresholds json.RawMessage `json:"anomalyThresholds,omitempty"`
}

// AutoCreateRule defines an address on first use of a matching name.
type AutoCreateRule struct {
	// Pattern is an MQTT-style filter ("jobs/#", "devices/+/inbox").
	Pattern    string         `json:"pattern"`
	Type       address.Type   `json:"type"`
	Limits     address.Limits `json:"limits,omitempty"`
	DeadLetter string         `json:"deadLetter,omitempty"`
}

// Limits is a tenant's plan. Zero means unlimited.
type Limits struct {
	MaxConnections int `json:"maxConnections,omitempty"`
	MaxAddresses   int `json:"maxAddresses,omitempty"`
	MaxUsers       int `json:"maxUsers,omitempty"`
	// MaxMessageSize, when set, replaces the node's maxMessageSize for
	// the tenant's clients (larger or smaller; at most 256 MiB).
	MaxMessageSize int   `json:"maxMessageSize,omitempty"`
	MaxStoredBytes int64 `json:"maxStoredBytes,omitempty"`
	// MaxMessagesInPerSecond is the tenant's publish rate, a token
	// bucket refilled at this rate up to Burst (default one second's
	// worth). Over it a message is refused with the protocol's quota
	// error (docs/security.md "Plans and quotas").
	MaxMessagesInPerSecond float64 `json:"maxMessagesInPerSecond,omitempty"`
	Burst                  int     `json:"burst,omitempty"`
	// MaxMessagesInPerSecondPerConnection limits each connection of the
	// tenant (burst one second's worth).
	MaxMessagesInPerSecondPerConnection float64 `json:"maxMessagesInPerSecondPerConnection,omitempty"`
	// MaxMessagesOutPerSecond is the tenant's delivery rate (a token
	// bucket, burst one second's worth): stored deliveries (queues,
	// topics, durable subscriptions) are slowed down to it, live
	// at-most-once ones (multicast, MQTT QoS 0) beyond it are dropped.
	MaxMessagesOutPerSecond float64 `json:"maxMessagesOutPerSecond,omitempty"`
	// MaxSessions bounds the tenant's persistent MQTT sessions, stored
	// ones included (a new one beyond it: CONNACK quota exceeded).
	MaxSessions int `json:"maxSessions,omitempty"`
	// MaxRetained bounds the tenant's retained messages (a retained
	// publish that would add one beyond it is refused; replacing or
	// clearing one always works).
	MaxRetained int `json:"maxRetained,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidateName checks a tenant name: lower-case letters, digits, '-' and
// '_', starting with a letter or digit, at most 63 characters. The rule
// keeps tenant names usable in host names (AMQP open hostname), user
// names (user@tenant) and engine account names.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: tenant name %q (want [a-z0-9][a-z0-9_-]{0,62})", ErrInvalid, name)
	}
	return nil
}

// Validate checks the whole tenant definition.
func (t *Tenant) Validate() error {
	if err := ValidateName(t.Name); err != nil {
		return err
	}
	for i, r := range t.AutoCreate {
		if err := address.ValidateFilter(r.Pattern); err != nil {
			return fmt.Errorf("%w: autoCreate[%d]: %v", ErrInvalid, i, err)
		}
		if !r.Type.Valid() || r.Type == address.Subscription {
			return fmt.Errorf("%w: autoCreate[%d]: type %q (want anycast, multicast, queue or topic)", ErrInvalid, i, r.Type)
		}
		if err := r.Limits.Validate(r.Type); err != nil {
			return fmt.Errorf("%w: autoCreate[%d]: %v", ErrInvalid, i, err)
		}
	}
	if t.Plan != "" {
		if err := ValidateName(t.Plan); err != nil {
			return fmt.Errorf("plan: %w", err)
		}
	}
	return t.Limits.Validate()
}

// Validate checks limits.
func (l Limits) Validate() error {
	if l.MaxConnections < 0 || l.MaxAddresses < 0 || l.MaxUsers < 0 || l.MaxMessageSize < 0 || l.MaxStoredBytes < 0 ||
		l.MaxMessagesInPerSecond < 0 || l.Burst < 0 || l.MaxMessagesInPerSecondPerConnection < 0 ||
		l.MaxSessions < 0 || l.MaxRetained < 0 || l.MaxMessagesOutPerSecond < 0 {
		return fmt.Errorf("%w: limits must not be negative", ErrInvalid)
	}
	if l.MaxMessageSize > message.MaxSize {
		return fmt.Errorf("%w: maxMessageSize %d exceeds the ceiling of %d (256 MiB)", ErrInvalid, l.MaxMessageSize, message.MaxSize)
	}
	return nil
}

// Rule returns the first auto-create rule matching name, if any.
func (t *Tenant) Rule(name string) (AutoCreateRule, bool) {
	for _, r := range t.AutoCreate {
		if address.Match(r.Pattern, name) {
			return r, true
		}
	}
	return AutoCreateRule{}, false
}

// Role is a user's role.
type Role string

const (
	// RoleAdmin administers the whole platform (all tenants); valid in
	// the default tenant only (see auth/role.go).
	RoleAdmin Role = "admin"
	// RoleTenantAdmin administers one tenant and may use all its addresses.
	RoleTenantAdmin Role = "tenant-admin"
	// RoleOperator reads its tenant's resources through the admin API
	// (read-only); on the protocols its permissions apply.
	RoleOperator Role = "operator"
	// RoleApp may use the addresses its permissions allow.
	RoleApp Role = "app"
)

// Action is something a user may do on an address.
type Action string

const (
	ActionSend    Action = "send"
	ActionReceive Action = "receive"
	ActionView    Action = "view"
	ActionManage  Action = "manage"
)

// Permission grants actions on the addresses matching Pattern, an
// MQTT-style filter in which "${user}" and "${client_id}" are replaced by
// the connection's user name and client id.
type Permission struct {
	Pattern string   `json:"pattern"`
	Actions []Action `json:"actions"`
}

// User is an application or operator account within a tenant. The
// password is stored twice, never in clear: as a bcrypt hash (PLAIN and
// HTTP basic authentication) and as a SCRAM-SHA-256 verifier (SASL
// SCRAM-SHA-256). auth.SetPassword sets both.
type User struct {
	Name         string `json:"name"`
	Tenant       string `json:"tenant"`
	PasswordHash string `json:"passwordHash,omitempty"`
	// Scram is nil for users whose password was set before SCRAM support;
	// they can use PLAIN until their password is set again.
	Scram       *ScramCredential `json:"scram,omitempty"`
	Roles       []Role           `json:"roles"`
	Permissions []Permission     `json:"permissions"`
	Created     time.Time        `json:"created"`
}

// ScramCredential is a SCRAM verifier (RFC 5802 section 3): enough to
// check a client's proof and to prove the server's identity, not enough to
// log in as the user. The byte fields are base64 in JSON.
type ScramCredential struct {
	Salt       []byte `json:"salt"`
	Iterations int    `json:"iterations"`
	StoredKey  []byte `json:"storedKey"` // H(HMAC(SaltedPassword, "Client Key"))
	ServerKey  []byte `json:"serverKey"` // HMAC(SaltedPassword, "Server Key")
}

// HasRole reports whether the user has the role.
func (u *User) HasRole(r Role) bool {
	for _, x := range u.Roles {
		if x == r {
			return true
		}
	}
	return false
}

var userRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$`)

// Validate checks a user definition (not its password).
func (u *User) Validate() error {
	if !userRE.MatchString(u.Name) {
		return fmt.Errorf("%w: user name %q (want letters, digits, '.', '_', '~', '-'; no '@')", ErrInvalid, u.Name)
	}
	if len(u.Roles) == 0 {
		return fmt.Errorf("%w: a user needs at least one role", ErrInvalid)
	}
	for _, r := range u.Roles {
		switch r {
		case RoleAdmin:
			// A tenant must not be able to mint a platform administrator.
			if u.Tenant != Default {
				return fmt.Errorf("%w: role %q is the platform administrator's and exists in tenant %q only; a tenant's administrator has role %q",
					ErrInvalid, r, Default, RoleTenantAdmin)
			}
		case RoleTenantAdmin, RoleOperator, RoleApp:
		default:
			return fmt.Errorf("%w: unknown role %q (want admin, tenant-admin, operator or app)", ErrInvalid, r)
		}
	}
	for i, p := range u.Permissions {
		pat := strings.NewReplacer("${user}", "u", "${client_id}", "c").Replace(p.Pattern)
		if err := address.ValidateFilter(pat); err != nil {
			return fmt.Errorf("%w: permissions[%d]: %v", ErrInvalid, i, err)
		}
		if len(p.Actions) == 0 {
			return fmt.Errorf("%w: permissions[%d]: no actions", ErrInvalid, i)
		}
		for _, a := range p.Actions {
			switch a {
			case ActionSend, ActionReceive, ActionView, ActionManage:
			default:
				return fmt.Errorf("%w: permissions[%d]: unknown action %q", ErrInvalid, i, a)
			}
		}
	}
	return nil
}
