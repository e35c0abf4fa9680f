// Package metrics holds throng's Prometheus conventions. Every part that
// exports metrics receives a prometheus.Registerer from the composition root
// (never the global default registry), so that several platforms can run in
// one process (tests) without colliding.
//
// Names: "throng_<subsystem>_<name>_<unit>", counters ending in "_total",
// labels in snake_case; per-tenant series carry a "tenant" label.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every throng metric.
const Namespace = "throng"

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return r
}
