package bridge

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

	"github.com/throngmq/throng/internal/tenant"
)

// bucket holds the definitions in the system account, as the tenant store
// keeps users and addresses: key "<tenant>.<base64url(name)>", value the
// JSON definition (with its secrets: the bucket is the platform's own).
const bucket = "throng_bridges"

// Store keeps bridge definitions in JetStream KV with a read cache that a
// watch keeps current on every node.
type Store struct {
	kv      jetstream.KeyValue
	owners  jetstream.KeyValue // leases (owner.go)
	node    string             // this node's name (the server's)
	w       jetstream.KeyWatcher
	tenants *tenant.Store
	log     *slog.Logger

	mu       sync.RWMutex
	defs     map[string]map[string]*Bridge // tenant → name
	onChange []func(tenantName, name string)
}

// OpenStore creates the bucket if needed and loads it. nc is a connection
// to the system account; tenants checks that a tenant exists.
func OpenStore(ctx context.Context, nc *nats.Conn, tenants *tenant.Store, log *slog.Logger, replicas int) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := openBucket(ctx, js, bucket, replicas)
	if err != nil {
		return nil, fmt.Errorf("bridge store: bucket %s: %w", bucket, err)
	}
	owners, err := openBucket(ctx, js, ownersBucket, replicas)
	if err != nil {
		return nil, fmt.Errorf("bridge store: bucket %s: %w", ownersBucket, err)
	}
	// nc is the node's in-process connection: the server it names is
	// this node, under a name that stays across restarts.
	s := &Store{kv: kv, owners: owners, node: nc.ConnectedServerName(), tenants: tenants, log: log, defs: map[string]map[string]*Bridge{}}
	w, err := kv.WatchAll(context.Background())
	if err != nil {
		return nil, err
	}
	s.w = w
	for e := range w.Updates() {
		if e == nil {
			break
		}
		s.apply(e)
	}
	go func() {
		for e := range w.Updates() {
			if e != nil {
				s.apply(e)
			}
		}
	}()
	return s, nil
}

// openBucket uses an existing bucket as it is and creates a missing one.
// An update is not asked for: in a cluster it needs every replica's node,
// so a node restarting while another is down would wait for that node
// (the tenant and registry stores do the same).
func openBucket(ctx context.Context, js jetstream.JetStream, name string, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, History: 1, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
		})
	}
	return kv, err
}

// Close stops the watch.
func (s *Store) Close() { _ = s.w.Stop() }

// OnChange registers f, called (watch goroutine, any node) after a
// definition was stored or deleted. It must not block.
func (s *Store) OnChange(f func(tenantName, name string)) {
	s.mu.Lock()
	s.onChange = append(s.onChange, f)
	s.mu.Unlock()
}

func key(tenantName, name string) string {
	return tenantName + "." + base64.RawURLEncoding.EncodeToString([]byte(name))
}

func (s *Store) apply(e jetstream.KeyValueEntry) {
	ten, enc, ok := strings.Cut(e.Key(), ".")
	if !ok {
		return
	}
	nb, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return
	}
	name := string(nb)
	var b Bridge
	deleted := e.Operation() != jetstream.KeyValuePut
	if !deleted && json.Unmarshal(e.Value(), &b) != nil {
		return
	}
	s.mu.Lock()
	if deleted {
		delete(s.defs[ten], name)
	} else {
		s.putLocked(ten, &b)
	}
	hooks := s.onChange
	s.mu.Unlock()
	for _, f := range hooks {
		f(ten, name)
	}
}

func (s *Store) putLocked(ten string, b *Bridge) {
	m := s.defs[ten]
	if m == nil {
		m = map[string]*Bridge{}
		s.defs[ten] = m
	}
	m[b.Name] = b
}

// Get returns a definition.
func (s *Store) Get(tenantName, name string) (*Bridge, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, ok := s.defs[tenantName][name]
	return b, ok
}

// List returns a tenant's definitions sorted by name.
func (s *Store) List(tenantName string) []*Bridge {
	s.mu.RLock()
	out := make([]*Bridge, 0, len(s.defs[tenantName]))
	for _, b := range s.defs[tenantName] {
		out = append(out, b)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// All returns every definition by tenant.
func (s *Store) All() map[string][]*Bridge {
	s.mu.RLock()
	tens := make([]string, 0, len(s.defs))
	for t := range s.defs {
		tens = append(tens, t)
	}
	s.mu.RUnlock()
	out := map[string][]*Bridge{}
	for _, t := range tens {
		out[t] = s.List(t)
	}
	return out
}

// Put validates and stores a definition: create=true refuses an existing
// name (tenant.ErrExists), create=false replaces one (tenant.ErrNotFound
// if missing), keeping its creation time.
func (s *Store) Put(ctx context.Context, tenantName string, b *Bridge, create bool) error {
	if _, ok := s.tenants.Tenant(tenantName); !ok {
		return fmt.Errorf("tenant %q %w", tenantName, tenant.ErrNotFound)
	}
	if err := b.Validate(); err != nil {
		return err
	}
	old, exists := s.Get(tenantName, b.Name)
	switch {
	case create && exists:
		return fmt.Errorf("bridge %q %w", b.Name, tenant.ErrExists)
	case !create && !exists:
		return fmt.Errorf("bridge %q %w", b.Name, tenant.ErrNotFound)
	case exists:
		b.Created = old.Created
	default:
		b.Created = time.Now().UTC()
	}
	v, _ := json.Marshal(b)
	var err error
	if create {
		_, err = s.kv.Create(ctx, key(tenantName, b.Name), v)
	} else {
		_, err = s.kv.Put(ctx, key(tenantName, b.Name), v)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("bridge %q %w", b.Name, tenant.ErrExists)
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.putLocked(tenantName, b)
	hooks := s.onChange
	s.mu.Unlock()
	for _, f := range hooks {
		f(tenantName, b.Name)
	}
	return nil
}

// Delete removes a definition (tenant.ErrNotFound if missing).
func (s *Store) Delete(ctx context.Context, tenantName, name string) error {
	if _, ok := s.Get(tenantName, name); !ok {
		return fmt.Errorf("bridge %q %w", name, tenant.ErrNotFound)
	}
	if err := s.kv.Delete(ctx, key(tenantName, name)); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.defs[tenantName], name)
	hooks := s.onChange
	s.mu.Unlock()
	for _, f := range hooks {
		f(tenantName, name)
	}
	return nil
}
