// Package bridge connects a tenant of throng with other brokers
// (docs/bridges.md): bridge definitions, stored per tenant in the
// engine's KV (store.go), and the MQTT bridge that runs them (mqtt.go):
// local topics to a remote MQTT broker ("out", from a durable
// subscription, settled after the remote's PUBACK) and remote topics into
// the tenant ("in", from a persistent remote session, acknowledged after
// the local outcome). Stock mosquitto bridges connecting to throng are
// accepted by the MQTT front-end itself (internal/mqtt/bridge.go).
package bridge
