package router

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkLatencyObserve is what throng_delivery_latency_seconds adds to
// each first delivery of a stored message (giveUnlock): a clock read and
// a histogram observation, the histogram resolved per consumer.
func BenchmarkLatencyObserve(b *testing.B) {
	m := newMetrics(prometheus.NewRegistry())
	h := m.latency.WithLabelValues("default")
	d := &Delivery{Count: 1, Time: time.Now()}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d.Count == 1 && !d.Time.IsZero() {
				h.Observe(max(time.Since(d.Time).Seconds(), 0))
			}
		}
	})
}
