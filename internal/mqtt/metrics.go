package mqtt

import "github.com/prometheus/client_golang/prometheus"

// metrics carry a tenant label where per-tenant usage matters and no
// per-client or per-topic labels (unbounded cardinality).
type metrics struct {
	connections *prometheus.GaugeVec   // throng_mqtt_connections
	connects    *prometheus.CounterVec // throng_mqtt_connects_total{result}
	received    *prometheus.CounterVec // throng_mqtt_messages_received_total
	sent        *prometheus.CounterVec // throng_mqtt_messages_sent_total
	dropped     *prometheus.CounterVec // throng_mqtt_messages_dropped_total{reason}
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "throng_mqtt_connections", Help: "Connected MQTT clients.",
		}, []string{"tenant"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_mqtt_connects_total", Help: "MQTT CONNECT attempts by result.",
		}, []string{"result"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_mqtt_messages_received_total", Help: "PUBLISH packets received from clients.",
		}, []string{"tenant"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_mqtt_messages_sent_total", Help: "PUBLISH packets sent to clients.",
		}, []string{"tenant"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_mqtt_messages_dropped_total", Help: "Messages dropped for a client: QoS 0 for a slow client (slow_client), oversize for the client (too_large), live QoS 1/2 beyond the per-connection queue (queue_full).",
		}, []string{"tenant", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.connects, m.received, m.sent, m.dropped)
	}
	return m
}
