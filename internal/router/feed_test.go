package router

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

// Issue 10 item 1: a consumer without credit holds no messages. A has
// credit 5 of a queue holding 20 (in batch entries); B attaching later
// with credit 15 gets the other 15 at once.
func TestQueueNoCreditHoldsNothing(t *testing.T) {
	e := batchedQueue(t, 20)
	_, a := consume(t, e.r, "default", "q", ConsumeOptions{}, 5)
	seen := map[string]bool{}
	for range 5 {
		seen[string(a.next(t).Message.Body)] = true
	}
	a.none(t, 100*time.Millisecond)
	_, b := consume(t, e.r, "default", "q", ConsumeOptions{}, 15)
	for range 15 {
		d := b.next(t)
		if seen[string(d.Message.Body)] {
			t.Fatalf("%q delivered twice", d.Message.Body)
		}
		seen[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	if len(seen) != 20 {
		t.Fatalf("%d distinct messages", len(seen))
	}
	a.none(t, 100*time.Millisecond)
}

// Issue 10 item 2: messages spread over the consumers with credit
// (round-robin), every consumer gets a share.
func TestQueueFairDispatch(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	var cols []*collector
	for range 3 {
		_, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 60)
		cols = append(cols, col)
	}
	publishBatched(t, e.r, "q", 60)
	total := 0
	shares := make([]int, 3)
	deadline := time.Now().Add(10 * time.Second)
	for total < 60 && time.Now().Before(deadline) {
		for i, col := range cols {
			select {
			case d := <-col.ch:
				shares[i]++
				total++
				d.Settle(Outcome{Kind: Accepted})
			default:
			}
		}
	}
	if total != 60 {
		t.Fatalf("got %d of 60 (shares %v)", total, shares)
	}
	for _, s := range shares {
		if s < 15 || s > 25 {
			t.Fatalf("unfair shares %v", shares)
		}
	}
}

// Issue 10 item 3: a receiver that attaches and at once drains gets what
// the queue holds, then the drain completes; an empty queue drains at
// once. Repeated, because the bug was a race between the credit's pull
// request and the drain's.
func TestDrainAtAttach(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	mustAddr(t, e.r, "default", &address.Address{Name: "t", Type: address.Topic})
	mustAddr(t, e.r, "default", &address.Address{Name: "t2", Type: address.Topic})
	mustAddr(t, e.r, "default", &address.Address{Name: "sub", Type: address.Subscription, Topic: "t2"})
	if _, err := e.r.Consume(ctxT(t), "default", "t::sub", ConsumeOptions{}, func(*Delivery) {}); err != nil {
		t.Fatal(err) // creates the subscription; closed by the router at cleanup
	}
	for _, name := range []string{"q", "t::sub", "sub"} {
		pub := map[string]string{"q": "q", "t::sub": "t", "sub": "t2"}[name]
		for round := range 10 {
			publish(t, e.r, "default", pub, fmt.Sprintf("a%d", round))
			publish(t, e.r, "default", pub, fmt.Sprintf("b%d", round))
			col := newCollector()
			c, err := e.r.Consume(ctxT(t), "default", name, ConsumeOptions{}, col.deliver)
			if err != nil {
				t.Fatal(err)
			}
			// The engine counts a stored message as pending for a
			// consumer a moment after acknowledging its publish (on
			// another goroutine); "available" starts then.
			Eventually(t, func() bool {
				cn, err := c.ts.js.Consumer(context.Background(), c.stream, c.cons)
				if err != nil {
					return false
				}
				info, err := cn.Info(context.Background())
				return err == nil && info.NumPending+uint64(info.NumAckPending) >= 2
			})
			c.AddCredit(5)
			drainWait(t, c)
			if len(col.ch) != 2 || c.Credit() != 0 {
				t.Fatalf("%s round %d: drain delivered %d of 2 (credit left %d)", name, round, len(col.ch), c.Credit())
			}
			for range 2 {
				(<-col.ch).Settle(Outcome{Kind: Accepted})
			}
			// Empty now: a drain completes at once with nothing.
			c.AddCredit(3)
			drainWait(t, c)
			if len(col.ch) != 0 || c.Credit() != 0 {
				t.Fatalf("%s round %d: empty drain delivered %d", name, round, len(col.ch))
			}
			c.Close()
		}
	}
}

// Issue 10 item 5: modified with undeliverable-here never comes back to
// that consumer; another consumer gets it.
func TestQueueUndeliverableHere(t *testing.T) {
	// Short: the message waits for another consumer long enough to be
	// given back to the engine and come again; the exclusion holds.
	old := idleRelease
	idleRelease = 200 * time.Millisecond
	t.Cleanup(func() { idleRelease = old })
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	publish(t, e.r, "default", "q", "poison")
	publish(t, e.r, "default", "q", "fine")
	_, a := consume(t, e.r, "default", "q", ConsumeOptions{}, 10)
	d := a.next(t)
	if string(d.Message.Body) != "poison" {
		t.Fatalf("got %q first", d.Message.Body)
	}
	d.Settle(Outcome{Kind: Modified, UndeliverableHere: true})
	if d := a.next(t); string(d.Message.Body) != "fine" {
		t.Fatalf("got %q, want fine", d.Message.Body)
	} else {
		d.Settle(Outcome{Kind: Accepted})
	}
	a.none(t, 2*time.Second) // given back idle (NAK delay 1 s) and pulled again
	_, b := consume(t, e.r, "default", "q", ConsumeOptions{}, 10)
	d = b.next(t)
	if string(d.Message.Body) != "poison" || d.Count < 2 {
		t.Fatalf("b got %q (count %d)", d.Message.Body, d.Count)
	}
	d.Settle(Outcome{Kind: Accepted})
	a.none(t, 100*time.Millisecond)
}

// Issue 10 item 7: a released message keeps its place at the head of the
// queue.
func TestQueueReleasedKeepsPlace(t *testing.T) {
	e := batchedQueue(t, 10)
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 1)
	for i := range 10 {
		d := col.next(t)
		if string(d.Message.Body) != strconv.Itoa(i) || d.Count != 1 {
			t.Fatalf("got %q (count %d), want %d", d.Message.Body, d.Count, i)
		}
		d.Settle(Outcome{Kind: Released})
		c.AddCredit(1)
		d = col.next(t)
		if string(d.Message.Body) != strconv.Itoa(i) || d.Count != 2 {
			t.Fatalf("after release got %q (count %d), want %d again", d.Message.Body, d.Count, i)
		}
		d.Settle(Outcome{Kind: Accepted})
		c.AddCredit(1)
	}
	col.none(t, 100*time.Millisecond)
}

// Issue 10 item 7: after a crash, the messages of an entry that were
// already accepted are not delivered again; only the others are.
func TestQueueCrashRedeliversOnlyUnsettled(t *testing.T) {
	shortAckWait(t)
	dir := t.TempDir()
	e := start(t, dir)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	publishBatched(t, e.r, "q", 10)
	_, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 10)
	// The largest entry: its first half is accepted, the rest of it
	// stays unsettled; every other message is accepted.
	bySeq := map[uint64][]*Delivery{}
	var big uint64
	for range 10 {
		d := col.next(t)
		bySeq[d.Sequence] = append(bySeq[d.Sequence], d)
		if len(bySeq[d.Sequence]) > len(bySeq[big]) {
			big = d.Sequence
		}
	}
	g := bySeq[big]
	if len(g) < 2 {
		t.Fatalf("no batch entry formed: %d entries", len(bySeq))
	}
	want := map[string]bool{}
	for _, d := range g[len(g)/2:] {
		want[string(d.Message.Body)] = true
	}
	for _, ds := range bySeq {
		for _, d := range ds {
			if !want[string(d.Message.Body)] {
				d.Settle(Outcome{Kind: Accepted})
			}
		}
	}
	// The progress record is written shortly after the settlements.
	ts, err := e.r.tenant(ctxT(t), "default")
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, func() bool {
		s, err := ts.js.Stream(context.Background(), progressStream)
		if err != nil {
			return false
		}
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 1
	})
	// Crash: the engine stops under the router, which acknowledges
	// nothing more.
	e.eng.Shutdown()
	e.r.Close()
	e.store.Close()
	e.r = nil

	e2 := start(t, dir)
	_, col2 := consume(t, e2.r, "default", "q", ConsumeOptions{}, 100)
	got := map[string]bool{}
	for range want {
		d := col2.next(t)
		got[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("redelivered %v, want only the unsettled %v", got, want)
	}
	col2.none(t, 3*ackWait)
	backlogIs(t, e2.r, "q", 0)
	// The record is removed with the entry.
	ts2, _ := e2.r.tenant(ctxT(t), "default")
	Eventually(t, func() bool {
		s, err := ts2.js.Stream(context.Background(), progressStream)
		if err != nil {
			return false
		}
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
}

// A released part of an entry whose other parts were accepted, given back
// to the engine when its consumer leaves, comes back alone.
func TestQueueMixedEntryReleasedOnClose(t *testing.T) {
	e := batchedQueue(t, 10)
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 10)
	for i := range 10 {
		d := col.next(t)
		if i%2 == 0 {
			d.Settle(Outcome{Kind: Accepted})
		}
		// odd ones stay unsettled and are released by Close
	}
	c.Close()
	// The entries come back as the engine redelivers them; the accepted
	// messages never do.
	_, col2 := consume(t, e.r, "default", "q", ConsumeOptions{}, 100)
	got := map[string]bool{}
	for range 5 {
		d := col2.next(t)
		got[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	if fmt.Sprint(got) != "map[1:true 3:true 5:true 7:true 9:true]" {
		t.Fatalf("redelivered %v, want the odd (unsettled) ones", got)
	}
	col2.none(t, 200*time.Millisecond)
	backlogIs(t, e.r, "q", 0)
}

// Members of one durable subscription on one node share it round-robin.
func TestSubscriptionSharedByMembers(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "t", Type: address.Topic})
	var mu sync.Mutex
	counts := map[int]int{}
	for i := range 2 {
		c, err := e.r.Consume(ctxT(t), "default", "t::shared", ConsumeOptions{}, func(d *Delivery) {
			mu.Lock()
			counts[i]++
			mu.Unlock()
			d.Settle(Outcome{Kind: Accepted})
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		c.AddCredit(100)
	}
	for i := range 20 {
		publish(t, e.r, "default", "t", strconv.Itoa(i))
	}
	Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return counts[0]+counts[1] == 20
	})
	mu.Lock()
	defer mu.Unlock()
	if counts[0] == 0 || counts[1] == 0 {
		t.Fatalf("shares %v", counts)
	}
}

// Deleting a queue removes the chunks of its large messages.
func TestDeleteAddressPurgesChunks(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "big", Type: address.Queue})
	body := make([]byte, 3<<20)
	if _, err := e.r.Publish(ctxT(t), "default", "big", &message.Message{Body: body, Durable: true}); err != nil {
		t.Fatal(err)
	}
	if n, _, err := e.r.LargeChunks(ctxT(t), "default"); err != nil || n == 0 {
		t.Fatalf("chunks %d (%v): the message was not chunked", n, err)
	}
	if err := e.r.DeleteAddress(ctxT(t), "default", "big"); err != nil {
		t.Fatal(err)
	}
	if n, _, err := e.r.LargeChunks(ctxT(t), "default"); err != nil || n != 0 {
		t.Fatalf("%d chunks left after the queue was deleted (%v)", n, err)
	}
}

// A single node keeps the ready messages of a consumer that stopped
// granting credit, in order: newer messages do not overtake them (found
// by the soak harness with a stuck consumer).
func TestQueueStuckConsumerKeepsOrder(t *testing.T) {
	old := idleRelease
	idleRelease = 100 * time.Millisecond
	t.Cleanup(func() { idleRelease = old })
	e := batchedQueue(t, 50)
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 5)
	for i := range 5 {
		d := col.next(t)
		if string(d.Message.Body) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d", d.Message.Body, i)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	col.none(t, 1500*time.Millisecond) // stuck for many idle periods
	for i := 50; i < 55; i++ {
		publish(t, e.r, "default", "q", strconv.Itoa(i))
	}
	c.AddCredit(100)
	for i := 5; i < 55; i++ {
		d := col.next(t)
		if string(d.Message.Body) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d: order broken after the stall", d.Message.Body, i)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
}

// TestCrashTakesBackInOrder (issue 11.3): entries a killed node had
// delivered and not settled come first, in order, when the only node
// restarts — not after the engine's ack wait, behind newer messages (an
// MQTT persistent session saw a dead node's messages after newer ones).
func TestCrashTakesBackInOrder(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	for i := range 4 {
		publish(t, e.r, "default", "q", fmt.Sprint("m", i))
	}
	_, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 2)
	for _, want := range []string{"m0", "m1"} {
		if d := col.next(t); string(d.Message.Body) != want {
			t.Fatalf("got %q, want %q", d.Message.Body, want)
		}
	}
	// Crash: the engine stops under the router, which settles nothing.
	e.eng.Shutdown()
	e.r.Close()
	e.store.Close()
	e.r = nil

	e2 := start(t, dir)
	for i := 4; i < 6; i++ {
		publish(t, e2.r, "default", "q", fmt.Sprint("m", i))
	}
	_, col2 := consume(t, e2.r, "default", "q", ConsumeOptions{}, 10)
	for i := range 6 {
		d := col2.next(t) // well within the 30 s ack wait
		if want := fmt.Sprint("m", i); string(d.Message.Body) != want {
			t.Fatalf("after the restart got %q, want %q (in order, the dead node's first)", d.Message.Body, want)
		}
		// Only what was sent before the crash may count as redelivered.
		// (Not necessarily all of it: the engine writes its consumer's
		// delivered state lazily, and a kill can lose the last of it;
		// such a message then comes as a first delivery, still in order.)
		if d.Count > 1 && i >= 2 {
			t.Fatalf("%s, published after the restart, has delivery count %d", d.Message.Body, d.Count)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	col2.none(t, 500*time.Millisecond)
}

// TestReconnectDoesNotTakeBack: a feed that starts again in the same
// process (the consumer's earlier feed closed) leaves the engine's
// pending entries alone: their acknowledgements may still be on their way,
// and taking them back would deliver settled messages again.
func TestReconnectDoesNotTakeBack(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	for i := range 3 {
		publish(t, e.r, "default", "q", fmt.Sprint("m", i))
	}
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 3)
	for range 3 {
		col.next(t).Settle(Outcome{Kind: Accepted})
	}
	c.Close()
	_, col2 := consume(t, e.r, "default", "q", ConsumeOptions{}, 10)
	col2.none(t, time.Second)
	backlogIs(t, e.r, "q", 0)
}

// TestCrashSettledOutOfOrderNotAgain: when the dead node had settled an
// entry after one it had not, taking back by a consumer reset would
// deliver the settled one again; the ack wait brings back only the
// unsettled ones then.
func TestCrashSettledOutOfOrderNotAgain(t *testing.T) {
	shortAckWait(t)
	dir := t.TempDir()
	e := start(t, dir)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	for i := range 3 {
		publish(t, e.r, "default", "q", fmt.Sprint("m", i))
	}
	_, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 3)
	var ds []*Delivery
	for range 3 {
		ds = append(ds, col.next(t))
	}
	ds[1].Settle(Outcome{Kind: Accepted})
	backlogIs(t, e.r, "q", 2)
	e.eng.Shutdown()
	e.r.Close()
	e.store.Close()
	e.r = nil

	e2 := start(t, dir)
	_, col2 := consume(t, e2.r, "default", "q", ConsumeOptions{}, 10)
	got := map[string]bool{}
	for range 2 {
		d := col2.next(t)
		got[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	if !got["m0"] || !got["m2"] {
		t.Fatalf("redelivered %v, want m0 and m2", got)
	}
	col2.none(t, 3*ackWait)
}

// peerRouter starts a second router on e's engine: to the engine's account
// it is another node (peers counts it), with feeds of its own on the same
// engine consumers.
func peerRouter(t *testing.T, e *env) *Router {
	t.Helper()
	r, err := New(ctxT(t), Config{Engine: e.eng, Store: e.store, AnycastTimeout: 5 * time.Second, TempSweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// With other nodes in the account but no consumer of the queue on them, a
// stuck consumer's ready messages stay on its node, in order (found by
// the cluster soak: amqp-queue reordered in its stuck cycle). Given back,
// the rest of the entry the consumer held came back only when it settled
// what it held, with the engine's NAK delay, after newer entries.
func TestQueueStuckConsumerKeepsOrderWithPeers(t *testing.T) {
	old := idleRelease
	idleRelease = 100 * time.Millisecond
	t.Cleanup(func() { idleRelease = old })
	e := batchedQueue(t, 50)
	peerRouter(t, e)
	if ts, err := e.r.tenant(ctxT(t), "default"); err != nil || ts.peers() < 2 {
		t.Fatalf("the second router is not another node of the account (%v)", err)
	}
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 5)
	held := make([]*Delivery, 0, 5)
	for i := range 5 {
		d := col.next(t)
		if string(d.Message.Body) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d", d.Message.Body, i)
		}
		held = append(held, d) // stuck: received, not settled
	}
	col.none(t, 1500*time.Millisecond) // stuck for many idle periods
	for i := 50; i < 55; i++ {
		publish(t, e.r, "default", "q", strconv.Itoa(i))
	}
	for _, d := range held {
		d.Settle(Outcome{Kind: Accepted})
	}
	c.AddCredit(100)
	for i := 5; i < 55; i++ {
		d := col.next(t)
		if string(d.Message.Body) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d: order broken after the stall", d.Message.Body, i)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
}

// A stuck consumer's ready messages still go to a consumer of the queue on
// another node that asks for them.
func TestQueueStuckConsumerReadyGoesToPeer(t *testing.T) {
	old := idleRelease
	idleRelease = 100 * time.Millisecond
	t.Cleanup(func() { idleRelease = old })
	e := batchedQueue(t, 50)
	r2 := peerRouter(t, e)
	_, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 5)
	for range 5 {
		col.next(t).Settle(Outcome{Kind: Accepted})
	}
	col.none(t, 500*time.Millisecond) // stuck: no credit
	_, other := consume(t, r2, "default", "q", ConsumeOptions{}, 100)
	seen := map[string]bool{}
	for len(seen) < 45 {
		d := other.next(t)
		seen[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	for i := 5; i < 50; i++ {
		if !seen[strconv.Itoa(i)] {
			t.Fatalf("message %d did not reach the other node's consumer (got %d messages)", i, len(seen))
		}
	}
	col.none(t, 100*time.Millisecond)
}

// With other nodes in the account, an entry acknowledged in full whose ack
// the engine lost (its consumer leader died before the ack reached the
// replicas) comes again after the ack wait: it is acknowledged again, not
// given out a second time (cluster soak, session 15: QoS 2 messages
// completed by a subscriber that stayed connected came again under new
// packet ids).
func TestLostAckNotDeliveredAgain(t *testing.T) {
	shortAckWait(t)
	e := newEnv(t)
	peerRouter(t, e)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	var lose atomic.Bool
	old := ackPublish
	ackPublish = func(nc *nats.Conn, subj string, b []byte) error {
		if lose.CompareAndSwap(true, false) {
			return nil // lost on its way, as to a dying leader
		}
		return old(nc, subj, b)
	}
	t.Cleanup(func() { ackPublish = old })
	_, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 10)
	publish(t, e.r, "default", "q", "once")
	d := col.next(t)
	lose.Store(true)
	d.Settle(Outcome{Kind: Accepted})
	col.none(t, 3*ackWait) // the engine redelivers it after the ack wait
	if lose.Load() {
		t.Fatal("no ack was sent")
	}
	publish(t, e.r, "default", "q", "next")
	if d := col.next(t); string(d.Message.Body) != "next" {
		t.Fatalf("got %q (count %d), want next", d.Message.Body, d.Count)
	}
}
