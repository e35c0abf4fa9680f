package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tidwall/btree"

	"github.com/throngmq/throng/internal/tenant"
)

// Tenants is what the store needs to know about tenants (*tenant.Store):
// existence, and Hono's registration-limits.
type Tenants interface {
	Tenant(name string) (*tenant.Tenant, bool)
}

// Store keeps devices and credentials in three KV buckets of the system
// account (docs/registry.md, "Storage"):
//
//	throng_devices      <tenant>.<id>               → storedDevice (JSON)
//	throng_credentials  <tenant>.<id>               → storedCredentials (JSON, with hashes)
//	throng_authids      <tenant>.<type>.<b64 auth-id> → device id
//
// Reads of one device, its credentials and Lookup are KV gets. Paging and
// counting use an in-memory index per tenant (ordered ids in a counted
// B-tree, and the gateway relations) that one goroutine, the devices
// watch, builds at Open and keeps current with every node's writes. A
// writer waits until its own watch has applied its write, so it reads its
// own writes in the index too.
//
// Goroutines: two, the devices watch (the index's only writer) and the
// credentials watch; Close stops both and waits. Lock order: mu, then
// cache.mu.
type Store struct {
	js                   jetstream.JetStream
	devs, creds, authIDs jetstream.KeyValue
	streams              map[string]jetstream.Stream // the buckets' streams, by bucket
	tenants              Tenants
	log                  *slog.Logger
	cache                *lookupCache

	devWatch, credWatch jetstream.KeyWatcher
	loaded              chan struct{} // closed when the index holds every device stored at Open
	done                chan struct{} // closed by Close
	closeOnce           sync.Once
	wg                  sync.WaitGroup // the watch goroutines

	// writeLocks serialize this node's credentials writes per device
	// (striped by a hash of tenant and id): two racing PUTs of one device
	// could otherwise release an index key the winning set holds.
	writeLocks [64]sync.Mutex

	mu        sync.RWMutex
	index     map[string]*tenantIndex // by tenant; written only by the devices watch; guarded by mu
	applied   uint64                  // the last devices-bucket revision the watch applied; guarded by mu
	appliedCh chan struct{}           // closed (and replaced) when applied moves and someone waits; guarded by mu
	waiting   bool                    // appliedCh was handed out; guarded by mu
	onChange  []func(tenantName, deviceID string)
}

// tenantIndex is one tenant's in-memory index. Devices with none of via,
// viaGroups and memberOf cost only their id in ids.
type tenantIndex struct {
	ids      *btree.BTreeG[string]          // device ids in byte order
	links    map[string]*links              // device id → its gateway relations (only devices that have some)
	viaRef   map[string]int                 // device id → how many other devices name it in via
	groupRef map[string]int                 // group → how many devices name it in viaGroups
	members  map[string]map[string]struct{} // group → devices that are memberOf it
	gw       *btree.BTreeG[string]          // the gateways (isGateway), kept by refresh
}

type links struct {
	Via       []string `json:"via,omitempty"`
	ViaGroups []string `json:"viaGroups,omitempty"`
	MemberOf  []string `json:"memberOf,omitempty"`
}

func newIDTree() *btree.BTreeG[string] {
	return btree.NewBTreeGOptions(func(a, b string) bool { return a < b }, btree.Options{NoLocks: true, Degree: 64})
}

func newTenantIndex() *tenantIndex {
	return &tenantIndex{
		ids:      newIDTree(),
		gw:       newIDTree(),
		links:    map[string]*links{},
		viaRef:   map[string]int{},
		groupRef: map[string]int{},
		members:  map[string]map[string]struct{}{},
	}
}

// storedDevice is the value in the devices bucket: the Hono resource and
// an incarnation, a random id given at creation, that credentials carry
// too: credentials left over from an earlier device of the same id (a
// SetCredentials racing a DeleteDevice) do not belong to a new one.
type storedDevice struct {
	Device
	Inc string `json:"inc"`
}

// storedCredentials is the value in the credentials bucket.
type storedCredentials struct {
	Inc         string       `json:"inc"`
	Credentials []Credential `json:"credentials"`
}

// purgeMarker is the value of a tenant's marker key in the devices bucket,
// written by DeleteDevices after it purged the tenant's keys: a purge
// leaves nothing that watches see, the marker tells them to drop the
// tenant's index.
var purgeMarker = []byte("purged")

// Option adjusts Open.
type Option func(*openOptions)

type openOptions struct{ replicas int }

// WithReplicas sets the replica count of the buckets (engine.Replicas;
// default 1).
func WithReplicas(n int) Option { return func(o *openOptions) { o.replicas = n } }

// Open creates the buckets if needed and loads the indexes. nc must be a
// connection to the engine's system account. The log may be nil.
func Open(ctx context.Context, nc *nats.Conn, tenants Tenants, log *slog.Logger, opts ...Option) (*Store, error) {
	oo := openOptions{replicas: 1}
	for _, o := range opts {
		o(&oo)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s := &Store{
		js:        js,
		tenants:   tenants,
		log:       log,
		done:      make(chan struct{}),
		loaded:    make(chan struct{}),
		index:     map[string]*tenantIndex{},
		appliedCh: make(chan struct{}),
		cache:     newLookupCache(defaultCacheSize),
		streams:   map[string]jetstream.Stream{},
	}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{bucketDevices, &s.devs}, {bucketCredentials, &s.creds}, {bucketAuthIDs, &s.authIDs}} {
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
			return nil, fmt.Errorf("registry: bucket %s: %w", b.name, err)
		}
		*b.kv = kv
		st, err := js.Stream(ctx, "KV_"+b.name)
		if err != nil {
			return nil, fmt.Errorf("registry: bucket %s: %w", b.name, err)
		}
		s.streams[b.name] = st
	}
	// The devices watch carries values: the gateway relations (via,
	// viaGroups, memberOf) are in them. Initial values arrive before the
	// nil marker; after it the index holds every stored device. Loading a
	// million devices takes seconds (docs/registry.md): it goes on in the
	// background, and only what needs the index (Devices, DeviceCount, the
	// max-devices check, a writer waiting for its own write) waits for it;
	// Lookup, Device and Credentials are served at once.
	w, err := s.devs.WatchAll(context.Background())
	if err != nil {
		return nil, err
	}
	s.devWatch = w
	// Credentials: only changes matter (for OnCredentialsChange), and only
	// their keys.
	cw, err := s.creds.WatchAll(context.Background(), jetstream.MetaOnly(), jetstream.UpdatesOnly())
	if err != nil {
		_ = w.Stop()
		return nil, err
	}
	s.credWatch = cw
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		start := time.Now()
		n := 0
		initial := true
		for e := range w.Updates() {
			if e == nil {
				if initial {
					initial = false
					close(s.loaded)
					log.Info("registry index loaded", "devices", n, "took", time.Since(start).Round(time.Millisecond))
				}
				continue
			}
			if initial {
				n++
			}
			s.applyDevice(e, initial)
		}
	}()
	go func() {
		defer s.wg.Done()
		for e := range cw.Updates() {
			if e == nil {
				continue
			}
			if t, id, ok := splitDeviceKey(e.Key()); ok && id != "" {
				s.cache.invalidate(t, id)
				s.fire(t, id)
			}
		}
	}()
	return s, nil
}

// Loaded is closed once the index holds every device stored when Open
// was called (Open returns before).
func (s *Store) Loaded() <-chan struct{} { return s.loaded }

// waitLoaded waits for the initial load of the index.
func (s *Store) waitLoaded(ctx context.Context) error {
	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return errors.New("registry: store closed")
	}
}

// Close stops the watches.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		if s.devWatch != nil {
			_ = s.devWatch.Stop()
		}
		if s.credWatch != nil {
			_ = s.credWatch.Stop()
		}
	})
	s.wg.Wait()
}

// OnCredentialsChange registers a function called (on every node, from
// the store's watch) when a device's credentials or registration change or
// are deleted, so that authentication caches drop what they hold for it.
// It runs on the watch goroutine: it must not block, nor call the Store's
// write methods.
func (s *Store) OnCredentialsChange(f func(tenantName, deviceID string)) {
	s.mu.Lock()
	s.onChange = append(s.onChange, f)
	s.mu.Unlock()
}

func (s *Store) fire(tenantName, id string) {
	s.mu.RLock()
	hooks := s.onChange
	s.mu.RUnlock()
	for _, f := range hooks {
		f(tenantName, id)
	}
}

// applyDevice applies one entry of the devices watch to the index;
// entries of the initial load are no changes (no hooks, no invalidation).
func (s *Store) applyDevice(e jetstream.KeyValueEntry, initial bool) {
	t, id, ok := splitDeviceKey(e.Key())
	deleted := e.Operation() != jetstream.KeyValuePut
	var fired []string
	s.mu.Lock()
	if ok {
		ti := s.index[t]
		switch {
		case id == "" && !deleted && bytes.Equal(e.Value(), purgeMarker):
			// DeleteDevices: everything of the tenant applied so far is gone.
			s.cache.invalidate(t, "")
			if ti != nil && len(s.onChange) > 0 {
				ti.ids.Scan(func(id string) bool { fired = append(fired, id); return true })
			}
			delete(s.index, t)
		case id == "":
		case deleted:
			if ti != nil {
				ti.ids.Delete(id)
				ti.refresh(ti.setLinks(id, nil), id)
				if ti.ids.Len() == 0 {
					delete(s.index, t)
				}
			}
			if !initial {
				fired = append(fired, id)
			}
		default:
			if ti == nil {
				ti = newTenantIndex()
				s.index[t] = ti
			}
			if _, ok := ti.ids.Get(id); !ok {
				// A copy: id points into the entry's subject, which
				// holds the bucket's prefix too.
				ti.ids.Set(strings.Clone(id))
			}
			ti.refresh(ti.setLinks(id, parseLinks(e.Value())), id)
			if !initial {
				fired = append(fired, id)
			}
		}
	}
	if e.Revision() > s.applied {
		s.applied = e.Revision()
	}
	if s.waiting {
		close(s.appliedCh)
		s.appliedCh = make(chan struct{})
		s.waiting = false
	}
	hooks := s.onChange
	s.mu.Unlock()
	if initial {
		return
	}
	for _, id := range fired {
		s.cache.invalidate(t, id)
		for _, f := range hooks {
			f(t, id)
		}
	}
}

// parseLinks decodes the gateway relations of a stored device; most
// devices have none, and a byte search skips their JSON decoding.
func parseLinks(v []byte) *links {
	if !bytes.Contains(v, []byte(`"via`)) && !bytes.Contains(v, []byte(`"memberOf"`)) {
		return nil
	}
	var l links
	if json.Unmarshal(v, &l) != nil || len(l.Via)+len(l.ViaGroups)+len(l.MemberOf) == 0 {
		return nil
	}
	return &l
}

// setLinks replaces a device's gateway relations (nil: none), keeps the
// reference counts behind isGateway and returns the other devices whose
// gateway status may have changed.
func (ti *tenantIndex) setLinks(id string, l *links) []string {
	old := ti.links[id]
	if old == nil && l == nil {
		return nil
	}
	var affected []string
	// A group's members change status only when its count of naming
	// devices passes through 0, 1 or 2 (a member's own naming does not
	// count for it).
	groupMoved := func(g string, before int) {
		if after := ti.groupRef[g]; before <= 1 || after <= 1 {
			for m := range ti.members[g] {
				affected = append(affected, m)
			}
		}
	}
	if old != nil {
		for _, g := range uniq(old.Via) {
			if g != id {
				if ti.viaRef[g]--; ti.viaRef[g] <= 0 {
					delete(ti.viaRef, g)
				}
				affected = append(affected, g)
			}
		}
		for _, g := range uniq(old.ViaGroups) {
			before := ti.groupRef[g]
			if ti.groupRef[g]--; ti.groupRef[g] <= 0 {
				delete(ti.groupRef, g)
			}
			groupMoved(g, before)
		}
		for _, g := range uniq(old.MemberOf) {
			delete(ti.members[g], id)
			if len(ti.members[g]) == 0 {
				delete(ti.members, g)
			}
		}
		delete(ti.links, id)
	}
	if l == nil {
		return affected
	}
	ti.links[id] = l
	for _, g := range uniq(l.Via) {
		if g != id {
			ti.viaRef[g]++
			affected = append(affected, g)
		}
	}
	for _, g := range uniq(l.ViaGroups) {
		before := ti.groupRef[g]
		ti.groupRef[g]++
		groupMoved(g, before)
	}
	for _, g := range uniq(l.MemberOf) {
		m := ti.members[g]
		if m == nil {
			m = map[string]struct{}{}
			ti.members[g] = m
		}
		m[id] = struct{}{}
	}
	return affected
}

// refresh brings the gateway tree up to date for the given devices.
func (ti *tenantIndex) refresh(ids []string, id string) {
	for _, x := range append(ids, id) {
		if ti.isGateway(x) {
			ti.gw.Set(x)
		} else {
			ti.gw.Delete(x)
		}
	}
}

// gwRank returns how many gateways sort at or before id: a binary search
// over the counted tree, O(log² n).
func (ti *tenantIndex) gwRank(id string) int {
	lo, hi := 0, ti.gw.Len()
	for lo < hi {
		mid := (lo + hi) / 2
		if g, _ := ti.gw.GetAt(mid); g <= id {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

func uniq(s []string) []string {
	if len(s) < 2 {
		return s
	}
	out := make([]string, 0, len(s))
	seen := make(map[string]struct{}, len(s))
	for _, v := range s {
		if _, ok := seen[v]; !ok {
			seen[v] = struct{}{}
			out = append(out, v)
		}
	}
	return out
}

// isGateway: a device is a gateway when another device names it in via,
// or when it is a member of a group that another device names in
// viaGroups. Only registered devices are gateways.
func (ti *tenantIndex) isGateway(id string) bool {
	if _, ok := ti.ids.Get(id); !ok {
		return false
	}
	if ti.viaRef[id] > 0 {
		return true
	}
	l := ti.links[id]
	if l == nil {
		return false
	}
	for _, g := range l.MemberOf {
		n := ti.groupRef[g]
		for _, own := range l.ViaGroups {
			if own == g {
				n-- // its own viaGroups entry does not count
				break
			}
		}
		if n > 0 {
			return true
		}
	}
	return false
}

// waitApplied returns when the devices watch has applied revision rev,
// so that a writer sees its own write in the index.
func (s *Store) waitApplied(ctx context.Context, rev uint64) error {
	for {
		s.mu.Lock()
		if s.applied >= rev {
			s.mu.Unlock()
			return nil
		}
		ch := s.appliedCh
		s.waiting = true
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return errors.New("registry: store closed")
		}
	}
}

// deleteKey deletes a key of a bucket (leaving a delete marker, as
// kv.Delete) and returns the marker's revision; lastRev, when not 0, must
// be the key's current revision.
func (s *Store) deleteKey(ctx context.Context, bucket, key string, lastRev uint64) (uint64, error) {
	m := nats.NewMsg("$KV." + bucket + "." + key)
	m.Header.Set("KV-Operation", "DEL")
	if lastRev != 0 {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(lastRev, 10))
	}
	ack, err := s.js.PublishMsg(ctx, m)
	if err != nil {
		if isWrongLastSeq(err) {
			return 0, jetstream.ErrKeyExists
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// purgeKey removes a key's messages up to revision rev, leaving no delete
// marker behind (a marker stays in the engine, with per-subject state, for
// good). Used for credentials and auth-id index keys, whose deletion no
// watch needs to see: a device's deletion is announced by its own delete
// marker in the devices bucket. A write after rev survives.
func (s *Store) purgeKey(ctx context.Context, bucket, key string, rev uint64) error {
	return s.streams[bucket].Purge(ctx, jetstream.WithPurgeSubject("$KV."+bucket+"."+key), jetstream.WithPurgeSequence(rev+1))
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// writeLock returns the stripe lock of a device.
func (s *Store) writeLock(tenantName, id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(tenantName))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return &s.writeLocks[h.Sum32()%uint32(len(s.writeLocks))]
}

// tenantOK checks that a tenant exists.
func (s *Store) tenantOK(name string) (*tenant.Tenant, error) {
	if s.tenants == nil {
		return nil, nil
	}
	t, ok := s.tenants.Tenant(name)
	if !ok {
		return nil, fmt.Errorf("tenant %q %w", name, ErrNotFound)
	}
	return t, nil
}

func version(rev uint64) string { return strconv.FormatUint(rev, 10) }

// checkVersion compares an If-Match value with a resource's revision
// ("*" matches any). Revisions start at 1: "0" is the version of a
// credentials set never written.
func checkVersion(ifMatch string, rev uint64) error {
	if ifMatch == "" || ifMatch == "*" {
		return nil
	}
	if ifMatch != version(rev) {
		return fmt.Errorf("%w: resource version is %d, If-Match %q", ErrVersionMismatch, rev, ifMatch)
	}
	return nil
}
