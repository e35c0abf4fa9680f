package bridge

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/throngmq/throng/internal/router"
)

// The out window (docs/bridges.md, "Throughput"): an MQTT or AMQP
// mapping sends up to Window stored messages to the remote before their
// acknowledgements come back, instead of one round trip per message.
//
//   - Order: messages are handed to the connection one after the other
//     by the mapping's own goroutine (MQTT through autopaho's publish
//     queue, which one goroutine writes in order; AMQP with
//     SendWithReceipt on the mapping's sender link), so the remote
//     receives them in the order of the durable subscription.
//   - Settled locally only on the remote's acknowledgement (PUBACK,
//     accepted), each when its own comes.
//   - A message that fails (connection lost without a PUBACK and the
//     session not resumed, released, no answer within ackTimeout) stops
//     the window: nothing new is sent until every message in flight has
//     an outcome, then the failed ones are sent again one at a time, in
//     order, by the blocking path (send, sendAMQP), and the window opens
//     again. A message the remote refuses for good (PUBACK ≥ 0x80,
//     rejected) is final, as before.

// ackTimeout is how long a windowed message may wait for its
// acknowledgement once it is on the connection (paho resends an MQTT
// session's unacknowledged messages itself after a reconnection).
const ackTimeout = 30 * time.Second

// Outcomes of a windowed send.
const (
	outAccepted = iota
	outRejected // refused for good by the remote
	outFailed   // to be sent again
	outSkipped  // settled already (not this mapping's)
)

type outResult struct {
	seq    uint64
	it     outItem
	kind   int
	reason string
}

// windowed reports whether a delivery goes through the window: stored
// messages of MQTT (at QoS 1) and AMQP bridges.
func (r *runner) windowed(it outItem) bool {
	if it.live || it.d.PreSettled() {
		return false
	}
	switch r.def.kind() {
	case KindAMQP:
		return true
	case KindMQTT:
		return r.def.qos() > 0 && it.d.Message.Durable && r.mqttPipe != nil
	}
	return false
}

// windowLoop forwards a mapping's deliveries from q with up to
// Window messages in flight; credit(it) gives the router one more.
func (r *runner) windowLoop(mp Mapping, q <-chan outItem, credit func(outItem)) {
	win := r.def.window()
	results := make(chan outResult, 2*outWindow)
	var seq uint64
	inflight := 0
	var failed []outResult
	settle := func(res outResult) {
		d := res.it.d
		switch res.kind {
		case outAccepted:
			d.Settle(router.Outcome{Kind: router.Accepted})
			r.count("out", "sent")
		case outSkipped:
		case outRejected:
			r.fail(fmt.Errorf("remote refused a message for %q: %s", d.Address, res.reason))
			d.Settle(router.Outcome{Kind: router.Rejected, Description: "remote refused it: " + res.reason})
			r.count("out", "dropped")
		}
		credit(res.it)
	}
	for {
		in := q
		if inflight >= win || len(failed) > 0 {
			in = nil
		}
		select {
		case <-r.ctx.Done():
			// What is in flight is unsettled: the router gives it again
			// after a restart (the remote may then have it twice).
			return
		case res := <-results:
			inflight--
			if res.kind == outFailed {
				failed = append(failed, res)
			} else {
				settle(res)
			}
			if inflight > 0 || len(failed) == 0 {
				continue
			}
			// Everything in flight has an outcome: the failed ones again,
			// one at a time, in their order.
			slices.SortFunc(failed, func(a, b outResult) int { return int(a.seq - b.seq) })
			r.fail(fmt.Errorf("%d of the window's messages for %q sent again one at a time: %s", len(failed), mp.LocalFilter(), failed[0].reason))
			for _, f := range failed {
				if r.ctx.Err() != nil {
					return
				}
				r.count("out", "retried")
				r.forward(f.it.d, mp, func() { credit(f.it) })
			}
			failed = nil
		case it := <-in:
			if !r.windowed(it) {
				r.forward(it.d, mp, func() { credit(it) })
				continue
			}
			if r.overflowDrop(it.d) {
				credit(it)
				continue
			}
			seq++
			s := seq
			done := func(kind int, reason string) {
				select {
				case results <- outResult{seq: s, it: it, kind: kind, reason: reason}:
				case <-r.ctx.Done():
				}
			}
			inflight++
			if r.def.kind() == KindAMQP {
				r.issueAMQP(it.d, mp, done)
			} else {
				r.issueMQTT(it.d, mp, done)
			}
		}
	}
}

// ---- MQTT

// mqttPipe matches the messages the window put on autopaho's publish
// queue with their acknowledgements: the queue is written by one
// goroutine in order, and trackedSession sees each PUBLISH as paho adds
// it to the session, with the channel its PUBACK will come on.
type mqttPipe struct {
	mu      sync.Mutex
	pending []*mqttPending // queued, not yet in the session, in queue order
	// What the remote's CONNACK allows; a message beyond it is not
	// queued (paho would drop it from the queue unsent).
	maxQoS      byte
	retainAvail bool
}

type mqttPending struct {
	topic   string
	payload []byte
	once    sync.Once
	done    func(kind int, reason string)
}

func (p *mqttPending) finish(kind int, reason string) { p.once.Do(func() { p.done(kind, reason) }) }

// trackedSession is paho's in-memory session state, telling the pipe
// when a queued PUBLISH enters it.
type trackedSession struct {
	*state.State
	pipe *mqttPipe
}

var _ session.SessionManager = (*trackedSession)(nil)

func (s *trackedSession) AddToSession(ctx context.Context, packet session.Packet, resp chan<- packets.ControlPacket) error {
	pub, ok := packet.(*packets.Publish)
	if !ok {
		return s.State.AddToSession(ctx, packet, resp)
	}
	p := s.pipe.take(pub)
	if p == nil {
		return s.State.AddToSession(ctx, packet, resp) // the blocking path's (send)
	}
	// The window's: sent with PublishMethod_AsyncSend, nobody reads resp.
	mine := make(chan packets.ControlPacket, 1) // paho's send never blocks
	if err := s.State.AddToSession(ctx, packet, mine); err != nil {
		s.pipe.putBack(p) // left in the queue: paho tries again
		return err
	}
	go func() {
		t := time.NewTimer(ackTimeout)
		defer t.Stop()
		var cp packets.ControlPacket
		select {
		case cp = <-mine:
		case <-t.C:
			p.finish(outFailed, fmt.Sprintf("no PUBACK within %s", ackTimeout))
			return
		}
		ack, ok := cp.Content.(*packets.Puback)
		switch {
		case !ok:
			// The session ended (closed, or a remote without it).
			p.finish(outFailed, "the remote session ended before the PUBACK")
		case ack.ReasonCode >= 0x80:
			why := ""
			if ack.Properties != nil {
				why = ack.Properties.ReasonString
			}
			p.finish(outRejected, strings.TrimSpace(fmt.Sprintf("reason 0x%02x %s", ack.ReasonCode, why)))
		default:
			p.finish(outAccepted, "")
		}
	}()
	return nil
}

// putBack returns a message take took to the head of the queue.
func (p *mqttPipe) putBack(m *mqttPending) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending = append([]*mqttPending{m}, p.pending...)
}

// take returns the pending message a PUBLISH entering the session is
// (nil if it is none of the window's: the blocking path's). Queued
// messages enter in queue order; one that does not come (paho dropped
// it) is failed when a later one does.
func (p *mqttPipe) take(pub *packets.Publish) *mqttPending {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, m := range p.pending {
		if m.topic == pub.Topic && bytes.Equal(m.payload, pub.Payload) {
			skipped := p.pending[:i]
			p.pending = p.pending[i+1:]
			for _, s := range skipped {
				go s.finish(outFailed, "dropped from the publish queue")
			}
			return m
		}
	}
	return nil
}

// issueMQTT queues one stored message for the remote; done gets its
// outcome.
func (r *runner) issueMQTT(d *router.Delivery, mp Mapping, done func(int, string)) {
	p, topic, ok := r.mqttPublish(d, mp)
	if !ok {
		d.Settle(router.Outcome{Kind: router.Accepted}) // not this mapping's (a wildcard's edge)
		done(outSkipped, "")
		return
	}
	pipe := r.mqttPipe
	pipe.mu.Lock()
	if p.QoS > pipe.maxQoS || (p.Retain && !pipe.retainAvail) {
		pipe.mu.Unlock()
		// paho would refuse it: the blocking path says why.
		done(outFailed, "the remote's CONNACK does not allow it")
		return
	}
	pm := &mqttPending{topic: topic, payload: p.Payload, done: done}
	pipe.pending = append(pipe.pending, pm)
	err := r.cm.PublishViaQueue(r.ctx, &autopaho.QueuePublish{Publish: p})
	if err != nil {
		pipe.pending = pipe.pending[:len(pipe.pending)-1]
	}
	pipe.mu.Unlock()
	if err != nil {
		pm.finish(outFailed, "publish queue: "+err.Error())
	}
}

// mqttUp records what the remote allows (its CONNACK).
func (p *mqttPipe) up(ack *paho.Connack) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.maxQoS, p.retainAvail = 2, true
	if ack != nil && ack.Properties != nil {
		if ack.Properties.MaximumQoS != nil {
			p.maxQoS = *ack.Properties.MaximumQoS
		}
		p.retainAvail = ack.Properties.RetainAvailable
	}
}

// ---- AMQP

// issueAMQP transfers one stored message on the mapping's sender link
// (in order: the caller is the mapping's goroutine) and waits for its
// outcome in the background.
func (r *runner) issueAMQP(d *router.Delivery, mp Mapping, done func(int, string)) {
	addr, ok := mp.ToRemote(d.Address)
	if !ok {
		d.Settle(router.Outcome{Kind: router.Accepted})
		done(outSkipped, "")
		return
	}
	msg, err := toGoAMQP(d)
	if err != nil {
		done(outFailed, err.Error()) // the blocking path rejects it
		return
	}
	c, snd, err := r.amqp.sender(r.ctx, addr)
	if err != nil {
		if r.ctx.Err() == nil {
			r.amqp.broken(c, addr, nil, err)
		}
		done(outFailed, fmt.Sprintf("amqp sender to %q: %v", addr, err))
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, ackTimeout)
	rc, err := snd.SendWithReceipt(ctx, msg, nil)
	if err != nil {
		cancel()
		if r.ctx.Err() == nil {
			r.amqp.broken(c, addr, snd, err)
		}
		done(outFailed, fmt.Sprintf("amqp send to %q: %v", addr, err))
		return
	}
	go func() {
		defer cancel()
		st, err := rc.Wait(ctx)
		switch st := st.(type) {
		case *amqp.StateAccepted:
			if err == nil {
				done(outAccepted, "")
				return
			}
		case *amqp.StateRejected:
			why := "rejected"
			if st.Error != nil {
				why = st.Error.Error()
			}
			done(outRejected, why)
			return
		}
		if err != nil && r.ctx.Err() == nil {
			r.amqp.broken(c, addr, snd, err)
		}
		done(outFailed, fmt.Sprintf("amqp send to %q: %v %T", addr, err, st))
	}()
}
