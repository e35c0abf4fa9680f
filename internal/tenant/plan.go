package tenant

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Plans (DESIGN.md §6, docs/security.md "Plans and quotas"): a plan is a
// named, reusable set of limits; a tenant names one in Tenant.Plan, and
// each field its own Limits leaves zero comes from the plan. Plans live
// in their own bucket; a changed plan reaches the tenants' cached
// effective limits through the watch, on every node, so it applies to
// the next message or connection without touching the tenants.

const bucketPlans = "throng_plans"

// Plan is a named set of limits.
type Plan struct {
	Name    string    `json:"name"`
	Limits  Limits    `json:"limits"`
	Created time.Time `json:"created"`
}

// Validate checks a plan (names follow the tenant name rule).
func (p *Plan) Validate() error {
	if err := ValidateName(p.Name); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	return p.Limits.Validate()
}

// Over returns l with each zero field taken from base: a tenant's own
// limits over its plan's. Burst is taken with the rate it belongs to.
func (l Limits) Over(base Limits) Limits {
	pick := func(a, b int) int {
		if a != 0 {
			return a
		}
		return b
	}
	pickf := func(a, b float64) float64 {
		if a != 0 {
			return a
		}
		return b
	}
	out := l
	out.MaxConnections = pick(l.MaxConnections, base.MaxConnections)
	out.MaxAddresses = pick(l.MaxAddresses, base.MaxAddresses)
	out.MaxUsers = pick(l.MaxUsers, base.MaxUsers)
	out.MaxMessageSize = pick(l.MaxMessageSize, base.MaxMessageSize)
	if l.MaxStoredBytes == 0 {
		out.MaxStoredBytes = base.MaxStoredBytes
	}
	out.MaxMessagesInPerSecond = pickf(l.MaxMessagesInPerSecond, base.MaxMessagesInPerSecond)
	if l.MaxMessagesInPerSecond == 0 {
		// The burst goes with the rate: a tenant's own rate keeps its own
		// burst (0: one second's worth), not the plan's.
		out.Burst = pick(l.Burst, base.Burst)
	}
	out.MaxMessagesInPerSecondPerConnection = pickf(l.MaxMessagesInPerSecondPerConnection, base.MaxMessagesInPerSecondPerConnection)
	out.MaxMessagesOutPerSecond = pickf(l.MaxMessagesOutPerSecond, base.MaxMessagesOutPerSecond)
	out.MaxSessions = pick(l.MaxSessions, base.MaxSessions)
	out.MaxRetained = pick(l.MaxRetained, base.MaxRetained)
	return out
}

// Effective is the limits that apply to the tenant: its own over its
// plan's. Tenants read from the Store have them; others have their own.
func (t *Tenant) Effective() Limits {
	if t.eff != nil {
		return *t.eff
	}
	return t.Limits
}

// EffectiveLimits is Effective without the copy, for the publish path
// (a copy of Limits per message showed in profiles). Tenants from the
// Store are replaced, never changed, so the limits may be read but must
// not be modified.
func (t *Tenant) EffectiveLimits() *Limits {
	if t.eff != nil {
		return t.eff
	}
	return &t.Limits
}

// withPlanLocked returns t with its effective limits from the cached
// plans; s.mu is held.
func (s *Store) withPlanLocked(t *Tenant) *Tenant {
	eff := t.Limits
	if p, ok := s.planMap[t.Plan]; ok && t.Plan != "" {
		eff = t.Limits.Over(p.Limits)
	}
	t.eff = &eff
	return t
}

// replanLocked gives the tenants of plan name their new effective
// limits. Cached tenants are read without the lock, so each is replaced
// by a copy.
func (s *Store) replanLocked(name string) {
	for n, t := range s.tenantMap {
		if t.Plan == name {
			cp := *t
			s.tenantMap[n] = s.withPlanLocked(&cp)
		}
	}
}

func (s *Store) applyPlan(key string, deleted bool, value []byte) {
	var p Plan
	if !deleted && json.Unmarshal(value, &p) != nil {
		return
	}
	s.mu.Lock()
	if deleted {
		delete(s.planMap, key)
	} else {
		s.planMap[p.Name] = &p
	}
	s.replanLocked(key)
	var names []string
	for n, t := range s.tenantMap {
		if t.Plan == key {
			names = append(names, n)
		}
	}
	hooks := s.onTenant
	s.mu.Unlock()
	// The plan's tenants' effective limits changed: what watches tenants
	// (the router's store limits) hears of it as of a tenant change.
	for _, n := range names {
		for _, f := range hooks {
			f(n)
		}
	}
}

// Plan returns a plan by name.
func (s *Store) Plan(name string) (*Plan, bool) {
	s.mu.RLock()
	p, ok := s.planMap[name]
	s.mu.RUnlock()
	return p, ok
}

// Plans lists the plans sorted by name.
func (s *Store) Plans() []*Plan {
	s.mu.RLock()
	out := make([]*Plan, 0, len(s.planMap))
	for _, p := range s.planMap {
		out = append(out, p)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// PutPlan creates (create) or replaces a plan; the new limits apply to
// its tenants at once on this node and through the watch on the others.
func (s *Store) PutPlan(ctx context.Context, p *Plan, create bool) error {
	if err := p.Validate(); err != nil {
		return err
	}
	old, exists := s.Plan(p.Name)
	switch {
	case create && exists:
		return fmt.Errorf("plan %q %w", p.Name, ErrExists)
	case !create && !exists:
		return fmt.Errorf("plan %q %w", p.Name, ErrNotFound)
	case exists:
		p.Created = old.Created
	case p.Created.IsZero():
		p.Created = time.Now().UTC()
	}
	b, _ := json.Marshal(p)
	var err error
	if create {
		_, err = s.plans.Create(ctx, p.Name, b)
	} else {
		_, err = s.plans.Put(ctx, p.Name, b)
	}
	if err != nil {
		return mapKVErr(err, fmt.Sprintf("plan %q", p.Name))
	}
	s.mu.Lock()
	s.planMap[p.Name] = p
	s.replanLocked(p.Name)
	s.mu.Unlock()
	return nil
}

// DeletePlan removes a plan no tenant names (ErrConflict otherwise).
func (s *Store) DeletePlan(ctx context.Context, name string) error {
	if _, ok := s.Plan(name); !ok {
		return fmt.Errorf("plan %q %w", name, ErrNotFound)
	}
	var users []string
	for _, t := range s.Tenants() {
		if t.Plan == name {
			users = append(users, t.Name)
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("%w: plan %q is the plan of tenants %v", ErrConflict, name, users)
	}
	if err := s.plans.Delete(ctx, name); err != nil {
		return mapKVErr(err, fmt.Sprintf("plan %q", name))
	}
	s.mu.Lock()
	delete(s.planMap, name)
	s.mu.Unlock()
	return nil
}

// checkPlan refuses a tenant naming a plan that does not exist.
func (s *Store) checkPlan(t *Tenant) error {
	if t.Plan == "" {
		return nil
	}
	if _, ok := s.Plan(t.Plan); !ok {
		return fmt.Errorf("%w: plan %q does not exist", ErrInvalid, t.Plan)
	}
	return nil
}
