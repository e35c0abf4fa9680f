package hono

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/message"
)

// Connection events (Hono's Event API, "Connection Event"; concepts,
// "Connection Events"): when a device connects to or disconnects from a
// stateful adapter (MQTT, AMQP), an event on event/T with content type
// ContentTypeConnection and the JSON payload
//
//	{"cause": "connected"|"disconnected", "remote-id": "<id>", "source": "<adapter>"}
//
// Hono turns them on per adapter process (hono.connectionEvents.producer:
// none, logging, events); throng per tenant, with the same words, in the
// tenant's ext (all adapters) or an adapter entry's ext (that adapter,
// winning over the tenant's):
//
//	{"ext": {"connection-events": "events"}}
//	{"adapters": [{"type": "hono-mqtt", "enabled": true, "ext": {"connection-events": "events"}}]}
//
// true means "events", false "none"; anything else, or nothing, is
// "none". docs/hono.md, "Connection events".

// ContentTypeConnection is Hono's connection event.
const ContentTypeConnection = "application/vnd.eclipse-hono-dc-notification+json"

// ExtConnectionEvents is the ext key of the setting.
const ExtConnectionEvents = "connection-events"

// The setting's values (Hono's producer types).
const (
	ConnEventsNone    = "none"
	ConnEventsLogging = "logging"
	ConnEventsEvents  = "events"
)

// connEventsMode reads the setting's JSON value.
func connEventsMode(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ConnEventsNone
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return ConnEventsNone
	}
	switch v := v.(type) {
	case bool:
		if v {
			return ConnEventsEvents
		}
	case string:
		switch s := strings.ToLower(strings.TrimSpace(v)); s {
		case ConnEventsEvents, ConnEventsLogging:
			return s
		}
	}
	return ConnEventsNone
}

// ConnectionEventsMode is the tenant's setting for an adapter: none,
// logging or events.
func (s *Service) ConnectionEventsMode(tenantName, adapter string) string {
	tc := s.tenantConf(tenantName)
	if tc == nil {
		return ConnEventsNone
	}
	if m, ok := tc.connEvents[adapter]; ok {
		return m
	}
	return tc.connEvents[""]
}

// ConnectionEvent reports that device principal p connected to
// (connected) or disconnected from an adapter (auth.AdapterMQTT,
// auth.AdapterAMQP, ...); remote is Hono's remote-id, the MQTT client
// identifier or the AMQP container id. Depending on the tenant's setting
// it publishes the event on event/T (and returns once it is stored),
// logs it, or does nothing. Principals that are not devices are ignored,
// as Hono sends events for authenticated devices only. A failed publish
// is logged; the caller goes on either way. Safe for concurrent use; it
// should not run on a goroutine that may not block (a stored publish
// takes milliseconds).
//
// The message: content-type ContentTypeConnection, durable, creation-time,
// app-props device_id, tenant_id, orig_adapter (= adapter), qos 1, and
// the tenant's defaults and max-ttl, as for any event (Hono applies the
// tenant's defaults, not the device's, to it).
func (s *Service) ConnectionEvent(ctx context.Context, p *auth.Principal, adapter, remote string, connected bool) {
	if p == nil || !p.IsDevice() || IsUnauthenticated(p) {
		// Hono: only authenticated devices cause events (an
		// unauthenticated connection names no device).
		return
	}
	cause := "disconnected"
	if connected {
		cause = "connected"
	}
	switch s.ConnectionEventsMode(p.Tenant, adapter) {
	case ConnEventsLogging:
		s.log.Info("device "+cause, "tenant", p.Tenant, "device", p.Device, "adapter", adapter, "remote_id", remote)
		return
	case ConnEventsEvents:
	default:
		return
	}
	body, _ := json.Marshal(struct {
		Cause    string `json:"cause"`
		RemoteID string `json:"remote-id"`
		Source   string `json:"source"`
	}{cause, remote, adapter})
	addr := Event + "/" + p.Tenant
	m := &message.Message{
		Body: body, ContentType: ContentTypeConnection, CreationTime: s.now(), Durable: true, To: addr,
		Properties: map[string]any{
			PropDeviceID: p.Device, PropTenantID: p.Tenant, PropOrigAdapter: adapter, PropQoS: int32(1),
		},
	}
	applyDefaults(s.tenantConf(p.Tenant), nil, m, KindEvent, 1, 0)
	if _, err := s.pub.Publish(ctx, p.Tenant, addr, m); err != nil {
		s.log.Warn("connection event not sent", "tenant", p.Tenant, "device", p.Device, "cause", cause, "err", err)
	}
}
