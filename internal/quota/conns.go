package quota

import (
	"sync"
	"sync/atomic"
)

// Conns counts a tenant's connections on this node, all protocols
// together, against its maxConnections. Acquire checks and counts in one
// step, so two connections racing for the last place cannot both get it.
type Conns struct {
	tenants sync.Map // tenant name → *atomic.Int64
}

func (c *Conns) counter(tenant string) *atomic.Int64 {
	if n, ok := c.tenants.Load(tenant); ok {
		return n.(*atomic.Int64)
	}
	n, _ := c.tenants.LoadOrStore(tenant, new(atomic.Int64))
	return n.(*atomic.Int64)
}

// Acquire counts one more connection of tenant unless limit (> 0) of
// them are already counted; limit <= 0 is unlimited. Each true is paired
// with one Release.
func (c *Conns) Acquire(tenant string, limit int) bool {
	n := c.counter(tenant)
	for {
		cur := n.Load()
		if limit > 0 && cur >= int64(limit) {
			return false
		}
		if n.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// Release uncounts a connection counted by Acquire.
func (c *Conns) Release(tenant string) { c.counter(tenant).Add(-1) }

// Count is the number of tenant's connections counted now.
func (c *Conns) Count(tenant string) int64 { return c.counter(tenant).Load() }
