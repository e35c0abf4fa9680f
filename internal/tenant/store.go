package tenant

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
)

// Bucket names in the system account.
const (
	bucketTenants   = "throng_tenants"
	bucketUsers     = "throng_users"
	bucketAddresses = "throng_addresses"
)

// Store keeps tenants, users and address definitions in JetStream KV and
// serves reads from a cache that a watch on each bucket keeps current.
// Writes go to the bucket first and then into the cache, so a writer reads
// its own writes at once; other nodes see them when their watch delivers.
type Store struct {
	js                    jetstream.JetStream
	tenants, users, addrs jetstream.KeyValue
	plans                 jetstream.KeyValue // plan.go
	log                   *slog.Logger

	mu        sync.RWMutex
	tenantMap map[string]*Tenant                     // by name; guarded by mu
	userMap   map[string]map[string]*User            // tenant → name; guarded by mu
	addrMap   map[string]map[string]*address.Address // tenant → name; guarded by mu
	planMap   map[string]*Plan                       // by name (plan.go); guarded by mu

	watchers []jetstream.KeyWatcher
	onAddr   []func(tenant string, a *address.Address, deleted bool) // guarded by mu
	onUser   []func(tenant, name string)                             // guarded by mu
	onTenant []func(name string)                                     // guarded by mu
}

// Option adjusts Open.
type Option func(*openOptions)

type openOptions struct{ replicas int }

// WithReplicas sets the replica count of the buckets (engine.Replicas;
// default 1).
func WithReplicas(n int) Option { return func(o *openOptions) { o.replicas = n } }

// Open creates the buckets if needed, loads their contents and starts
// watching them. nc must be a connection to the system account.
func Open(ctx context.Context, nc *nats.Conn, log *slog.Logger, opts ...Option) (*Store, error) {
	oo := openOptions{replicas: 1}
	for _, o := range opts {
		o(&oo)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s := &Store{
		js:        js,
		log:       log,
		tenantMap: map[string]*Tenant{},
		userMap:   map[string]map[string]*User{},
		addrMap:   map[string]map[string]*address.Address{},
		planMap:   map[string]*Plan{},
	}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{bucketTenants, &s.tenants}, {bucketUsers, &s.users}, {bucketAddresses, &s.addrs}, {bucketPlans, &s.plans}} {
		// An existing bucket is used as it is: in a cluster an update
		// needs every replica's node, and a node restarting while
		// another is down must still start.
		kv, err := js.KeyValue(ctx, b.name)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:   b.name,
				History:  1,
				Storage:  jetstream.FileStorage,
				Replicas: oo.replicas,
			})
		}
		if err != nil {
			return nil, fmt.Errorf("tenant store: bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	// Watch each bucket; the initial values arrive before the nil marker,
	// so after that the cache holds everything stored.
	for _, kv := range []jetstream.KeyValue{s.plans, s.tenants, s.users, s.addrs} {
		w, err := kv.WatchAll(context.Background())
		if err != nil {
			s.Close()
			return nil, err
		}
		s.watchers = append(s.watchers, w)
		for e := range w.Updates() {
			if e == nil {
				break
			}
			s.apply(kv.Bucket(), e)
		}
		go func() {
			for e := range w.Updates() {
				if e != nil {
					s.apply(kv.Bucket(), e)
				}
			}
		}()
	}
	return s, nil
}

// OnAddressChange registers a function called (from the watch goroutine)
// whenever an address definition changes on any node. Register before use.
func (s *Store) OnAddressChange(f func(tenant string, a *address.Address, deleted bool)) {
	s.mu.Lock()
	s.onAddr = append(s.onAddr, f)
	s.mu.Unlock()
}

// OnUserChange registers a function called (from the watch goroutine,
// on every node, after the cache holds the change) whenever a user is
// stored or deleted; it reads the user with User. It must not block.
// The live-connection registry (auth/live.go) closes the connections of
// a user deleted or changed from it.
func (s *Store) OnUserChange(f func(tenant, name string)) {
	s.mu.Lock()
	s.onUser = append(s.onUser, f)
	s.mu.Unlock()
}

// OnTenantChange is OnUserChange for tenants.
func (s *Store) OnTenantChange(f func(name string)) {
	s.mu.Lock()
	s.onTenant = append(s.onTenant, f)
	s.mu.Unlock()
}

// PurgeDeleted removes from the buckets the delete markers of keys
// deleted more than olderThan ago. A deleted key keeps a marker in its
// bucket, and the engine keeps per-subject state for it in memory, so
// every temporary ($temp/) address ever deleted cost the engine some 200
// bytes for good. Watches on other nodes have long seen a marker that old;
// a key written again since is left alone (only messages up to the marker
// are purged). The router calls this periodically (router/prune.go).
func (s *Store) PurgeDeleted(ctx context.Context, olderThan time.Duration) (int, error) {
	limit := time.Now().Add(-olderThan)
	purged := 0
	for _, kv := range []jetstream.KeyValue{s.addrs, s.users, s.tenants} {
		w, err := kv.WatchAll(ctx, jetstream.MetaOnly())
		if err != nil {
			return purged, err
		}
		var old []jetstream.KeyValueEntry
		for e := range w.Updates() {
			if e == nil {
				break
			}
			if e.Operation() != jetstream.KeyValuePut && e.Created().Before(limit) {
				old = append(old, e)
			}
		}
		_ = w.Stop()
		if len(old) == 0 {
			continue
		}
		st, err := s.js.Stream(ctx, "KV_"+kv.Bucket())
		if err != nil {
			return purged, err
		}
		for _, e := range old {
			if err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+kv.Bucket()+"."+e.Key()), jetstream.WithPurgeSequence(e.Revision()+1)); err != nil {
				return purged, fmt.Errorf("tenant store: purge delete marker in %s: %w", kv.Bucket(), err)
			}
			purged++
		}
	}
	return purged, nil
}

// Close stops the watches.
func (s *Store) Close() {
	for _, w := range s.watchers {
		w.Stop()
	}
}

func (s *Store) apply(bucket string, e jetstream.KeyValueEntry) {
	deleted := e.Operation() != jetstream.KeyValuePut
	switch bucket {
	case bucketPlans:
		s.applyPlan(e.Key(), deleted, e.Value())
	case bucketTenants:
		var t Tenant
		if !deleted && json.Unmarshal(e.Value(), &t) != nil {
			return
		}
		s.mu.Lock()
		if deleted {
			delete(s.tenantMap, e.Key())
		} else {
			s.tenantMap[t.Name] = s.withPlanLocked(&t)
		}
		hooks := s.onTenant
		s.mu.Unlock()
		for _, f := range hooks {
			f(e.Key())
		}
	case bucketUsers:
		ten, name, ok := splitKey(e.Key())
		if !ok {
			return
		}
		var u User
		if !deleted && json.Unmarshal(e.Value(), &u) != nil {
			return
		}
		s.mu.Lock()
		if deleted {
			delete(s.userMap[ten], name)
		} else {
			s.putUserLocked(&u)
		}
		hooks := s.onUser
		s.mu.Unlock()
		for _, f := range hooks {
			f(ten, name)
		}
	case bucketAddresses:
		ten, name, ok := splitKey(e.Key())
		if !ok {
			return
		}
		var a address.Address
		if !deleted && json.Unmarshal(e.Value(), &a) != nil {
			return
		}
		s.mu.Lock()
		if deleted {
			delete(s.addrMap[ten], name)
			a.Name = name
		} else {
			s.putAddrLocked(ten, &a)
		}
		hooks := s.onAddr
		s.mu.Unlock()
		for _, f := range hooks {
			f(ten, &a, deleted)
		}
	}
}

func (s *Store) putUserLocked(u *User) {
	m := s.userMap[u.Tenant]
	if m == nil {
		m = map[string]*User{}
		s.userMap[u.Tenant] = m
	}
	m[u.Name] = u
}

func (s *Store) putAddrLocked(tenant string, a *address.Address) {
	m := s.addrMap[tenant]
	if m == nil {
		m = map[string]*address.Address{}
		s.addrMap[tenant] = m
	}
	m[a.Name] = a
}

// Keys are "tenant.<base64url(name)>": KV keys allow only a small
// alphabet, and names (users, addresses) may contain anything.
func key(tenant, name string) string {
	return tenant + "." + base64.RawURLEncoding.EncodeToString([]byte(name))
}

func splitKey(k string) (tenant, name string, ok bool) {
	t, enc, ok := strings.Cut(k, ".")
	if !ok {
		return "", "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", "", false
	}
	return t, string(b), true
}

func mapKVErr(err error, what string) error {
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return fmt.Errorf("%s %w", what, ErrExists)
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("%s %w", what, ErrNotFound)
	}
	return err
}

// ---- tenants

// Tenant returns a tenant by name.
func (s *Store) Tenant(name string) (*Tenant, bool) {
	s.mu.RLock()
	t, ok := s.tenantMap[name]
	s.mu.RUnlock()
	return t, ok
}

// Tenants lists all tenants sorted by name.
func (s *Store) Tenants() []*Tenant {
	s.mu.RLock()
	out := make([]*Tenant, 0, len(s.tenantMap))
	for _, t := range s.tenantMap {
		out = append(out, t)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CreateTenant stores a new tenant; ErrExists if it is already there.
func (s *Store) CreateTenant(ctx context.Context, t *Tenant) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if err := s.checkPlan(t); err != nil {
		return err
	}
	if t.Created.IsZero() {
		t.Created = time.Now().UTC()
	}
	b, _ := json.Marshal(t)
	if _, err := s.tenants.Create(ctx, t.Name, b); err != nil {
		return mapKVErr(err, fmt.Sprintf("tenant %q", t.Name))
	}
	s.mu.Lock()
	s.tenantMap[t.Name] = s.withPlanLocked(t)
	s.mu.Unlock()
	return nil
}

// UpdateTenant replaces an existing tenant's settings.
func (s *Store) UpdateTenant(ctx context.Context, t *Tenant) error {
	if err := t.Validate(); err != nil {
		return err
	}
	old, ok := s.Tenant(t.Name)
	if !ok {
		return fmt.Errorf("tenant %q %w", t.Name, ErrNotFound)
	}
	if t.Plan != old.Plan {
		if err := s.checkPlan(t); err != nil {
			return err
		}
	}
	t.Created = old.Created
	b, _ := json.Marshal(t)
	if _, err := s.tenants.Put(ctx, t.Name, b); err != nil {
		return err
	}
	s.mu.Lock()
	s.tenantMap[t.Name] = s.withPlanLocked(t)
	s.mu.Unlock()
	return nil
}

// DeleteTenant removes a tenant with its users and address definitions.
// The engine data of the tenant is removed by the caller (the router).
func (s *Store) DeleteTenant(ctx context.Context, name string) error {
	if _, ok := s.Tenant(name); !ok {
		return fmt.Errorf("tenant %q %w", name, ErrNotFound)
	}
	for _, u := range s.Users(name) {
		_ = s.DeleteUser(ctx, name, u.Name)
	}
	for _, a := range s.Addresses(name) {
		_ = s.DeleteAddress(ctx, name, a.Name)
	}
	if err := s.tenants.Delete(ctx, name); err != nil {
		return mapKVErr(err, fmt.Sprintf("tenant %q", name))
	}
	s.mu.Lock()
	delete(s.tenantMap, name)
	delete(s.userMap, name)
	delete(s.addrMap, name)
	s.mu.Unlock()
	return nil
}

// ---- users

// User returns a user of a tenant.
func (s *Store) User(tenant, name string) (*User, bool) {
	s.mu.RLock()
	u, ok := s.userMap[tenant][name]
	s.mu.RUnlock()
	return u, ok
}

// Users lists a tenant's users sorted by name.
func (s *Store) Users(tenant string) []*User {
	s.mu.RLock()
	out := make([]*User, 0, len(s.userMap[tenant]))
	for _, u := range s.userMap[tenant] {
		out = append(out, u)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// PutUser creates (create=true, ErrExists if present) or replaces a user.
// The password must already be set by the caller (see auth.SetPassword).
func (s *Store) PutUser(ctx context.Context, u *User, create bool) error {
	if err := u.Validate(); err != nil {
		return err
	}
	t, ok := s.Tenant(u.Tenant)
	if !ok {
		return fmt.Errorf("tenant %q %w", u.Tenant, ErrNotFound)
	}
	if limit := t.Effective().MaxUsers; create && limit > 0 && len(s.Users(u.Tenant)) >= limit {
		return fmt.Errorf("%w: tenant %q allows %d users", ErrLimit, u.Tenant, limit)
	}
	if u.Created.IsZero() {
		u.Created = time.Now().UTC()
	}
	b, _ := json.Marshal(u)
	var err error
	if create {
		_, err = s.users.Create(ctx, key(u.Tenant, u.Name), b)
	} else {
		_, err = s.users.Put(ctx, key(u.Tenant, u.Name), b)
	}
	if err != nil {
		return mapKVErr(err, fmt.Sprintf("user %q", u.Name))
	}
	s.mu.Lock()
	s.putUserLocked(u)
	s.mu.Unlock()
	return nil
}

// DeleteUser removes a user.
func (s *Store) DeleteUser(ctx context.Context, tenant, name string) error {
	if _, ok := s.User(tenant, name); !ok {
		return fmt.Errorf("user %q %w", name, ErrNotFound)
	}
	if err := s.users.Delete(ctx, key(tenant, name)); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.userMap[tenant], name)
	s.mu.Unlock()
	return nil
}

// ---- addresses

// Address returns an address definition.
func (s *Store) Address(tenant, name string) (*address.Address, bool) {
	s.mu.RLock()
	a, ok := s.addrMap[tenant][name]
	s.mu.RUnlock()
	return a, ok
}

// Addresses lists a tenant's addresses sorted by name.
func (s *Store) Addresses(tenant string) []*address.Address {
	s.mu.RLock()
	out := make([]*address.Address, 0, len(s.addrMap[tenant]))
	for _, a := range s.addrMap[tenant] {
		out = append(out, a)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CreateAddress stores a new address definition; ErrExists if present.
func (s *Store) CreateAddress(ctx context.Context, tenant string, a *address.Address) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	t, ok := s.Tenant(tenant)
	if !ok {
		return fmt.Errorf("tenant %q %w", tenant, ErrNotFound)
	}
	if limit := t.Effective().MaxAddresses; limit > 0 && len(s.Addresses(tenant)) >= limit {
		return fmt.Errorf("%w: tenant %q allows %d addresses", ErrLimit, tenant, limit)
	}
	if a.Created.IsZero() {
		a.Created = time.Now().UTC()
	}
	b, _ := json.Marshal(a)
	if _, err := s.addrs.Create(ctx, key(tenant, a.Name), b); err != nil {
		return mapKVErr(err, fmt.Sprintf("address %q", a.Name))
	}
	s.mu.Lock()
	s.putAddrLocked(tenant, a)
	s.mu.Unlock()
	return nil
}

// UpdateAddress replaces an existing address definition (same name and
// type; the caller checks what may change). Its creation time is kept.
func (s *Store) UpdateAddress(ctx context.Context, tenant string, a *address.Address) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	old, ok := s.Address(tenant, a.Name)
	if !ok {
		return fmt.Errorf("address %q %w", a.Name, ErrNotFound)
	}
	if old.Type != a.Type {
		return fmt.Errorf("%w: address %q is a %s; its type cannot change (delete and create it)", ErrInvalid, a.Name, old.Type)
	}
	a.Created = old.Created
	a.AutoCreated = old.AutoCreated
	b, _ := json.Marshal(a)
	if _, err := s.addrs.Put(ctx, key(tenant, a.Name), b); err != nil {
		return err
	}
	s.mu.Lock()
	s.putAddrLocked(tenant, a)
	s.mu.Unlock()
	return nil
}

// DeleteAddress removes an address definition.
func (s *Store) DeleteAddress(ctx context.Context, tenant, name string) error {
	if _, ok := s.Address(tenant, name); !ok {
		return fmt.Errorf("address %q %w", name, ErrNotFound)
	}
	if err := s.addrs.Delete(ctx, key(tenant, name)); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.addrMap[tenant], name)
	s.mu.Unlock()
	return nil
}
