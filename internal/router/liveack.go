package router

import "sync"

// A durable topic-space publish is acknowledged on a cluster only once
// the other nodes have its live copies (issue 16: "every message that
// was acknowledged to a producer is delivered").
//
// Live subscribers on other nodes get a durable message as an engine
// (core NATS) copy: the publish goes out on this node's live connection
// (not stored: deliverLive) or, stored, the engine forwards the stored
// publish to them. Neither is acknowledged by the other node. The outcome
// was given as soon as the copy was handed to this node's engine, so a
// node killed a moment later took the copies still in its buffers with
// it: MQTT QoS 1/2 publishers had their PUBACK/PUBREC (QoS 2: the session
// recorded the message as routed, so the client's resend after moving
// to another node was answered without routing) and the live subscribers
// on the surviving nodes never got the messages (TestQoS2ResendAcrossNodes:
// the last 9 messages before the kill, on both other nodes).
//
// So such an outcome waits for a barrier (barrier.go) sent on the live
// connection after the copy: the engine sends an account's messages to a
// node over one route connection, in order, so when that node's router
// answers, its engine has had every copy sent before. Outcomes are
// batched: each batch waits for a barrier of its own, sent as soon as the
// batch is taken, with up to liveAckBarriers barriers out at once (one at
// a time halved a 3-node cluster's QoS 1 throughput: every batch waited
// for the previous barrier, then its own, and its outcomes ran on one
// goroutine). The outcomes of a batch run on its goroutine, in order; an
// MQTT connection's acknowledgements keep the order of its PUBLISHes
// whatever order the outcomes come in (ack slots). A node that does not
// answer in barrierWait is not waited for (nor asked for barrierSkip): a
// stopped node holds the outcomes for at most that long, once.

// liveAckBarriers bounds the barriers a tenant has out at once.
const liveAckBarriers = 4

// liveAcks is a tenant's outcomes waiting for a barrier.
type liveAcks struct {
	mu      sync.Mutex
	waiting []func()
	running bool          // a runLiveAcks goroutine takes the waiting
	slots   chan struct{} // barriers out (liveAckBarriers); made on first use
}

// afterPeers returns done wrapped so that an accepted outcome waits until
// the other nodes have what this node sent in the account so far; on a
// single node, or with no other node having the tenant open, done itself.
func (t *tenantState) afterPeers(done func(Outcome, error)) func(Outcome, error) {
	if !t.r.eng.Clustered() || t.peers() <= 1 {
		return done
	}
	return func(o Outcome, err error) {
		if err != nil || o.Kind != Accepted {
			done(o, err)
			return
		}
		t.whenPeersHave(func() { done(o, err) })
	}
}

// whenPeersHave calls f once every other routed node has answered a
// barrier sent after this call (or did not answer in barrierWait).
func (t *tenantState) whenPeersHave(f func()) {
	la := &t.liveAcks
	la.mu.Lock()
	la.waiting = append(la.waiting, f)
	if la.running {
		la.mu.Unlock()
		return
	}
	la.running = true
	if la.slots == nil {
		la.slots = make(chan struct{}, liveAckBarriers)
	}
	la.mu.Unlock()
	go t.runLiveAcks()
}

// runLiveAcks takes the waiting outcomes as batches, each with a barrier
// of its own, until none waits.
func (t *tenantState) runLiveAcks() {
	la := &t.liveAcks
	for {
		la.slots <- struct{}{} // a barrier may go out
		la.mu.Lock()
		batch := la.waiting
		la.waiting = nil
		if len(batch) == 0 {
			la.running = false
			la.mu.Unlock()
			<-la.slots
			return
		}
		la.mu.Unlock()
		go func() {
			t.barrierOn(t.live)
			<-la.slots
			for _, f := range batch {
				f()
			}
		}()
	}
}
