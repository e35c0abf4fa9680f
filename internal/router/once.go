package router

import (
	"strconv"
	"strings"
)

// Live deliveries of a message published again under its name
// (PublishOnce) reach a live topic-space consumer once.
//
// A stored copy is deduplicated by the engine (Nats-Msg-Id). A live copy
// is not stored, so nothing in the engine can tell that a message is the
// second attempt of one already delivered: an MQTT QoS 2 PUBLISH routed
// live on a node that died before the client's session recorded it as
// routed is sent again by the client, after it reconnected to another
// node, under the same name — and every live subscriber got it twice
// (MQTT-4.3.3: exactly once). The live subscribers' copies of a stored
// message are no better: they are the engine's core deliveries of the
// publish, which see every attempt.
//
// So each live consumer remembers the names it has taken. A name is
// "<sequence>.<n>": the part before the last dot names an ordered
// sequence of publishes (one MQTT connection's QoS 2 messages), n (base
// 36) the publish's place in it. Per sequence the consumer keeps the
// highest n taken and which of the onceWindow numbers below it were
// taken (a sliding window, as IPsec's replay check): a number in the
// window seen before is a duplicate. A number below the window, a
// sequence forgotten (the least recently used goes when there are
// onceSequences), a name of another form: not known, delivered — a
// duplicate is possible then, never a loss. Copies of one sequence may arrive out
// of order (stored and live subjects are separate engine
// subscriptions), by far less than the window.
const (
	onceHeader    = "Nats-Msg-Id" // the name, on stored and live engine messages alike
	onceWindow    = 1024          // numbers per sequence remembered below the highest
	onceSequences = 256           // sequences remembered per consumer
)

// onceSeen is one consumer's memory of the names it has taken; guarded
// by the consumer's mu, made on the first named message.
type onceSeen struct {
	seqs map[string]*onceSeq
	tick uint64 // counts look-ups: onceSeq.used
}

type onceSeq struct {
	high uint64                  // highest number taken
	bits [onceWindow / 64]uint64 // bit (n % onceWindow): n taken, for high-onceWindow < n <= high
	used uint64                  // onceSeen.tick when last used
}

// splitOnce parses a name "<sequence>.<n>".
func splitOnce(name string) (string, uint64, bool) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(name[i+1:], 36, 64)
	if err != nil {
		return "", 0, false
	}
	return name[:i], n, true
}

// seen reports whether the name was taken before, and if not records it.
func (o *onceSeen) seen(name string) bool {
	key, n, ok := splitOnce(name)
	if !ok {
		return false
	}
	o.tick++
	s := o.seqs[key]
	if s == nil {
		if o.seqs == nil {
			o.seqs = map[string]*onceSeq{}
		}
		if len(o.seqs) >= onceSequences {
			o.forget()
		}
		s = &onceSeq{high: n}
		o.seqs[key] = s
		s.set(n)
		s.used = o.tick
		return false
	}
	s.used = o.tick
	switch {
	case n > s.high:
		// Clear the numbers the window moves past.
		if n-s.high >= onceWindow {
			s.bits = [onceWindow / 64]uint64{}
		} else {
			for k := s.high + 1; k <= n; k++ {
				s.bits[(k%onceWindow)/64] &^= 1 << (k % 64)
			}
		}
		s.high = n
		s.set(n)
		return false
	case s.high-n >= onceWindow:
		return false // below the window: not known
	case s.bits[(n%onceWindow)/64]&(1<<(n%64)) != 0:
		return true
	default:
		s.set(n)
		return false
	}
}

func (s *onceSeq) set(n uint64) { s.bits[(n%onceWindow)/64] |= 1 << (n % 64) }

// forget drops the least recently used sequence (a scan: only when a
// consumer hears from more than onceSequences publishers).
func (o *onceSeen) forget() {
	var oldest string
	var at uint64
	for k, s := range o.seqs {
		if oldest == "" || s.used < at {
			oldest, at = k, s.used
		}
	}
	delete(o.seqs, oldest)
}
