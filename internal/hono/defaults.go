package hono

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// Tenant and device defaults, and the tenant's TTL limits, as Hono's
// adapters apply them to a device's messages (Hono's
// DownstreamMessageProperties and DownstreamAmqpMessageFactory; Tenant
// API, "Resource Limits Configuration Format"; docs/hono.md, "Defaults
// and TTL limits"):
//
//   - a property the message has itself wins, then the device's default
//     of that name, then the tenant's;
//   - "content-type" and "content-encoding" defaults set those message
//     properties; "ttl" (seconds) is the message's TTL unless the device
//     gave one (hono-ttl); "ttl-telemetry-qos0", "ttl-telemetry-qos1" and
//     "ttl-command-response" are the TTLs of those messages when neither
//     did; AMQP's other standard properties ("to", "subject", ...) cannot
//     be defaulted; every other default becomes an application property;
//   - the TTL is capped by resource-limits max-ttl (events),
//     max-ttl-telemetry-qos0/-qos1, max-ttl-command-response.

// Tenants is the Tenant API the service reads the tenants' Hono settings
// from (*registry.Store, which serves it from the tenant store). A
// Registry that implements it is used (New); without it there are no
// tenant defaults, limits or connection events.
type Tenants interface {
	Tenant(name string) (*tenant.Tenant, bool)
}

// changeNotifier is implemented by *registry.Store: f is called on every
// node when a device is created, changed or deleted.
type changeNotifier interface {
	OnCredentialsChange(f func(tenantName, deviceID string))
}

// Names of defaults and limits (Hono's).
const (
	defTTL             = "ttl"
	defContentType     = "content-type"
	defContentEncoding = "content-encoding"
	defTTLQoS0         = "ttl-telemetry-qos0"
	defTTLQoS1         = "ttl-telemetry-qos1"
	defTTLResponse     = "ttl-command-response"
)

// notDefaultable are AMQP's standard properties (and Hono's retain
// annotation, which throng's messages do not carry): a default of that
// name is ignored, as in Hono.
var notDefaultable = map[string]bool{
	"delivery-count": true, "durable": true, "first-acquirer": true, "priority": true,
	"absolute-expiry-time": true, "correlation-id": true, "creation-time": true, "group-id": true,
	"group-sequence": true, "message-id": true, "reply-to": true, "reply-to-group-id": true,
	"subject": true, "to": true, "user-id": true, "x-opt-retain": true,
}

// ttlLimits are a tenant's resource-limits in seconds; 0 or less: none.
type ttlLimits struct {
	Event    int64 `json:"max-ttl"`
	QoS0     int64 `json:"max-ttl-telemetry-qos0"`
	QoS1     int64 `json:"max-ttl-telemetry-qos1"`
	Response int64 `json:"max-ttl-command-response"`
}

// tenantConf is a tenant's Hono settings for device messages, parsed once
// per version of the tenant (the tenant store replaces a tenant's struct
// on every change, so the IoT pointer names the version).
type tenantConf struct {
	iot        *tenant.IoT
	defaults   map[string]any
	limits     ttlLimits
	connEvents map[string]string // adapter type → mode; "" the tenant's own
}

// defaultsOf converts Hono's defaults (JSON values) into message values:
// strings, booleans, numbers (int32 when they fit, as Hono's JSON decoder
// gives Integer, else int64, else float64). null, objects and arrays are
// left out: an application property cannot hold them.
func defaultsOf(raw map[string]json.RawMessage) map[string]any {
	if len(raw) == 0 {
		return nil
	}
	out := make(map[string]any, len(raw))
	for k, v := range raw {
		if x, ok := jsonScalar(v); ok {
			out[k] = x
		}
	}
	return out
}

func jsonScalar(v json.RawMessage) (any, bool) {
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber()
	var x any
	if d.Decode(&x) != nil {
		return nil, false
	}
	switch x := x.(type) {
	case string, bool:
		return x, true
	case json.Number:
		if i, err := x.Int64(); err == nil {
			if i >= math.MinInt32 && i <= math.MaxInt32 {
				return int32(i), true
			}
			return i, true
		}
		if f, err := x.Float64(); err == nil {
			return f, true
		}
	}
	return nil, false
}

// seconds reads a TTL default (a number of seconds; fractions cut, as
// Hono's Number.longValue); 0 when absent, not a number or not positive.
func seconds(v any) int64 {
	switch x := v.(type) {
	case int32:
		return max(int64(x), 0)
	case int64:
		return max(x, 0)
	case float64:
		if x >= 1 && x < math.MaxInt64 {
			return int64(x)
		}
	}
	return 0
}

// tenantConf returns the parsed settings of a tenant; nil for a tenant
// that is unknown or not IoT-enabled (or without a Tenants source).
func (s *Service) tenantConf(name string) *tenantConf {
	if s.tenants == nil {
		return nil
	}
	t, ok := s.tenants.Tenant(name)
	if !ok || t.IoT == nil {
		return nil
	}
	s.mu.RLock()
	tc := s.tconf[name]
	s.mu.RUnlock()
	if tc != nil && tc.iot == t.IoT {
		return tc
	}
	tc = &tenantConf{iot: t.IoT, defaults: defaultsOf(t.IoT.Defaults)}
	if len(t.IoT.ResourceLimits) > 0 {
		// Validated by the admin API; a value it let through that does
		// not decode leaves the limits off.
		_ = json.Unmarshal(t.IoT.ResourceLimits, &tc.limits)
	}
	tc.connEvents = map[string]string{"": connEventsMode(t.IoT.Ext[ExtConnectionEvents])}
	for _, a := range t.IoT.Adapters {
		if v, ok := a.Ext[ExtConnectionEvents]; ok {
			tc.connEvents[a.Type] = connEventsMode(v)
		}
	}
	s.mu.Lock()
	if s.tconf == nil {
		s.tconf = map[string]*tenantConf{}
	}
	s.tconf[name] = tc
	s.mu.Unlock()
	return tc
}

// deviceDefaults caches the devices' defaults: a device's message would
// otherwise cost a registry read (Hono's adapters cache the registration
// assertion the same way). An entry is dropped when the registry reports
// a change of the device (any node); without such reports (a registry
// that cannot give them) it lives at most devCacheAge. Beyond
// devCacheSize devices a random entry makes room: a fleet of more active
// devices costs a registry read per message of an evicted device.
type deviceDefaults struct {
	mu      sync.RWMutex
	epoch   uint64 // bumped by every invalidation
	m       map[string]devEntry
	watched bool // the registry reports changes: entries do not age
}

type devEntry struct {
	defaults map[string]any // nil: none
	at       time.Time
}

const (
	devCacheSize = 65536 // some 100 bytes each without defaults
	devCacheAge  = time.Minute
)

func (c *deviceDefaults) invalidate(tenantName, id string) {
	c.mu.Lock()
	c.epoch++
	delete(c.m, tenantName+"\x00"+id)
	c.mu.Unlock()
}

// deviceDefaults returns a device's defaults (nil when it has none, or is
// not registered any more).
func (s *Service) deviceDefaults(ctx context.Context, tenantName, id string) (map[string]any, error) {
	key := tenantName + "\x00" + id
	c := &s.devs
	now := s.now()
	c.mu.RLock()
	e, ok := c.m[key]
	epoch := c.epoch
	c.mu.RUnlock()
	if ok && (c.watched || now.Sub(e.at) < devCacheAge && !now.Before(e.at)) {
		return e.defaults, nil
	}
	d, _, err := s.reg.Device(ctx, tenantName, id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		d = nil
	case err != nil:
		return nil, fmt.Errorf("hono: registry: %w", err)
	}
	var defs map[string]any
	if d != nil {
		defs = defaultsOf(d.Defaults)
	}
	c.mu.Lock()
	if c.epoch == epoch {
		if c.m == nil {
			c.m = map[string]devEntry{}
		}
		if _, ok := c.m[key]; !ok && len(c.m) >= devCacheSize {
			for k := range c.m { // one entry out, at random
				delete(c.m, k)
				break
			}
		}
		c.m[key] = devEntry{defaults: defs, at: now}
	}
	c.mu.Unlock()
	return defs, nil
}

// applyDefaults completes a device's message (kind, QoS) for tenant
// tenantName: the tenant's and device's defaults (devDefaults; nil for
// none) and the TTL. deviceTTL is the TTL the device gave (hono-ttl), 0
// for none. The content type is set only where the message has none.
func applyDefaults(tc *tenantConf, devDefaults map[string]any, m *message.Message, kind Kind, qos byte, deviceTTL time.Duration) {
	var tenantDefaults map[string]any
	var limits ttlLimits
	if tc != nil {
		tenantDefaults, limits = tc.defaults, tc.limits
	}
	get := func(k string) (any, bool) {
		if v, ok := devDefaults[k]; ok {
			return v, true
		}
		v, ok := tenantDefaults[k]
		return v, ok
	}
	for _, defs := range []map[string]any{devDefaults, tenantDefaults} {
		for k, v := range defs {
			switch k {
			case defTTL, defTTLQoS0, defTTLQoS1, defTTLResponse:
				continue
			case defContentType:
				if s, ok := v.(string); ok && m.ContentType == "" {
					m.ContentType = s
				}
				continue
			case defContentEncoding:
				if s, ok := v.(string); ok && m.ContentEncoding == "" {
					m.ContentEncoding = s
				}
				continue
			}
			if notDefaultable[k] {
				continue
			}
			if m.Properties == nil {
				m.Properties = map[string]any{}
			}
			if _, taken := m.Properties[k]; !taken {
				m.Properties[k] = v
			}
		}
	}

	// The TTL (Hono's algorithm, in seconds): the device's own, else the
	// "ttl" default, else the endpoint's default; capped by the
	// endpoint's limit.
	ttl := int64(deviceTTL / time.Second)
	if ttl <= 0 {
		v, _ := get(defTTL)
		ttl = seconds(v)
	}
	var limit int64
	switch kind {
	case KindEvent:
		limit = limits.Event
	case KindTelemetry:
		def := defTTLQoS0
		limit = limits.QoS0
		if qos > 0 {
			def, limit = defTTLQoS1, limits.QoS1
		}
		if ttl <= 0 {
			v, _ := get(def)
			ttl = seconds(v)
		}
	case KindCommandResponse:
		limit = limits.Response
		if ttl <= 0 {
			v, _ := get(defTTLResponse)
			ttl = seconds(v)
		}
	}
	if limit > 0 && (ttl <= 0 || ttl > limit) {
		ttl = limit
	}
	if ttl > 0 {
		m.TTL = time.Duration(min(ttl, math.MaxInt64/int64(time.Second))) * time.Second
	} else {
		m.TTL = 0
	}
}
