package metrics

import (
	"context"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/conns"
	"github.com/throngmq/throng/internal/history"
)

// Per-tenant and per-address series (issue 15, docs/operations.md
// "Metrics"). They are computed when /metrics is scraped from state that
// exists anyway, or from the connection registry's and the audit log's
// callbacks; nothing is added to a message's path.

// DefaultAddressSeries is the default of config metrics.addressSeries.
const DefaultAddressSeries = 200

// UnknownTenant labels auth events whose tenant does not exist: the
// tenant of a refused login is whatever the client claimed, and a label
// per claimed name would grow without bound.
const UnknownTenant = "_unknown"

// Router is what the observer reads of the router (*router.Router).
type Router interface {
	AddressCounters(f func(tenantName, name string, in, out uint64))
	StoredCounts(ctx context.Context, f func(tenantName, name string, stored int64)) error
}

// Options configure an Observer.
type Options struct {
	Router Router
	// Known reports whether a tenant exists (nil: every name is).
	Known func(tenant string) bool
	// AddressSeries: see config metrics.addressSeries (0: the default;
	// negative: none).
	AddressSeries int
	// History gives the address series the anomaly finder reads (nil:
	// no backlog findings).
	History interface{ Series(key string) history.View }
	// Addresses lists the defined addresses for the finder (nil: none).
	Addresses AddressLister
	// Finder are the anomaly finder's thresholds (zero fields: defaults).
	Finder Thresholds
	// TenantThresholds gives a tenant's own thresholds (zero fields: the
	// node's); nil: none.
	TenantThresholds func(tenant string) Thresholds
	// DeviceExists reports whether a device is still registered (a
	// silent device that is not is forgotten); nil: all are.
	DeviceExists func(tenant, device string) bool
	// MaxDevices bounds the devices the silent-device tracker keeps (0:
	// MaxTrackedDevices).
	MaxDevices int
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
	// Conns is the node's connection registry, whose open connections'
	// counters the series add to the closed ones' (nil: closed only).
	Conns *conns.Registry
}

// tkey is a tenant and a protocol.
type tkey struct{ tenant, protocol string }

// totals are a tenant's connection figures for one protocol.
type totals struct {
	connects                           uint64
	msgsIn, msgsOut, bytesIn, bytesOut uint64
}

type authKey struct {
	tenant, protocol string
	failed           bool
}

type deniedKey struct{ tenant, protocol, action string }

// Observer exports the per-tenant series (a prometheus.Collector) and
// finds anomalies (anomaly.go). Wire it with conns.Registry.Watch
// (Connected, Disconnected) and audit.Log.SetTap (Audit).
type Observer struct {
	opt   Options
	limit int

	// The open connections are the registry's (Options.Conns): a map of
	// them here cost ~50 B per idle connection (docs/mqtt.md).
	mu     sync.Mutex
	closed map[tkey]*totals     // guarded by mu: connects, and the counters of closed connections
	auth   map[authKey]uint64   // guarded by mu
	denied map[deniedKey]uint64 // guarded by mu

	find *finder
	devs *devices // silent devices (silent.go)

	descs []*prometheus.Desc
}

var (
	descConns     = desc("throng_tenant_connections", "Open connections of the tenant on this node, by protocol (amqp, mqtt3, mqtt5).", "tenant", "protocol")
	descConnects  = desc("throng_tenant_connects_total", "Connections the tenant's clients opened on this node (authenticated), by protocol.", "tenant", "protocol")
	descMsgsIn    = desc("throng_tenant_connection_messages_in_total", "Messages the tenant's MQTT and AMQP connections sent to this node, by protocol.", "tenant", "protocol")
	descMsgsOut   = desc("throng_tenant_connection_messages_out_total", "Messages this node sent to the tenant's MQTT and AMQP connections, by protocol.", "tenant", "protocol")
	descBytesIn   = desc("throng_tenant_bytes_in_total", "Message bytes (payload and properties as encoded) the tenant's MQTT and AMQP connections sent to this node, by protocol.", "tenant", "protocol")
	descBytesOut  = desc("throng_tenant_bytes_out_total", "Message bytes this node sent to the tenant's MQTT and AMQP connections, by protocol.", "tenant", "protocol")
	descBacklog   = desc("throng_tenant_backlog_messages", "Messages stored in the tenant's queue and topic addresses (engine entries; a queue's batch counts once).", "tenant")
	descAuth      = desc("throng_tenant_auth_attempts_total", "Authentications by tenant (_unknown: a tenant that does not exist), protocol (amqp, mqtt, http, admin) and result (success, failure).", "tenant", "protocol", "result")
	descDenied    = desc("throng_tenant_denied_total", "Actions refused to authenticated principals (publish, subscribe, link, admin request), by tenant, protocol and action.", "tenant", "protocol", "action")
	descAddrBL    = desc("throng_address_backlog_messages", "Messages stored in an address (queue and topic addresses; only while the node has at most metrics.addressSeries addresses).", "tenant", "address")
	descAddrIn    = desc("throng_address_messages_in_total", "Messages accepted for an address on this node since it started (only while the node has at most metrics.addressSeries addresses).", "tenant", "address")
	descAddrOut   = desc("throng_address_messages_out_total", "Messages delivered from an address on this node since it started (only while the node has at most metrics.addressSeries addresses).", "tenant", "address")
	descAddrLimit = desc("throng_metrics_address_series_limit", "metrics.addressSeries: above this many addresses on the node, per-address series are left out.")
	descAddrCount = desc("throng_metrics_addresses", "Addresses the node has counters or stored messages for (what the limit is compared with).")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// NewObserver returns an observer; register it with a registry to export.
func NewObserver(o Options) *Observer {
	if o.Now == nil {
		o.Now = time.Now
	}
	limit := o.AddressSeries
	if limit == 0 {
		limit = DefaultAddressSeries
	}
	ob := &Observer{
		opt: o, limit: limit,
		closed: map[tkey]*totals{},
		auth:   map[authKey]uint64{},
		denied: map[deniedKey]uint64{},
		descs: []*prometheus.Desc{descConns, descConnects, descMsgsIn, descMsgsOut, descBytesIn, descBytesOut,
			descBacklog, descAuth, descDenied, descAddrBL, descAddrIn, descAddrOut, descAddrLimit, descAddrCount},
	}
	ob.find = newFinder(ob)
	if o.MaxDevices <= 0 {
		o.MaxDevices = MaxTrackedDevices
	}
	ob.devs = newDevices(o.MaxDevices)
	return ob
}

// Connected is conns.Registry.Watch's added callback.
func (o *Observer) Connected(e *conns.Entry) {
	info := e.Info()
	k := tkey{info.Tenant, info.Protocol}
	o.mu.Lock()
	o.tot(k).connects++
	o.mu.Unlock()
	o.find.connected(info)
	if info.Device != "" {
		o.devs.saw(info.Tenant, info.Device, 0, o.opt.Now())
	}
}

// Disconnected is conns.Registry.Watch's removed callback (called once
// per connection, under the registry's lock): the connection's counters
// move to its tenant's totals, so that the counters never go down.
func (o *Observer) Disconnected(e *conns.Entry) {
	info := e.Info()
	o.mu.Lock()
	t := o.tot(tkey{info.Tenant, info.Protocol})
	mi, mo, bi, bo := e.Counters()
	t.msgsIn += mi
	t.msgsOut += mo
	t.bytesIn += bi
	t.bytesOut += bo
	o.mu.Unlock()
}

func (o *Observer) tot(k tkey) *totals {
	t := o.closed[k]
	if t == nil {
		t = &totals{}
		o.closed[k] = t
	}
	return t
}

// Audit is audit.Log.SetTap's function: logins, refused logins and
// denials, counted per tenant and given to the anomaly finder.
func (o *Observer) Audit(e audit.Event) {
	switch e.Kind {
	case audit.Login, audit.LoginFailed, audit.Denied:
	default:
		return
	}
	ten := o.tenantOf(e)
	proto := e.Protocol
	if proto == "" {
		proto = "unknown"
	}
	o.mu.Lock()
	if e.Kind == audit.Denied {
		action := e.Action
		if action == "" {
			action = "unknown"
		}
		o.denied[deniedKey{ten, proto, boundedAction(action)}]++
	} else {
		o.auth[authKey{ten, proto, e.Kind == audit.LoginFailed}]++
	}
	o.mu.Unlock()
	o.find.audit(ten, e)
}

// boundedAction keeps the action label to a short word (the protocols'
// send/receive/manage and the admin API's scopes are).
func boundedAction(a string) string {
	if len(a) > 32 || strings.ContainsAny(a, " /") {
		return "other"
	}
	return a
}

// tenantOf is the event's tenant: the authenticated one, else the one the
// claimed user name carries ("user@tenant"; none: the default tenant),
// UnknownTenant when no such tenant exists.
func (o *Observer) tenantOf(e audit.Event) string {
	t := e.Tenant
	if t == "" {
		if i := strings.LastIndexByte(e.User, '@'); i >= 0 {
			t = e.User[i+1:]
		} else {
			t = "default"
		}
	}
	if o.opt.Known != nil && !o.opt.Known(t) {
		return UnknownTenant
	}
	return t
}

// Describe implements prometheus.Collector.
func (o *Observer) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range o.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector: O(connections + addresses)
// per scrape, with one engine stream listing per 256 streams of a tenant.
func (o *Observer) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}

	type row struct {
		totals
		open int
	}
	rows := map[tkey]*row{}
	var auth map[authKey]uint64
	var denied map[deniedKey]uint64
	// The registry's read lock first (then o.mu, as Disconnected
	// runs): the open connections and the closed totals are read as one.
	o.opt.Conns.ReadLocked(func(all iter.Seq[*conns.Entry]) {
		o.mu.Lock()
		defer o.mu.Unlock()
		for k, t := range o.closed {
			rows[k] = &row{totals: *t}
		}
		for e := range all {
			info := e.Info()
			k := tkey{info.Tenant, info.Protocol}
			r := rows[k]
			if r == nil {
				r = &row{}
				rows[k] = r
			}
			mi, mo, bi, bo := e.Counters()
			r.open++
			r.msgsIn += mi
			r.msgsOut += mo
			r.bytesIn += bi
			r.bytesOut += bo
		}
		auth = make(map[authKey]uint64, len(o.auth))
		for k, v := range o.auth {
			auth[k] = v
		}
		denied = make(map[deniedKey]uint64, len(o.denied))
		for k, v := range o.denied {
			denied[k] = v
		}
	})

	for k, r := range rows {
		gauge(descConns, float64(r.open), k.tenant, k.protocol)
		counter(descConnects, r.connects, k.tenant, k.protocol)
		counter(descMsgsIn, r.msgsIn, k.tenant, k.protocol)
		counter(descMsgsOut, r.msgsOut, k.tenant, k.protocol)
		counter(descBytesIn, r.bytesIn, k.tenant, k.protocol)
		counter(descBytesOut, r.bytesOut, k.tenant, k.protocol)
	}
	for k, v := range auth {
		result := "success"
		if k.failed {
			result = "failure"
		}
		counter(descAuth, v, k.tenant, k.protocol, result)
	}
	for k, v := range denied {
		counter(descDenied, v, k.tenant, k.protocol, k.action)
	}

	if o.opt.Router != nil {
		o.collectAddresses(counter, gauge)
	}
}

func (o *Observer) collectAddresses(counter func(*prometheus.Desc, uint64, ...string), gauge func(*prometheus.Desc, float64, ...string)) {
	type akey struct{ tenant, name string }
	type addr struct {
		in, out           uint64
		stored            int64
		counted, hasStore bool
	}
	addrs := map[akey]*addr{}
	get := func(k akey) *addr {
		a := addrs[k]
		if a == nil {
			a = &addr{}
			addrs[k] = a
		}
		return a
	}
	o.opt.Router.AddressCounters(func(t, name string, in, out uint64) {
		a := get(akey{t, name})
		a.in, a.out, a.counted = in, out, true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = o.opt.Router.StoredCounts(ctx, func(t, name string, stored int64) {
		a := get(akey{t, name})
		a.stored, a.hasStore = stored, true
	})
	cancel()
	backlog := map[string]int64{}
	for k, a := range addrs {
		backlog[k.tenant] += a.stored
	}
	for t, v := range backlog {
		gauge(descBacklog, float64(v), t)
	}
	gauge(descAddrLimit, float64(max(o.limit, 0)))
	gauge(descAddrCount, float64(len(addrs)))
	if o.limit < 0 || len(addrs) > o.limit {
		return
	}
	for k, a := range addrs {
		if a.hasStore {
			gauge(descAddrBL, float64(a.stored), k.tenant, k.name)
		}
		if a.counted {
			counter(descAddrIn, a.in, k.tenant, k.name)
			counter(descAddrOut, a.out, k.tenant, k.name)
		}
	}
}
