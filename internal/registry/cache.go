package registry

import (
	"container/list"
	"sync"
)

// lookupCache keeps recent Lookup results: a Lookup is three requests to
// the engine (some 230 µs of CPU each on the 2-core test machine, see
// docs/registry.md), and a reconnect storm looks up the same devices
// again and again. Entries are dropped by device when the watch (any
// node's write) or the writer itself reports a change, and an epoch
// guards against a Lookup that read old data inserting it after the
// invalidation: a result is cached only if no invalidation happened since
// its Lookup began. Only found identities are cached.
type lookupCache struct {
	mu       sync.Mutex
	max      int
	epoch    uint64                   // bumped by every invalidation
	ll       *list.List               // front = most recent; values *cacheEntry
	byKey    map[string]*list.Element // tenant \x00 type \x00 auth-id
	byDevice map[string][]string      // tenant \x00 device id → keys
}

type cacheEntry struct {
	key, dev string
	id       *Identity
}

const defaultCacheSize = 16384

func newLookupCache(max int) *lookupCache {
	return &lookupCache{max: max, ll: list.New(), byKey: map[string]*list.Element{}, byDevice: map[string][]string{}}
}

func cacheKey(tenantName, typ, authID string) string {
	return tenantName + "\x00" + typ + "\x00" + authID
}
func cacheDev(tenantName, id string) string { return tenantName + "\x00" + id }

func (c *lookupCache) get(key string) (*Identity, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*cacheEntry).id, c.epoch
	}
	return nil, c.epoch
}

func (c *lookupCache) put(key string, epoch uint64, idn *Identity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max <= 0 || epoch != c.epoch {
		return
	}
	if _, ok := c.byKey[key]; ok {
		return
	}
	dev := cacheDev(idn.Tenant, idn.DeviceID)
	c.byKey[key] = c.ll.PushFront(&cacheEntry{key: key, dev: dev, id: idn})
	c.byDevice[dev] = append(c.byDevice[dev], key)
	for c.ll.Len() > c.max {
		c.removeLocked(c.ll.Back().Value.(*cacheEntry))
	}
}

func (c *lookupCache) removeLocked(e *cacheEntry) {
	if el, ok := c.byKey[e.key]; ok {
		c.ll.Remove(el)
		delete(c.byKey, e.key)
	}
	keys := c.byDevice[e.dev]
	for i, k := range keys {
		if k == e.key {
			keys = append(keys[:i], keys[i+1:]...)
			break
		}
	}
	if len(keys) == 0 {
		delete(c.byDevice, e.dev)
	} else {
		c.byDevice[e.dev] = keys
	}
}

// invalidate drops a device's entries; id "" drops the whole cache.
func (c *lookupCache) invalidate(tenantName, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	if id == "" {
		c.ll.Init()
		clear(c.byKey)
		clear(c.byDevice)
		return
	}
	for _, k := range c.byDevice[cacheDev(tenantName, id)] {
		if el, ok := c.byKey[k]; ok {
			c.ll.Remove(el)
			delete(c.byKey, k)
		}
	}
	delete(c.byDevice, cacheDev(tenantName, id))
}
