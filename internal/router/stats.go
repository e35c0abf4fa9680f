package router

import "github.com/throngmq/throng/internal/message"

// Address counters, reported by AddressStats (admin API stats). They
// count on this node since it started.
//
// A message counts in only when the address accepted it (stored, taken by
// a live fan-out, or accepted by an anycast consumer); a publish refused
// for any reason — size or address limit, engine error, no consumer, an
// anycast consumer's reject or release, a timeout — counts as rejected
// instead. Issue 11.7: users size consumers on these figures, and counting
// refused publishes in overstated the inflow.

// accepted counts a message accepted into the address.
func (c *addrCounters) accepted(bodyLen int) {
	c.in.Add(1)
	c.bytesIn.Add(uint64(bodyLen))
}

// delivered counts a message handed to a consumer.
func (c *addrCounters) delivered(m *message.Message) {
	c.out.Add(1)
	c.bytesOut.Add(uint64(bodyLen(m)))
}

// bodyLen is the payload size counted by the byte counters: the body, as
// the publisher sent it, also when a large message's bytes are not loaded.
func bodyLen(m *message.Message) int {
	if m.Body == nil && m.Large != nil {
		return m.Large.BodyLen
	}
	return len(m.Body)
}

// counted wraps a publish's completion so that it counts the outcome: in
// (and the throng_router_messages_in_total metric) when accepted,
// rejected otherwise. It costs one closure per stored or anycast publish;
// the at-most-once path counts directly.
func (p *Producer) counted(m *message.Message, done func(Outcome, error)) func(Outcome, error) {
	n := bodyLen(m)
	return func(o Outcome, err error) {
		p.count(n, o, err)
		done(o, err)
	}
}

func (p *Producer) count(bodyLen int, o Outcome, err error) {
	if err == nil && o.Kind == Accepted {
		p.ctr.accepted(bodyLen)
		p.in.Inc()
		return
	}
	p.ctr.rejected.Add(1)
}
