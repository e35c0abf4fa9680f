package registry

import (
	"context"
	"slices"

	"github.com/throngmq/throng/internal/tenant"
)

// GroupMembers returns the devices of a tenant that are members
// (memberOf) of a group, sorted by id: the gateways of a device whose
// viaGroups names the group. It reads this node's index (which every
// node's writes reach through the devices watch), waiting for its
// initial load; O(members).
func (s *Store) GroupMembers(ctx context.Context, tenantName, group string) ([]string, error) {
	if err := s.waitLoaded(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	var out []string
	if ti := s.index[tenantName]; ti != nil {
		out = make([]string, 0, len(ti.members[group]))
		for id := range ti.members[group] {
			out = append(out, id)
		}
	}
	s.mu.RUnlock()
	slices.Sort(out)
	return out, nil
}

// Tenant returns a tenant as the registry knows it (its Tenants source):
// the Tenant API of Hono's device registry, from which the protocol
// adapters read a tenant's defaults, limits and adapter settings.
func (s *Store) Tenant(name string) (*tenant.Tenant, bool) {
	if s.tenants == nil {
		return nil, false
	}
	return s.tenants.Tenant(name)
}
