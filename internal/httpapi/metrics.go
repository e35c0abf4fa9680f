package httpapi

import "github.com/prometheus/client_golang/prometheus"

// metrics carry no tenant or device labels: requests that fail
// authentication have neither, and devices are unbounded.
type metrics struct {
	requests *prometheus.CounterVec   // throng_http_requests_total{endpoint,status}
	duration *prometheus.HistogramVec // throng_http_request_duration_seconds{endpoint}
	commands *prometheus.CounterVec   // throng_http_commands_total{result}
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
