package router

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// A subscription in force on every node before its SUBACK (issue 10,
// item 12: "across nodes too").
//
// A live subscription is registered with this node's engine when
// Consume returns (startLive flushes), but it reaches the other nodes as
// a route message (RS+) shortly after: a publish on another node right
// after the SUBACK went nowhere. So, on a cluster, the consumer then asks
// every other node's router, in the tenant's account, to answer a
// barrier request. The engine sends an account's subscription changes
// and its messages over the same route connection, in order, so when the
// request reaches a node, that node's engine has the subscription, and
// a publish there afterwards is routed here.
//
// A node whose router does not have the tenant open has no barrier
// responder; the engine answers "no responders" at once, and that node
// has no publisher of the tenant (any later one comes after the RS+,
// which is already on its way). A node that does not answer in
// barrierWait (stopped, cut off) is not waited for longer, nor asked
// again for barrierSkip: the subscription is in force there when the
// routes carry it, as before the barrier.

// barrierWait bounds the wait for the other nodes' answers.
const barrierWait = 2 * time.Second

// barrierSkip is how long a node that did not answer in barrierWait is
// not asked again: while a node is stopped (SIGSTOP, a partition not yet
// noticed by the routes) every subscription would wait barrierWait.
const barrierSkip = 10 * time.Second

// barrierSubject is answered by the named node's router, in each
// tenant's account (outside the t., s., d. subjects clients use).
func barrierSubject(node string) string { return "_throng.barrier." + node }

// routedCache keeps the engine's list of routed nodes for a second: a
// burst of subscriptions (thousands of devices connecting) asks once.
// The list is taken again at once when the number of route connections
// changed (a cheap count): a list taken a moment before a node's route
// came up left that node out of every barrier for up to a second — a
// PUBACK then did not wait for the node although it had a subscriber
// there (TestAckAfterPeersHaveCopies, when the cluster had formed within
// that second). It also remembers the nodes that did not answer a barrier
// in time.
type routedCache struct {
	mu     sync.Mutex
	at     time.Time
	routes int // the engine's route connections when nodes was taken
	nodes  []string
	silent map[string]time.Time // node → when it last failed to answer
}

// routedNodes returns the other nodes to ask, those that recently failed
// to answer left out.
func (r *Router) routedNodes() []string {
	rc := &r.routed
	rc.mu.Lock()
	defer rc.mu.Unlock()
	now := time.Now()
	if n := r.eng.RouteCount(); n != rc.routes || now.Sub(rc.at) > time.Second {
		rc.nodes, rc.routes, rc.at = r.eng.RoutedNodes(), n, now
	}
	if len(rc.silent) == 0 {
		return rc.nodes
	}
	var ask []string
	for _, n := range rc.nodes {
		if at, ok := rc.silent[n]; ok && now.Sub(at) < barrierSkip {
			continue
		}
		ask = append(ask, n)
	}
	return ask
}

// barrierAnswered records whether a node answered a barrier in time.
func (r *Router) barrierAnswered(node string, ok bool) {
	rc := &r.routed
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if ok {
		delete(rc.silent, node)
		return
	}
	if rc.silent == nil {
		rc.silent = map[string]time.Time{}
	}
	rc.silent[node] = time.Now()
}

// answerBarrier makes this node's router answer barrier requests in the
// tenant's account.
func (t *tenantState) answerBarrier(node string) error {
	_, err := t.nc.Subscribe(barrierSubject(node), func(m *nats.Msg) {
		_ = m.Respond(nil)
	})
	return err
}

// barrier returns once every other routed node has this node's
// subscriptions of the tenant made so far (see above), or after
// barrierWait. The caller has flushed the connections it subscribed on.
func (t *tenantState) barrier() {
	if !t.r.eng.Clustered() {
		return
	}
	t.barrierOn(t.nc)
}

// barrierOn asks every other routed node's router to answer a barrier
// request sent on nc, in parallel, and returns when all have answered or
// after barrierWait. A node without a responder (its router does not
// have the tenant open) answers "no responders" at once. Subscriptions
// ask on the connection they subscribed on (barrier), durable live
// publishes on the one their copies went out on (liveack.go).
func (t *tenantState) barrierOn(nc *nats.Conn) {
	nodes := t.r.routedNodes()
	if len(nodes) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), barrierWait)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := nc.RequestWithContext(ctx, barrierSubject(n), nil)
			ok := err == nil || errors.Is(err, nats.ErrNoResponders)
			if !ok {
				t.r.log.Debug("barrier not answered", "tenant", t.name, "node", n, "err", err)
			}
			t.r.barrierAnswered(n, ok)
		}()
	}
	wg.Wait()
}
