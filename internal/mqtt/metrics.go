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
	disconnects *prometheus.CounterVec // throng_mqtt_server_disconnects_total{reason}
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
			Name: "throng_mqtt_messages_dropped_total", Help: "Messages dropped for a client, by reason: QoS 0 (or AMQP non-durable) to a client that does not keep up (slow_client), larger than the client's maximum packet size (too_large), live QoS 1/2 beyond mqtt.maxQueuedMessages (queue_full) or beyond 16 MiB waiting in the connection (queue_bytes), queued for a subscription whose connection ended (session_ended), expired while queued (expired).",
		}, []string{"tenant", "reason"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_mqtt_server_disconnects_total", Help: "Connections the server ended because the client did not keep up: no write progress for 1.5x keep-alive (write_timeout), the socket failed while writing (write_error), control packets beyond 4x the write queue (write_queue_full), QueueOverflow=disconnect (queue_full, queue_bytes).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.connects, m.received, m.sent, m.dropped, m.disconnects)
	}
	return m
}
