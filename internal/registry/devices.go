package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/tenant"
)

// Hono's paging bounds (search devices: pageSize default 30, 0..200).
const (
	DefaultPageSize = 30
	MaxPageSize     = 200
)

// NewUUID returns a random (version 4) UUID in lower case: Hono's
// generated device id, also a valid throng tenant name.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func newInc() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func validateDevice(d *Device) error {
	for _, list := range [][]string{d.Via, d.ViaGroups, d.MemberOf, d.Authorities} {
		for _, v := range list {
			if v == "" {
				return fmt.Errorf("%w: empty entry in via, viaGroups, memberOf or authorities", ErrInvalid)
			}
		}
	}
	return nil
}

// limit returns a registration limit (-1: none).
func limit(t *tenant.Tenant, pick func(*tenant.RegistrationLimits) *int) int {
	if t == nil || t.IoT == nil || t.IoT.RegistrationLimits == nil {
		return -1
	}
	if p := pick(t.IoT.RegistrationLimits); p != nil && *p >= 0 {
		return *p
	}
	return -1
}

// CreateDevice registers a device; an empty id asks for a generated one
// (a UUID). It returns the id and the new resource version (the ETag).
// ErrExists if the id is taken, ErrNotFound for an unknown tenant,
// ErrLimit beyond registration-limits.max-devices, ErrInvalid for an id
// outside Hono's pattern ^[a-zA-Z0-9-_\.:=]+$. The status the client
// gives is ignored (read-only): the store sets it.
//
// The device-count limit is checked against this node's index, so two
// nodes creating the last allowed device at once may both succeed.
func (s *Store) CreateDevice(ctx context.Context, tenantName, id string, d *Device) (string, string, error) {
	var dev Device
	if d != nil {
		dev = *d
	}
	dev.Status = &Status{Created: time.Now().UTC()}
	return s.createDevice(ctx, tenantName, id, &dev)
}

func (s *Store) createDevice(ctx context.Context, tenantName, id string, d *Device) (string, string, error) {
	t, err := s.tenantOK(tenantName)
	if err != nil {
		return "", "", err
	}
	if id == "" {
		id = NewUUID()
	} else if err := ValidateDeviceID(id); err != nil {
		return "", "", err
	}
	if err := validateDevice(d); err != nil {
		return "", "", err
	}
	if max := limit(t, func(l *tenant.RegistrationLimits) *int { return l.MaxDevices }); max >= 0 && s.DeviceCount(tenantName) >= max {
		return "", "", fmt.Errorf("%w: tenant %q allows %d devices", ErrLimit, tenantName, max)
	}
	b, err := json.Marshal(storedDevice{Device: *d, Inc: newInc()})
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	rev, err := s.devs.Create(ctx, deviceKey(tenantName, id), b)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return "", "", fmt.Errorf("device %q %w", id, ErrExists)
		}
		return "", "", err
	}
	if err := s.waitApplied(ctx, rev); err != nil {
		return "", "", err
	}
	return id, version(rev), nil
}

// getDevice reads a stored device.
func (s *Store) getDevice(ctx context.Context, tenantName, id string) (*storedDevice, uint64, error) {
	if id == "" || len(id) > maxIDLen {
		return nil, 0, fmt.Errorf("device %q %w", id, ErrNotFound)
	}
	e, err := s.devs.Get(ctx, deviceKey(tenantName, id))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
			return nil, 0, fmt.Errorf("device %q %w", id, ErrNotFound)
		}
		return nil, 0, err
	}
	var sd storedDevice
	if err := json.Unmarshal(e.Value(), &sd); err != nil {
		return nil, 0, fmt.Errorf("registry: device %q of %q: %w", id, tenantName, err)
	}
	if sd.Status == nil {
		sd.Status = &Status{Created: e.Created().UTC()}
	}
	return &sd, e.Revision(), nil
}

// Device returns a device and its resource version.
func (s *Store) Device(ctx context.Context, tenantName, id string) (*Device, string, error) {
	if _, err := s.tenantOK(tenantName); err != nil {
		return nil, "", err
	}
	sd, rev, err := s.getDevice(ctx, tenantName, id)
	if err != nil {
		return nil, "", err
	}
	return &sd.Device, version(rev), nil
}

// UpdateDevice replaces a device's registration (status is kept and its
// "updated" set). ifMatch, when not empty, must equal the current version
// (ErrVersionMismatch otherwise). The write is conditional on the
// revision read (kv.Update): of two concurrent updates with the same
// If-Match one fails; without If-Match the loser reads again and retries.
func (s *Store) UpdateDevice(ctx context.Context, tenantName, id string, d *Device, ifMatch string) (string, error) {
	if _, err := s.tenantOK(tenantName); err != nil {
		return "", err
	}
	var dev Device
	if d != nil {
		dev = *d
	}
	if err := validateDevice(&dev); err != nil {
		return "", err
	}
	for {
		old, rev, err := s.getDevice(ctx, tenantName, id)
		if err != nil {
			return "", err
		}
		if err := checkVersion(ifMatch, rev); err != nil {
			return "", err
		}
		st := *old.Status
		now := time.Now().UTC()
		st.Updated = &now
		dev.Status = &st
		b, err := json.Marshal(storedDevice{Device: dev, Inc: old.Inc})
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		nrev, err := s.devs.Update(ctx, deviceKey(tenantName, id), b, rev)
		if err == nil {
			s.cache.invalidate(tenantName, id)
		}
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSeq(err) {
				if ifMatch != "" && ifMatch != "*" {
					return "", fmt.Errorf("%w: device %q changed concurrently", ErrVersionMismatch, id)
				}
				continue
			}
			return "", err
		}
		if err := s.waitApplied(ctx, nrev); err != nil {
			return "", err
		}
		return version(nrev), nil
	}
}

// DeleteDevice removes a device and its credentials.
//
// Order: the device first (conditional on the revision checked against
// If-Match), then its credentials, then its auth-id index keys. A crash
// in between leaves credentials and index keys of a device that is gone:
// they are invisible (Lookup and Credentials check the device and its
// incarnation) and replaced when the id or the auth-ids are registered
// again.
func (s *Store) DeleteDevice(ctx context.Context, tenantName, id, ifMatch string) error {
	if _, err := s.tenantOK(tenantName); err != nil {
		return err
	}
	var seq uint64
	for {
		_, rev, err := s.getDevice(ctx, tenantName, id)
		if err != nil {
			return err
		}
		if err := checkVersion(ifMatch, rev); err != nil {
			return err
		}
		seq, err = s.deleteKey(ctx, bucketDevices, deviceKey(tenantName, id), rev)
		if err == nil {
			s.cache.invalidate(tenantName, id)
			break
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		if ifMatch != "" && ifMatch != "*" {
			return fmt.Errorf("%w: device %q changed concurrently", ErrVersionMismatch, id)
		}
	}
	if err := s.removeCredentials(ctx, tenantName, id); err != nil {
		s.log.Warn("device deleted, its credentials not", "tenant", tenantName, "device", id, "err", err)
	}
	return s.waitApplied(ctx, seq)
}

// removeCredentials deletes a device's credentials and the index keys
// that point to it.
func (s *Store) removeCredentials(ctx context.Context, tenantName, id string) error {
	e, err := s.creds.Get(ctx, deviceKey(tenantName, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var sc storedCredentials
	_ = json.Unmarshal(e.Value(), &sc)
	if err := s.purgeKey(ctx, bucketCredentials, deviceKey(tenantName, id), e.Revision()); err != nil {
		return err
	}
	for _, c := range sc.Credentials {
		s.releaseAuthID(ctx, tenantName, c.Type, c.AuthID, id)
	}
	return nil
}

// releaseAuthID deletes an index key if it still points to the device
// and the device's current credentials do not hold the auth-id (a PUT of
// the same device on another node may have written it again; a race
// narrowed to the moments between that check and the purge, which would
// leave the key missing until the device's next PUT; on one node PUTs of
// a device are serialized).
func (s *Store) releaseAuthID(ctx context.Context, tenantName, typ, authID, id string) {
	k := authIDKey(tenantName, typ, authID)
	e, err := s.authIDs.Get(ctx, k)
	if err != nil || string(e.Value()) != id {
		return
	}
	if held, err := s.holds(ctx, tenantName, id, typ, authID); err != nil || held {
		return
	}
	if err := s.purgeKey(ctx, bucketAuthIDs, k, e.Revision()); err != nil {
		s.log.Warn("auth-id index key not removed", "tenant", tenantName, "type", typ, "device", id, "err", err)
	}
}

// DeleteDevices removes every device of a tenant (Hono's DELETE
// /v1/devices/{tenant}; also called when a tenant is deleted, so the
// tenant need not exist any more). It purges the tenant's keys of the
// three buckets (one engine request each, whatever the device count) and
// then writes the tenant's purge marker, from which every node's watch
// drops the tenant's index and tells OnCredentialsChange about each
// device. Devices created concurrently with it may or may not survive.
func (s *Store) DeleteDevices(ctx context.Context, tenantName string) error {
	if err := tenant.ValidateName(tenantName); err != nil {
		return fmt.Errorf("tenant %q %w", tenantName, ErrNotFound)
	}
	for _, b := range []string{bucketDevices, bucketCredentials, bucketAuthIDs} {
		if err := s.streams[b].Purge(ctx, jetstream.WithPurgeSubject("$KV."+b+"."+tenantName+".>")); err != nil {
			return fmt.Errorf("registry: purge %s of %q: %w", b, tenantName, err)
		}
	}
	s.cache.invalidate(tenantName, "")
	rev, err := s.devs.Put(ctx, tenantName, purgeMarker)
	if err != nil {
		return err
	}
	return s.waitApplied(ctx, rev)
}

// DeviceCount returns how many devices a tenant has (this node's index;
// it waits for the index's initial load).
func (s *Store) DeviceCount(tenantName string) int {
	_ = s.waitLoaded(context.Background())
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ti := s.index[tenantName]; ti != nil {
		return ti.ids.Len()
	}
	return 0
}

// Indexed reports whether this node's index holds the device, without a
// request to the engine; loaded is false (and known meaningless) until
// the index's initial load is done. The index follows the bucket's watch,
// so a device created or deleted on another node a moment ago may not be
// in it yet: callers confirm an absence with Device.
func (s *Store) Indexed(tenantName, id string) (known, loaded bool) {
	select {
	case <-s.loaded:
	default:
		return false, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ti := s.index[tenantName]; ti != nil {
		_, known = ti.ids.Get(id)
	}
	return known, true
}

// Devices returns a page of a tenant's devices.
//
// Sorted by id (the default) and without filters, a page is read from the
// in-memory index (O(log n) to the offset, then one KV get per device),
// with or without the isGateway filter. Other filters or sort fields scan
// the tenant's devices in the bucket (docs/registry.md gives the cost).
func (s *Store) Devices(ctx context.Context, tenantName string, q Query) (Page, error) {
	if _, err := s.tenantOK(tenantName); err != nil {
		return Page{}, err
	}
	if q.PageSize < 0 || q.PageSize > MaxPageSize || q.PageOffset < 0 {
		return Page{}, fmt.Errorf("%w: pageSize must be 0..%d and pageOffset ≥ 0", ErrInvalid, MaxPageSize)
	}
	if q.PageSize == 0 {
		q.PageSize = DefaultPageSize
	}
	for _, f := range q.Filters {
		if err := f.validate(); err != nil {
			return Page{}, err
		}
	}
	desc := false
	byID := len(q.Sort) == 0
	for _, so := range q.Sort {
		if err := so.validate(); err != nil {
			return Page{}, err
		}
	}
	if len(q.Sort) == 1 && q.Sort[0].Field == "/id" {
		byID, desc = true, q.Sort[0].Direction == "desc"
	}
	if err := s.waitLoaded(ctx); err != nil {
		return Page{}, err
	}
	if len(q.Filters) > 0 || !byID {
		return s.scanDevices(ctx, tenantName, q)
	}
	total, ids := s.pageIDs(tenantName, q.IsGateway, q.PageOffset, q.PageSize, desc)
	result, err := s.fetchDevices(ctx, tenantName, ids)
	if err != nil {
		return Page{}, err
	}
	return Page{Total: total, Result: result}, nil
}

// fetchDevices reads a page's devices, 8 gets in flight; devices deleted
// since their ids were read are left out.
func (s *Store) fetchDevices(ctx context.Context, tenantName string, ids []string) ([]DeviceWithID, error) {
	devs := make([]*storedDevice, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			devs[i], _, errs[i] = s.getDevice(ctx, tenantName, id)
			<-sem
		}()
	}
	wg.Wait()
	out := make([]DeviceWithID, 0, len(ids))
	for i, id := range ids {
		if errors.Is(errs[i], ErrNotFound) {
			continue
		}
		if errs[i] != nil {
			return nil, errs[i]
		}
		out = append(out, DeviceWithID{ID: id, Device: devs[i].Device})
	}
	return out, nil
}

// pageIDs reads a page of ids from the index.
func (s *Store) pageIDs(tenantName string, isGateway *bool, offset, size int, desc bool) (int, []string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ti := s.index[tenantName]
	if ti == nil {
		return 0, nil
	}
	var ids []string
	switch {
	case isGateway == nil || *isGateway:
		tree := ti.ids
		if isGateway != nil {
			tree = ti.gw
		}
		n := tree.Len()
		for i := offset; i < offset+size && i < n; i++ {
			j := i
			if desc {
				j = n - 1 - i
			}
			id, _ := tree.GetAt(j)
			ids = append(ids, id)
		}
		return n, ids
	default:
		total := ti.ids.Len() - ti.gw.Len()
		if offset >= total {
			return total, nil
		}
		// Find the first one by rank, then walk the tree skipping gateways.
		want := min(size, total-offset)
		start := offset
		if desc {
			start = total - 1 - offset
		}
		first := ti.nonGatewayAt(start)
		walk := func(id string) bool {
			if _, gw := ti.gw.Get(id); gw {
				return true
			}
			ids = append(ids, id)
			return len(ids) < want
		}
		if desc {
			ti.ids.Descend(first, walk)
		} else {
			ti.ids.Ascend(first, walk)
		}
		return total, ids
	}
}

// nonGatewayAt returns the k-th (from 0) device that is not a gateway, in
// id order: the least i with i+1 - (gateways ≤ ids[i]) > k, found by
// binary search (that count grows with i, by one at each non-gateway);
// O(log³ n).
func (ti *tenantIndex) nonGatewayAt(k int) string {
	lo, hi := k, ti.ids.Len()-1
	for lo < hi {
		mid := (lo + hi) / 2
		id, _ := ti.ids.GetAt(mid)
		if mid+1-ti.gwRank(id) > k {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	id, _ := ti.ids.GetAt(lo)
	return id
}
