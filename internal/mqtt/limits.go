package mqtt

// packetOverhead is the room a PUBLISH needs beside its payload (fixed
// header, topic, packet id, properties) when the maximum packet size is
// derived from a maximum message size.
const packetOverhead = 64 << 10

// PacketSizeFor returns the maximum packet size that lets a client send
// messages of up to maxMessage bytes of payload.
func PacketSizeFor(maxMessage int) int {
	return min(maxMessage+packetOverhead, maxPacketLimit)
}

// maxPacketLimit is the largest packet the protocol can express (a
// remaining length of four bytes) [MQTT-1.5.5].
const maxPacketLimit = 268435455

// maxPacketFor is the largest packet the server accepts from a client of
// the tenant: derived from the tenant's maxMessageSize limit when it has
// one, else Config.MaxPacketSize. It is what MQTT 5 clients are told in
// CONNACK (Maximum Packet Size); a larger packet ends the connection
// with DISCONNECT 0x95 (MQTT 5) or is closed (3.1.1).
func (s *Server) maxPacketFor(tenantName string) int {
	if t, ok := s.cfg.Store.Tenant(tenantName); ok && t.Effective().MaxMessageSize > 0 {
		return PacketSizeFor(t.Effective().MaxMessageSize)
	}
	return s.cfg.MaxPacketSize
}
