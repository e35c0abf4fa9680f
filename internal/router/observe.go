package router

import (
	"context"
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// What the history sampler reads (internal/history, internal/app): the
// address counters of this node and what each address stores. Neither
// is on a message path.

// tenantStates is a snapshot of the tenants this node has set up.
func (r *Router) tenantStates() []*tenantState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Collect(maps.Values(r.tenants))
}

// AddressCounters calls f with the cumulative messages in and out of
// every defined address that has counters on this node (those published
// to or consumed from since the node started; AddressStats's
// messagesIn and messagesOut).
func (r *Router) AddressCounters(f func(tenantName, name string, in, out uint64)) {
	type named struct {
		name string
		c    *addrCounters
	}
	for _, ts := range r.tenantStates() {
		ts.mu.Lock()
		list := make([]named, 0, len(ts.counters))
		for name, c := range ts.counters {
			list = append(list, named{name, c})
		}
		ts.mu.Unlock()
		for _, n := range list {
			f(ts.name, n.name, n.c.in.Load(), n.c.out.Load())
		}
	}
}

// StoredCounts calls f with the number of engine entries each queue and
// topic address stores, for every tenant this node has set up: one
// stream listing per tenant (the engine answers up to 256 streams a
// request), not a request per address. A queue's batch entry counts
// once here (AddressStats's backlog counts its messages; batches form
// only under load, so the history's backlog of a busy queue is a lower
// bound). Subscriptions are not listed.
func (r *Router) StoredCounts(ctx context.Context, f func(tenantName, name string, stored int64)) error {
	var first error
	for _, ts := range r.tenantStates() {
		l := ts.js.ListStreams(ctx)
		for info := range l.Info() {
			if name := info.Config.Metadata["throng.address"]; name != "" {
				f(ts.name, name, int64(info.State.Msgs))
			}
		}
		if err := l.Err(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// TenantCounters calls f with each tenant's messages accepted for
// routing and delivered to consumers on this node since it started, over
// every protocol and address, the topic space's undefined names included
// (throng_router_messages_in_total and _out_total, summed over address
// types).
func (r *Router) TenantCounters(f func(tenantName string, in, out uint64)) {
	in, out := sumByTenant(r.metrics.in), sumByTenant(r.metrics.out)
	for t, v := range in {
		f(t, uint64(v), uint64(out[t]))
		delete(out, t)
	}
	for t, v := range out {
		f(t, 0, uint64(v))
	}
}

// sumByTenant reads a counter vector labelled by tenant.
func sumByTenant(cv *prometheus.CounterVec) map[string]float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		cv.Collect(ch)
		close(ch)
	}()
	sum := map[string]float64{}
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil || d.Counter == nil {
			continue
		}
		for _, l := range d.Label {
			if l.GetName() == "tenant" {
				sum[l.GetValue()] += d.Counter.GetValue()
			}
		}
	}
	return sum
}
