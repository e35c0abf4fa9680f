package router

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/throngmq/throng/internal/address"
)

// throng_delivery_latency_seconds observes the first delivery of each
// stored message, with the time it waited in the backlog; a redelivery
// is not observed.
func TestDeliveryLatency(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "lat", Type: address.Queue})
	begin := time.Now()
	publish(t, e.r, "default", "lat", "a")
	publish(t, e.r, "default", "lat", "b")
	time.Sleep(100 * time.Millisecond) // the backlog's age, which the figure must include
	read := func() (uint64, float64) {
		var m dto.Metric
		if err := e.r.metrics.latency.WithLabelValues("default").(prometheus.Metric).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()
	}
	_, c := consume(t, e.r, "default", "lat", ConsumeOptions{}, 10)
	first := c.next(t)
	c.next(t).Settle(Outcome{Kind: Accepted})
	elapsed := time.Since(begin).Seconds()
	n, sum := read()
	if n != 2 || sum < 2*0.1 || sum > 2*elapsed {
		t.Errorf("after 2 deliveries: %d observations, sum %.3f s (want 2, between 0.2 and %.3f)", n, sum, 2*elapsed)
	}
	first.Settle(Outcome{Kind: Released})
	if d := c.next(t); d.Count != 2 {
		t.Errorf("redelivery count %d", d.Count)
	}
	if n, _ := read(); n != 2 {
		t.Errorf("the redelivery was observed: %d observations", n)
	}
}

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
