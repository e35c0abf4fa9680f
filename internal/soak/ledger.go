package soak

import (
	"bytes"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Semantics says what a stream promises, and so what the checker may call a
// failure. Everything else is counted, never failed.
type Semantics struct {
	// MustDeliver: every acknowledged message must be delivered (queues,
	// subscriptions, persistent sessions at QoS >= 1, and anycast, whose
	// acknowledgement is the consumer's own).
	MustDeliver bool
	// Ordered: one producer's messages are first delivered in the order they
	// were sent (a queue with one consumer, an MQTT session per publisher).
	Ordered bool
	// ExactlyOnce: a second delivery is never allowed (MQTT QoS 2).
	ExactlyOnce bool
	// NoAck: the producer gets no acknowledgement (MQTT QoS 0); sent
	// messages not delivered are counted as dropped.
	NoAck bool
}

// Per-message state bits.
const (
	stSent    = 1 << iota // the producer tried to send it
	stAcked               // positively acknowledged (PUBACK/PUBCOMP, AMQP accepted)
	stRefused             // refused with the protocol's error (negative PUBACK, rejected, released)
)

// disruption is bumped by every fault and every client reconnect; a
// delivery made in a later disruption epoch than the message's first one is
// a redelivery the protocols allow (at-least-once after a crash or a
// reconnect), one in the same epoch is not.
var disruption atomic.Uint32

func bumpDisruption() { disruption.Add(1) }

// producer is one producer's record: slices indexed by sequence number - 1.
type producer struct {
	state      []uint8
	deliveries []uint16
	sentEpoch  []uint32 // disruption epoch when it was sent
	firstEpoch []uint32
	firstPkt   []uint16 // MQTT packet id of the first delivery, 0 if none
	maxFirst   int      // highest sequence number first-delivered so far
}

// Stream is one checked flow of messages: producers with ids, one logical
// consumer (possibly several links). Safe for concurrent use.
type Stream struct {
	Name string
	Sem  Semantics

	mu    sync.Mutex
	prods map[int]*producer

	sent, acked, refused int64
	delivered, dups      int64
	dupsBad, reorders    int64
	phantoms             int64
	dupEx                []string // latest duplicates not allowed
	reorderEx            []string // latest reorders
	lastDelivery         int64    // count of deliveries, to see progress

	ttls         map[[2]int]ttlMsg // messages sent with a TTL, by producer and sequence
	expiredLate  int64             // delivered although expired by the node's wall clock
	expiredLateE []string
}

// ttlMsg is a message sent with a TTL (message expiry): it may be dropped
// once expired, and must not be delivered then.
type ttlMsg struct {
	ttl  time.Duration
	sent time.Time // the harness's clock when it was published
}

// expirySlack absorbs the time between the harness's reading of its clock
// and the node's (publish, delivery).
const expirySlack = 2 * time.Second

// mayHaveExpired: the node may have dropped the message as expired by now
// — its wall clock (ours plus the offset of the clockjump fault) has
// reached the expiry it stamped on the message at publish, or the TTL has
// passed in real time (the engine's per-message TTL, Nats-TTL, counts real
// time: package clock does not shift nats-server's clock).
func (m ttlMsg) mayHaveExpired(now time.Time) bool {
	lo, _ := wallRange(m.sent)
	return maxWall(m.sent, now) >= lo+m.ttl-expirySlack || now.Sub(m.sent) >= m.ttl-expirySlack
}

// deliveredExpired: the node's wall clock was past the message's expiry
// for certain when it was delivered at now (expiry does not work).
func (m ttlMsg) deliveredExpired(now time.Time) bool {
	_, hi := wallRange(m.sent)
	lo, _ := wallRange(now)
	return lo >= hi+m.ttl+expirySlack
}

// Wall-clock offsets of the node over time (clockjump fault): the node's
// wall clock is ours plus the offset. A change is known only between the
// write of the offset file and the node's acknowledgement, so around it
// both offsets are possible.
var clockHist struct {
	sync.Mutex
	iv []clockInterval
}

type clockInterval struct {
	from, to time.Time // to zero: still in force
	off      time.Duration
}

// noteClock records a jump to off, written at written and acknowledged by
// the node at applied.
func noteClock(written, applied time.Time, off time.Duration) {
	clockHist.Lock()
	defer clockHist.Unlock()
	if n := len(clockHist.iv); n > 0 && clockHist.iv[n-1].to.IsZero() {
		clockHist.iv[n-1].to = applied
	}
	clockHist.iv = append(clockHist.iv, clockInterval{from: written, off: off})
}

// wallRange returns the node's earliest and latest possible wall clock
// (as nanoseconds of ours shifted) at t.
func wallRange(t time.Time) (lo, hi time.Duration) {
	clockHist.Lock()
	defer clockHist.Unlock()
	base := time.Duration(t.UnixNano())
	if len(clockHist.iv) == 0 {
		return base, base
	}
	first := true
	for _, iv := range clockHist.iv {
		if t.Before(iv.from) || (!iv.to.IsZero() && t.After(iv.to)) {
			continue
		}
		if first || iv.off < lo-base {
			lo = base + iv.off
		}
		if first || iv.off > hi-base {
			hi = base + iv.off
		}
		first = false
	}
	if first { // before the first jump
		return base, base
	}
	return lo, hi
}

// maxWall returns the latest wall clock the node may have had between t0
// and t1.
func maxWall(t0, t1 time.Time) time.Duration {
	_, best := wallRange(t1)
	clockHist.Lock()
	defer clockHist.Unlock()
	for _, iv := range clockHist.iv {
		if t1.Before(iv.from) || (!iv.to.IsZero() && iv.to.Before(t0)) {
			continue
		}
		end := t1
		if !iv.to.IsZero() && iv.to.Before(t1) {
			end = iv.to
		}
		best = max(best, time.Duration(end.UnixNano())+iv.off)
	}
	return best
}

// NextTTL is Next for a message sent with a TTL.
func (s *Stream) NextTTL(pid int, ttl time.Duration) int {
	seq := s.Next(pid)
	s.mu.Lock()
	if s.ttls == nil {
		s.ttls = map[[2]int]ttlMsg{}
	}
	s.ttls[[2]int{pid, seq}] = ttlMsg{ttl: ttl, sent: time.Now()}
	s.mu.Unlock()
	return seq
}

// NewStream returns an empty stream record.
func NewStream(name string, sem Semantics) *Stream {
	return &Stream{Name: name, Sem: sem, prods: map[int]*producer{}}
}

// Next assigns the next sequence number of producer pid and marks it sent.
func (s *Stream) Next(pid int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.prod(pid)
	p.state = append(p.state, stSent)
	p.deliveries = append(p.deliveries, 0)
	p.sentEpoch = append(p.sentEpoch, disruption.Load())
	p.firstEpoch = append(p.firstEpoch, 0)
	p.firstPkt = append(p.firstPkt, 0)
	s.sent++
	return len(p.state)
}

func (s *Stream) prod(pid int) *producer {
	p := s.prods[pid]
	if p == nil {
		p = &producer{}
		s.prods[pid] = p
	}
	return p
}

// Ack records a positive acknowledgement.
func (s *Stream) Ack(pid, seq int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.prods[pid]
	if p == nil || seq < 1 || seq > len(p.state) || p.state[seq-1]&(stAcked|stRefused) != 0 {
		return
	}
	p.state[seq-1] |= stAcked
	s.acked++
}

// Refuse records a negative acknowledgement (the protocol's error).
func (s *Stream) Refuse(pid, seq int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.prods[pid]
	if p == nil || seq < 1 || seq > len(p.state) || p.state[seq-1]&(stAcked|stRefused) != 0 {
		return
	}
	p.state[seq-1] |= stRefused
	s.refused++
}

// Deliver records one delivery of producer pid's message seq to this
// stream's consumer.
func (s *Stream) Deliver(pid, seq int) { s.deliver(pid, seq, 0) }

// deliver records a delivery; pkt is its MQTT packet id (0 for none). A
// QoS 2 message delivered again after a disruption under the same packet
// id is one that an MQTT client keeping its session state absorbs (it
// answers PUBREC and does not pass it on, [MQTT-4.3.3]); the harness's
// clients pass every PUBLISH on, so such a redelivery is counted as a
// duplicate but allowed. Under a new packet id it is not allowed.
func (s *Stream) deliver(pid, seq int, pkt uint16) {
	epoch := disruption.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastDelivery++
	p := s.prods[pid]
	if p == nil || seq < 1 || seq > len(p.state) {
		s.phantoms++
		return
	}
	i := seq - 1
	if p.deliveries[i] < ^uint16(0) {
		p.deliveries[i]++
	}
	if p.deliveries[i] > 1 {
		s.dups++
		// At least once: a redelivery is allowed after a disruption
		// since the first delivery (the consumer reconnected, the node
		// restarted) or since the message was sent (its publisher may
		// have resent it, as MQTT clients do after a reconnect).
		calm := p.firstEpoch[i] == epoch && p.sentEpoch[i] == epoch
		bad := calm || s.Sem.ExactlyOnce && (pkt == 0 || pkt != p.firstPkt[i])
		if bad {
			s.dupsBad++
			// The latest few, to tie them to a fault and find them
			// in the node's log.
			ex := fmt.Sprintf("p%d#%d pkt %d→%d", pid, seq, p.firstPkt[i], pkt)
			if p.firstEpoch[i] == epoch {
				ex += " (no reconnect or fault between)"
			}
			s.dupEx = append(s.dupEx, ex)
			if len(s.dupEx) > 3 {
				s.dupEx = s.dupEx[1:]
			}
		}
		return
	}
	s.delivered++
	if m, ok := s.ttls[[2]int{pid, seq}]; ok && m.deliveredExpired(time.Now()) {
		s.expiredLate++
		s.expiredLateE = append(s.expiredLateE, fmt.Sprintf("p%d#%d (ttl %s, sent %s ago)", pid, seq, m.ttl, time.Since(m.sent).Round(time.Second)))
		if len(s.expiredLateE) > 3 {
			s.expiredLateE = s.expiredLateE[1:]
		}
	}
	p.firstEpoch[i] = epoch
	p.firstPkt[i] = pkt
	if seq < p.maxFirst {
		s.reorders++
		s.reorderEx = append(s.reorderEx, fmt.Sprintf("p%d#%d after #%d", pid, seq, p.maxFirst))
		if len(s.reorderEx) > 3 {
			s.reorderEx = s.reorderEx[1:]
		}
	} else {
		p.maxFirst = seq
	}
}

// Phantom records a delivery that no producer of this stream sent.
func (s *Stream) Phantom() {
	s.mu.Lock()
	s.phantoms++
	s.lastDelivery++
	s.mu.Unlock()
}

// StreamStats is a snapshot of a stream's counters.
type StreamStats struct {
	Name                 string
	Sem                  Semantics
	Sent, Acked, Refused int64
	Delivered, Dups      int64
	DupsBad, Reorders    int64
	Phantoms             int64
	Missing              int64 // acknowledged (or, NoAck, sent) and never delivered
	Deliveries           int64
	UnackedDelivered     int64 // sent without an acknowledgement, delivered anyway (allowed)
	MissingExamples      []string
	DupExamples          []string // latest duplicates not allowed: producer#seq, packet ids
	ReorderExamples      []string // latest reorders: producer#seq after #highest
	Lost, Dropped        int64    // Missing split by semantics: MustDeliver → Lost, else Dropped
	TTLSent              int64    // sent with a TTL
	Expired              int64    // sent with a TTL, acknowledged, not delivered, may have expired (allowed; not in Missing)
	ExpiredDelivered     int64    // delivered although expired by the node's wall clock
	ExpiredExamples      []string // latest of those
	ReordersFatal        int64    // Reorders where Ordered
	RefusedButDelivered  int64    // refused, delivered anyway
	producers            int
}

// Stats scans the stream. Lost and Dropped are what is missing now: they
// are final only once consumers have caught up.
func (s *Stream) Stats() StreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := StreamStats{Name: s.Name, Sem: s.Sem, Sent: s.sent, Acked: s.acked, Refused: s.refused,
		Delivered: s.delivered, Dups: s.dups, DupsBad: s.dupsBad, Reorders: s.reorders,
		Phantoms: s.phantoms, Deliveries: s.lastDelivery, producers: len(s.prods),
		DupExamples: append([]string(nil), s.dupEx...), ReorderExamples: append([]string(nil), s.reorderEx...),
		TTLSent: int64(len(s.ttls)), ExpiredDelivered: s.expiredLate, ExpiredExamples: append([]string(nil), s.expiredLateE...)}
	now := time.Now()
	for pid, p := range s.prods {
		for i, f := range p.state {
			d := p.deliveries[i] > 0
			if m, ok := s.ttls[[2]int{pid, i + 1}]; ok && !d && f&stAcked != 0 && m.mayHaveExpired(now) {
				st.Expired++
				continue
			}
			switch {
			case f&stAcked != 0 && !d, s.Sem.NoAck && f&stRefused == 0 && !d:
				st.Missing++
				if len(st.MissingExamples) < 5 {
					st.MissingExamples = append(st.MissingExamples, fmt.Sprintf("p%d#%d", pid, i+1))
				}
			case f&stRefused != 0 && d:
				st.RefusedButDelivered++
			case f&(stAcked|stRefused) == 0 && d:
				st.UnackedDelivered++
			}
		}
	}
	if s.Sem.MustDeliver {
		st.Lost = st.Missing
	} else {
		st.Dropped = st.Missing
	}
	if s.Sem.Ordered {
		st.ReordersFatal = st.Reorders
	}
	return st
}

// progress returns the number of deliveries so far.
func (s *Stream) progress() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastDelivery
}

// Payload layout: "soak|<stream>|<producer>|<seq>|" then padding. Parsing
// is strict so that a corrupted or foreign message counts as a phantom.
func encodePayload(stream string, pid, seq, size int) []byte {
	b := make([]byte, 0, size+48)
	b = append(b, "soak|"...)
	b = append(b, stream...)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, '|')
	for len(b) < size {
		b = append(b, byte('a'+len(b)%26))
	}
	return b
}

func decodePayload(b []byte) (stream string, pid, seq int, ok bool) {
	rest, found := bytes.CutPrefix(b, []byte("soak|"))
	if !found {
		return "", 0, 0, false
	}
	parts := bytes.SplitN(rest, []byte("|"), 4)
	if len(parts) != 4 {
		return "", 0, 0, false
	}
	p, err1 := strconv.Atoi(string(parts[1]))
	q, err2 := strconv.Atoi(string(parts[2]))
	if err1 != nil || err2 != nil {
		return "", 0, 0, false
	}
	for i, c := range parts[3] {
		if c != byte('a'+(len(b)-len(parts[3])+i)%26) {
			return "", 0, 0, false
		}
	}
	return string(parts[0]), p, q, true
}

// record books a received payload on the stream it arrived on; a message
// of another stream, or an unparsable one, is a phantom.
func (s *Stream) record(payload []byte) { s.recordPkt(payload, 0) }

// recordPkt is record for an MQTT delivery with its packet id.
func (s *Stream) recordPkt(payload []byte, pkt uint16) {
	name, pid, seq, ok := decodePayload(payload)
	if !ok || name != s.Name {
		s.Phantom()
		return
	}
	s.deliver(pid, seq, pkt)
}
