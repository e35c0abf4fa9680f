package httpapi

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics carry no tenant or device labels: requests that fail
// authentication have neither, and devices are unbounded.
type metrics struct {
	requests *prometheus.CounterVec   // throng_http_requests_total{endpoint,status}
	duration *prometheus.HistogramVec // throng_http_request_duration_seconds{endpoint}
	commands *prometheus.CounterVec   // throng_http_commands_total{result}

	// series resolved on first use (observe), by Endpoint (0: other)
	// and status code - 100
	counters  [4][500]atomic.Pointer[counterRef]
	durations [4]atomic.Pointer[observerRef]
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_http_requests_total", Help: "HTTP adapter requests by endpoint (telemetry, event, command_response, other) and status code.",
		}, []string{"endpoint", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "throng_http_request_duration_seconds", Help: "HTTP adapter request duration by endpoint, long polls (hono-ttd) included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 60},
		}, []string{"endpoint"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_http_commands_total", Help: "Requests with hono-ttd by result: a command delivered in the response (delivered), none before the ttd (expired), a malformed command rejected (rejected).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.commands)
	}
	return m
}

// observe counts a request of the device adapter and its duration. The
// series of an endpoint and status are resolved once (WithLabelValues
// hashes the label values and takes a lock each time; a sync.Map would box
// its int key): a kept-alive device costs atomic loads and adds here.
func (m *metrics) observe(ep Endpoint, status int, d time.Duration) {
	if int(ep) >= len(m.counters) || status < 100 || status >= 600 {
		m.requests.WithLabelValues(ep.String(), strconv.Itoa(status)).Inc()
		m.duration.WithLabelValues(ep.String()).Observe(d.Seconds())
		return
	}
	c := m.counters[ep][status-100].Load()
	if c == nil {
		c = &counterRef{m.requests.WithLabelValues(ep.String(), strconv.Itoa(status))}
		m.counters[ep][status-100].Store(c)
	}
	c.Inc()
	o := m.durations[ep].Load()
	if o == nil {
		o = &observerRef{m.duration.WithLabelValues(ep.String())}
		m.durations[ep].Store(o)
	}
	o.Observe(d.Seconds())
}

type counterRef struct{ prometheus.Counter }
type observerRef struct{ prometheus.Observer }
