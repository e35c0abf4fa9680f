package hono

import (
	"context"
	"slices"
)

// groupLister is implemented by *registry.Store (registry/groups.go): the
// members of a device group, from the registry's in-memory index.
type groupLister interface {
	GroupMembers(ctx context.Context, tenantName, group string) ([]string, error)
}

// groupGateways returns the gateways of a device through its viaGroups:
// the members (memberOf) of each group, group by group in the device's
// order, each group's members sorted by id. Nil when the registry cannot
// list groups. A group the registry fails to list is skipped (logged):
// the command then goes to another gateway, or is released.
func (s *Service) groupGateways(ctx context.Context, tenantName string, groups []string) []string {
	gl, ok := s.reg.(groupLister)
	if !ok || len(groups) == 0 {
		return nil
	}
	var out []string
	seen := make([]string, 0, len(groups))
	for _, g := range groups {
		if slices.Contains(seen, g) {
			continue
		}
		seen = append(seen, g)
		ms, err := gl.GroupMembers(ctx, tenantName, g)
		if err != nil {
			s.log.Debug("group members not listed", "tenant", tenantName, "group", g, "err", err)
			continue
		}
		out = append(out, ms...)
	}
	return out
}
