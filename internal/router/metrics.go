package router

import "github.com/prometheus/client_golang/prometheus"

// metrics are labelled by tenant and address type only: per-address labels
// would let one tenant with many addresses explode the series count.
type metrics struct {
	in      *prometheus.CounterVec // throng_router_messages_in_total
	out     *prometheus.CounterVec // throng_router_messages_out_total
	dropped *prometheus.CounterVec // throng_router_messages_dropped_total
	settled *prometheus.CounterVec // throng_router_deliveries_settled_total
	// throng_router_temp_addresses_deleted_total (tempsweep.go)
	tempDeleted *prometheus.CounterVec
	// throng_tenant_quota_refused_total (quota.go)
	quotaRefused *prometheus.CounterVec
	// latency is throng_delivery_latency_seconds (consume.go, giveUnlock).
	latency *prometheus.HistogramVec
}

// latencyBuckets span a live consumer's milliseconds to a backlog's
// minutes: 16 buckets per tenant.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		in: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_router_messages_in_total", Help: "Messages accepted for routing.",
		}, []string{"tenant", "type"}),
		out: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_router_messages_out_total", Help: "Messages delivered to consumers.",
		}, []string{"tenant", "type"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_router_messages_dropped_total", Help: "Messages dropped for consumers, by reason: at-most-once ones without credit (no_credit); durable live ones beyond a consumer's live queue (queue_full) or queued for a consumer that closed (closed); expired ones (expired); large messages whose chunks are gone (large_missing); a live copy of a named message (MQTT QoS 2) the consumer already took (duplicate).",
		}, []string{"tenant", "reason"}),
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_router_deliveries_settled_total", Help: "Deliveries settled by consumers, by outcome.",
		}, []string{"tenant", "outcome"}),
		tempDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_router_temp_addresses_deleted_total", Help: "Temporary addresses deleted by the sweeper because their owner and consumers were gone.",
		}, []string{"tenant"}),
		quotaRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_tenant_quota_refused_total", Help: "Messages refused because the tenant (or its connection) was over a limit of its plan, by limit.",
		}, []string{"tenant", "limit"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "throng_delivery_latency_seconds", Help: "Time from a message's storing (its publish accepted) to its first delivery to a consumer's connection, stored messages of queue and topic addresses; time in the backlog included.",
			Buckets: latencyBuckets,
		}, []string{"tenant"}),
	}
	if reg != nil {
		reg.MustRegister(m.in, m.out, m.dropped, m.settled, m.tempDeleted, m.quotaRefused, m.latency)
	}
	return m
}
