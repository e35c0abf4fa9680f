package mqtt

import "strings"

// Bridges connecting to throng (docs/bridges.md, "mosquitto as a
// concentrator").
//
// A mosquitto bridge with try_private (its default) sets the top bit of
// the CONNECT's protocol level (0x84 for 3.1.1): it is a bridge, so the
// broker does not send its own messages back to it (no-local on every
// subscription) and keeps the retain flag of what it forwards to it
// (retain as published). MQTT 5 bridges ask for both per subscription;
// the bit is honoured there too.
//
// With notifications (also the default), the bridge's will, and the
// retained "1" it publishes once connected, go to
// "$SYS/broker/connection/<client id>/state". throng refuses "$SYS" to
// clients (auth.Reserved) except exactly this topic of the connection's
// own client id: it says whether that connection is up, the connection
// may not name another one, and the client id is unique in the tenant
// (a second connection with it takes the session over). It needs no
// send permission; it is published, retained, in the tenant's topic
// space, where any client permitted to receive it may subscribe to it
// (e.g. "$SYS/broker/connection/+/state").

const bridgeBit = 0x80

// stripBridgeBit clears the bridge bit of a CONNECT body's protocol level
// and reports whether it was set. A body too short to hold the level is
// left to the decoder to refuse.
func stripBridgeBit(body []byte) bool {
	if len(body) < 2 {
		return false
	}
	at := 2 + (int(body[0])<<8 | int(body[1])) // after the protocol name
	if at >= len(body) || body[at]&bridgeBit == 0 {
		return false
	}
	body[at] &^= bridgeBit
	return true
}

// bridgeStatePrefix and bridgeStateSuffix enclose a client id in the
// topic a mosquitto bridge reports its connection state on.
const (
	bridgeStatePrefix = "$SYS/broker/connection/"
	bridgeStateSuffix = "/state"
)

// BridgeStateTopic is the topic on which the bridge connected with
// clientID reports its state ("1" connected, "0" not; retained).
func BridgeStateTopic(clientID string) string {
	return bridgeStatePrefix + clientID + bridgeStateSuffix
}

// ownBridgeState reports whether topic is the bridge-state topic of the
// connection's own client id.
func (c *conn) ownBridgeState(topic string) bool {
	return len(topic) == len(bridgeStatePrefix)+len(c.clientID)+len(bridgeStateSuffix) &&
		strings.HasPrefix(topic, bridgeStatePrefix) && strings.HasSuffix(topic, bridgeStateSuffix) &&
		topic[len(bridgeStatePrefix):len(topic)-len(bridgeStateSuffix)] == c.clientID
}
