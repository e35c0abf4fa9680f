package app

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/conns"
	"github.com/throngmq/throng/internal/history"
	"github.com/throngmq/throng/internal/metrics"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/router"
)

// observer owns what the admin API observes (issue 15): the node's
// connection registry (internal/conns), which the front-ends fill, and
// the sampler that turns counters into rates every sampleInterval.
type observer struct {
	conns   *conns.Registry
	router  *router.Router
	hist    *history.Recorder
	tenants *metrics.Observer // per-tenant series and the anomaly finder

	stopOnce sync.Once
	stopCh   chan struct{}
	done     chan struct{}
}

// sampleInterval is the resolution of the rates (docs/console.md).
const sampleInterval = 5 * time.Second

// startObserver makes the observer and starts its sampler; stopped by
// Shutdown (stopObserver).
func (a *App) startObserver(rt *router.Router) {
	node := a.cfg.Cluster.NodeName // the connection ids name it
	if node == "" {
		node, _ = os.Hostname()
	}
	o := &observer{
		conns:  conns.New(node),
		router: rt,
		hist:   history.New(),
		stopCh: make(chan struct{}),
		done:   make(chan struct{}),
	}
	store, devices := a.store, a.devices
	o.tenants = metrics.NewObserver(metrics.Options{
		Router:        rt,
		Known:         func(t string) bool { _, ok := store.Tenant(t); return ok },
		AddressSeries: a.cfg.Metrics.AddressSeries,
		History:       o.hist,
		Conns:         o.conns,
		TenantThresholds: func(t string) metrics.Thresholds {
			tt, _ := store.Tenant(t)
			return admin.TenantAnomalyThresholds(tt)
		},
		DeviceExists: func(t, id string) bool {
			// The index first: a read of the bucket goes to its stream
			// leader, and with the leader's node stopped it waited 5 s
			// per silent device, inside an anomaly report bounded at 2 s
			// per node (TestAnomaliesAcrossNodes: 5–10 s). Only an
			// absence is confirmed by a read.
			if known, loaded := devices.Indexed(t, id); known && loaded {
				return true
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _, err := devices.Device(ctx, t, id)
			return !errors.Is(err, registry.ErrNotFound) // an error of the registry is not proof
		},
		Addresses: func(yield func(string, *address.Address)) {
			for _, t := range store.Tenants() {
				for _, ad := range store.Addresses(t.Name) {
					yield(t.Name, ad)
				}
			}
		},
	})
	o.conns.Watch(o.tenants.Connected, o.tenants.Disconnected)
	a.registry.MustRegister(o.tenants)
	a.audit.SetTap(o.tenants.Audit)
	a.hono.OnDeviceSeen(o.tenants.DeviceSeen) // silent devices: every adapter's device messages
	a.mu.Lock()
	a.obs = o
	a.mu.Unlock()
	go o.run()
}

func (o *observer) run() {
	defer close(o.done)
	t := time.NewTicker(sampleInterval)
	defer t.Stop()
	for {
		select {
		case <-o.stopCh:
			return
		case now := <-t.C:
			o.sample(now)
		}
	}
}

// stop ends the sampler (nil: nothing).
func (o *observer) stop() {
	if o == nil {
		return
	}
	o.stopOnce.Do(func() { close(o.stopCh) })
	<-o.done
}

// registry is the connection registry for the front-ends (nil: none).
func (o *observer) registry() *conns.Registry {
	if o == nil {
		return nil
	}
	return o.conns
}

// adminConfig is the admin API's part.
func (o *observer) adminConfig() admin.Observe {
	if o == nil {
		return admin.Observe{}
	}
	return admin.Observe{Conns: o.conns, History: o.hist, Queues: o.router, Anomalies: o.tenants}
}

// sample reads the counters into the history (every sampleInterval):
//   - an address: its router counters (messages accepted in, handed out)
//     and the entries its stream stores;
//   - a tenant: the messages the router accepted and delivered for it
//     (every protocol, HTTP included, and the topic space's undefined
//     names) and the sum of its addresses' stored entries;
//   - the node: the sums of the tenants;
//   - a connection: its own counters.
//
// The engine is asked before the history's lock is taken.
func (o *observer) sample(now time.Time) {
	o.conns.Sample(now)
	type key struct{ tenant, name string }
	type addr struct {
		in, out uint64
		stored  int64
	}
	addrs := map[key]*addr{}
	get := func(k key) *addr {
		a := addrs[k]
		if a == nil {
			a = &addr{}
			addrs[k] = a
		}
		return a
	}
	o.router.AddressCounters(func(t, name string, in, out uint64) {
		a := get(key{t, name})
		a.in, a.out = in, out
	})
	ctx, cancel := context.WithTimeout(context.Background(), sampleInterval/2)
	_ = o.router.StoredCounts(ctx, func(t, name string, stored int64) { get(key{t, name}).stored = stored })
	cancel()
	type total struct {
		in, out uint64
		stored  int64
	}
	tenants := map[string]*total{}
	tget := func(t string) *total {
		x := tenants[t]
		if x == nil {
			x = &total{}
			tenants[t] = x
		}
		return x
	}
	o.router.TenantCounters(func(t string, in, out uint64) {
		x := tget(t)
		x.in, x.out = in, out
	})
	for k, a := range addrs {
		tget(k.tenant).stored += a.stored
	}

	rd := o.hist.Begin(now)
	defer rd.End()
	var node total
	for t, x := range tenants {
		rd.Stored(history.TenantSeries(t), x.in, x.out, x.stored)
		node.in += x.in
		node.out += x.out
		node.stored += x.stored
	}
	rd.Stored(history.NodeSeries(), node.in, node.out, node.stored)
	for k, a := range addrs {
		rd.Stored(history.AddressSeries(k.tenant, k.name), a.in, a.out, a.stored)
	}
	o.conns.Each(func(e *conns.Entry) {
		in, out, _, _ := e.Counters()
		if in == 0 && out == 0 {
			// Never had traffic: no series (Counters creates none), and
			// no key to build — 15k idle connections made ~1 MB of
			// garbage a round with their ids and keys.
			return
		}
		rd.Counters(history.ConnectionSeries(o.conns.ID(e)), in, out)
	})
}
