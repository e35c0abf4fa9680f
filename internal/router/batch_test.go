package router

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

// publishBatched publishes n messages ("0", "1", …) without waiting for
// each outcome, as a pipelining producer does, and fails the test unless
// the queue stored fewer entries than messages (batches formed).
func publishBatched(t *testing.T, r *Router, name string, n int) {
	t.Helper()
	p, err := r.Producer(ctxT(t), "default", name)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, n)
	for i := range n {
		p.Publish(msg(strconv.Itoa(i)), func(o Outcome, err error) {
			if err == nil && o.Kind != Accepted {
				err = fmt.Errorf("outcome %v", o.Kind)
			}
			errs <- err
		})
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	entries := queueEntries(t, r, name)
	if entries >= int64(n) {
		t.Fatalf("%d messages stored as %d entries: no batch formed", n, entries)
	}
	if testing.Verbose() && n > 40 {
		t.Logf("%d messages in %d entries", n, entries)
	}
	// The backlog counts messages, not entries (issue 11.7).
	if st, err := r.AddressStats(ctxT(t), "default", name); err != nil || st.Backlog < int64(n) {
		t.Fatalf("backlog %d after %d messages in %d entries (%v)", st.Backlog, n, entries, err)
	}
}

// queueEntries is the number of engine entries a queue holds.
func queueEntries(t *testing.T, r *Router, name string) int64 {
	t.Helper()
	ts, err := r.tenant(ctxT(t), "default")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := r.store.Address("default", name)
	s, err := ts.js.Stream(ctxT(t), streamFor(a))
	if err != nil {
		t.Fatal(err)
	}
	return int64(s.CachedInfo().State.Msgs)
}

func backlogIs(t *testing.T, r *Router, name string, n int64) {
	t.Helper()
	Eventually(t, func() bool {
		st, err := r.AddressStats(ctxT(t), "default", name)
		return err == nil && st.Backlog == n
	})
}

func TestQueueBatchOrderAndCredit(t *testing.T) {
	const n = 300
	e := batchedQueue(t, n)
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 7)
	next := 0
	for next < n {
		// Exactly the credit is delivered, whatever the entries hold.
		want := min(7, n-next)
		for range want {
			d := col.next(t)
			if string(d.Message.Body) != strconv.Itoa(next) || d.Count != 1 {
				t.Fatalf("got %q (count %d), want %d", d.Message.Body, d.Count, next)
			}
			next++
			d.Settle(Outcome{Kind: Accepted})
		}
		if next%70 == 0 {
			col.none(t, 50*time.Millisecond)
		}
		c.AddCredit(want)
	}
	col.none(t, 100*time.Millisecond)
	backlogIs(t, e.r, "q", 0)
}

func TestQueueBatchPartialRelease(t *testing.T) {
	const n = 60
	e := batchedQueue(t, n)
	_, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 1000)
	// Odd messages are released at their first delivery: each comes
	// again once, with its delivery count (a released message goes back
	// to its place, so it may come before later first deliveries); the
	// accepted ones never do.
	counts := map[int][]uint64{}
	for range n + n/2 {
		d := col.next(t)
		i, _ := strconv.Atoi(string(d.Message.Body))
		counts[i] = append(counts[i], d.Count)
		if i%2 == 1 && d.Count == 1 {
			d.Settle(Outcome{Kind: Released})
			continue
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	for i := range n {
		want := "[1]"
		if i%2 == 1 {
			want = "[1 2]"
		}
		if got := fmt.Sprint(counts[i]); got != want {
			t.Fatalf("message %d: counts %s, want %s", i, got, want)
		}
	}
	col.none(t, 200*time.Millisecond)
	backlogIs(t, e.r, "q", 0)
}

func TestQueueBatchReleaseOnClose(t *testing.T) {
	const n = 40
	e := batchedQueue(t, n)
	c1, col1 := consume(t, e.r, "default", "q", ConsumeOptions{}, 5)
	for range 5 {
		col1.next(t) // unsettled; the rest of their entries waits in the backlog
	}
	c1.Close()
	_, col2 := consume(t, e.r, "default", "q", ConsumeOptions{}, 1000)
	seen := map[string]bool{}
	for range n {
		d := col2.next(t)
		// Count 2 for what reached c1; an entry the engine had not yet
		// handed to c1 when it closed comes with count 1.
		if seen[string(d.Message.Body)] || d.Count > 2 {
			t.Fatalf("redelivered %q with count %d", d.Message.Body, d.Count)
		}
		seen[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	col2.none(t, 200*time.Millisecond)
	backlogIs(t, e.r, "q", 0)
}

func TestQueueBatchDeadLetter(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "jobs", Type: address.Queue, Limits: address.Limits{MaxDeliveries: 2}, DeadLetter: "jobs/dead"})
	mustAddr(t, e.r, "default", &address.Address{Name: "jobs/dead", Type: address.Queue})
	const n = 20
	publishBatched(t, e.r, "jobs", n)
	_, col := consume(t, e.r, "default", "jobs", ConsumeOptions{}, 1000)
	// Reject "3" and release the others at every attempt: a released
	// message comes back at once, in its place (so attempts of different
	// messages interleave), with its count; the third attempt exceeds
	// MaxDeliveries.
	counts := map[string][]uint64{}
	for range 2*(n-1) + 1 {
		d := col.next(t)
		b := string(d.Message.Body)
		counts[b] = append(counts[b], d.Count)
		if b == "3" {
			d.Settle(Outcome{Kind: Rejected, Description: "bad job"})
			continue
		}
		d.Settle(Outcome{Kind: Released})
	}
	for i := range n {
		want := "[1 2]"
		if i == 3 {
			want = "[1]"
		}
		if got := fmt.Sprint(counts[strconv.Itoa(i)]); got != want {
			t.Fatalf("message %d: delivery counts %s, want %s", i, got, want)
		}
	}
	col.none(t, 300*time.Millisecond)
	_, dead := consume(t, e.r, "default", "jobs/dead", ConsumeOptions{}, 1000)
	reasons := map[string]string{}
	for range n {
		d := dead.next(t)
		reasons[string(d.Message.Body)] = fmt.Sprint(d.Message.Properties["x-throng-dead-letter-reason"])
		d.Settle(Outcome{Kind: Accepted})
	}
	for i := range n {
		want := "delivery count exceeded"
		if i == 3 {
			want = "bad job"
		}
		if got := reasons[strconv.Itoa(i)]; got != want {
			t.Fatalf("message %d: reason %q, want %q", i, got, want)
		}
	}
	backlogIs(t, e.r, "jobs", 0)
}

func TestQueueBatchDrain(t *testing.T) {
	const n = 30
	e := batchedQueue(t, n)
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 10)
	for i := range 10 {
		if d := col.next(t); string(d.Message.Body) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d", d.Message.Body, i)
		}
	}
	drainWait(t, c)
	if c.Credit() != 0 {
		t.Fatalf("credit after drain %d", c.Credit())
	}
	col.none(t, 100*time.Millisecond)
	// A drain with credit and messages waiting in the backlog delivers them.
	c.Drain(func() {})
	c.AddCredit(5)
	for i := 10; i < 15; i++ {
		if d := col.next(t); string(d.Message.Body) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d", d.Message.Body, i)
		}
	}
	c.AddCredit(100)
	for i := 15; i < n; i++ {
		if d := col.next(t); string(d.Message.Body) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d", d.Message.Body, i)
		}
	}
}

// TestQueueBatchThenSingles: after big entries the consumer expects many
// messages per entry and asks for few entries; single-message entries
// then use up those requests with credit left. It must ask again without
// waiting for more credit (it stalled: a peer that returns credit when
// half is used, as AMQP receivers do, sends none while it has plenty).
func TestQueueBatchThenSingles(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 100)
	used := 0
	next := func() *Delivery {
		d := col.next(t)
		d.Settle(Outcome{Kind: Accepted})
		if used++; used == 50 {
			c.AddCredit(used)
			used = 0
		}
		return d
	}
	// Enough entries to use up the first requests (made when the
	// consumer still expected one message per entry).
	for range 60 {
		publishBatched(t, e.r, "q", 40)
		for range 40 {
			next()
		}
	}
	c.f.mu.Lock()
	t.Logf("credit %d outstanding %d per entry %.1f", c.f.memberLocked(c).credit, c.f.outstanding, c.f.perEntry)
	c.f.mu.Unlock()
	for i := range 100 {
		publish(t, e.r, "default", "q", "single-"+strconv.Itoa(i))
		if d := next(); string(d.Message.Body) != "single-"+strconv.Itoa(i) {
			t.Fatalf("got %q", d.Message.Body)
		}
	}
}

// TestQueueBatchBacklogKeepalive: messages that wait in a slow consumer's
// backlog (their entry brought more than the credit) are not redelivered
// when the ack wait passes: the consumer reports their entries in
// progress.
func TestQueueBatchBacklogKeepalive(t *testing.T) {
	shortAckWait(t)
	const n = 100
	e := batchedQueue(t, n)
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 3)
	got := map[string]bool{}
	take := func() {
		d := col.next(t)
		if got[string(d.Message.Body)] || d.Count != 1 {
			t.Fatalf("%q delivered again (count %d)", d.Message.Body, d.Count)
		}
		got[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	for range 3 {
		take()
	}
	// What the test is about: the ack wait passes while most of the
	// entries wait in the backlog of a slow consumer (one credit at a
	// time, so the backlog makes progress and is not given back).
	for start := time.Now(); time.Since(start) < 3*ackWait; {
		c.AddCredit(1)
		take()
		time.Sleep(keepalive / 2)
	}
	c.AddCredit(n)
	for len(got) < n {
		take()
	}
	col.none(t, 200*time.Millisecond)
}

// shortAckWait shortens the engine's ack wait and the keepalive period
// for one test; the restore is registered first, so it runs after the
// test's routers are closed (cleanups run last in, first out).
func shortAckWait(t *testing.T) {
	w, k := ackWait, keepalive
	t.Cleanup(func() { ackWait, keepalive = w, k })
	ackWait, keepalive = 1500*time.Millisecond, 500*time.Millisecond
}

// TestQueueUnsettledKeptAlive: deliveries a consumer holds unsettled
// longer than the engine's ack wait stay with it (keepalive), and the
// settled messages of their entries are not delivered again.
func TestQueueUnsettledKeptAlive(t *testing.T) {
	shortAckWait(t)
	const n = 100
	e := batchedQueue(t, n)
	publish(t, e.r, "default", "q", "plain") // a plain entry held too
	_, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 1000)
	var held []*Delivery
	for i := range n + 1 {
		d := col.next(t)
		if i%2 == 1 || string(d.Message.Body) == "plain" {
			held = append(held, d)
			continue
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	col.none(t, 3*ackWait) // what the test is about: the ack wait passes
	for _, d := range held {
		d.Settle(Outcome{Kind: Accepted})
	}
	col.none(t, 200*time.Millisecond)
	backlogIs(t, e.r, "q", 0)
}

// TestQueueBacklogReleasedWithoutCredit: a consumer whose backlog makes no
// progress for a keepalive period without credit gives it back, and
// another consumer gets those messages.
func TestQueueBacklogReleasedWithoutCredit(t *testing.T) {
	shortAckWait(t)
	const n = 200
	e := batchedQueue(t, n)
	_, colA := consume(t, e.r, "default", "q", ConsumeOptions{}, 3)
	got := map[string]bool{}
	for range 3 {
		d := colA.next(t)
		got[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	_, colB := consume(t, e.r, "default", "q", ConsumeOptions{}, 1000)
	for len(got) < n {
		d := colB.next(t)
		if got[string(d.Message.Body)] {
			t.Fatalf("%q delivered twice", d.Message.Body)
		}
		got[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	colA.none(t, 100*time.Millisecond)
}

// TestQueueDrainDeliversAllCredit: a drain delivers what is stored up to
// the credit, although a pull request asks for at most maxPullEntries
// entries.
func TestQueueDrainDeliversAllCredit(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	const n = 3 * maxPullEntries
	for i := range n {
		publish(t, e.r, "default", "q", strconv.Itoa(i))
	}
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 0)
	c.AddCredit(2 * maxPullEntries)
	drainWait(t, c)
	if len(col.ch) != 2*maxPullEntries || c.Credit() != 0 {
		t.Fatalf("drain delivered %d of %d (credit left %d)", len(col.ch), 2*maxPullEntries, c.Credit())
	}
}

// TestQueueDrainWithRefusedMessage: a drain whose request brings only a
// message the consumer's filter refuses still completes.
func TestQueueDrainWithRefusedMessage(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	publish(t, e.r, "default", "q", "refused")
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{Filter: func(*message.Message) bool { return false }}, 0)
	c.AddCredit(1)
	drainWait(t, c)
	col.none(t, 100*time.Millisecond)
}

// TestQueueBatchOrderWithLoneMessages: messages that must be entries of
// their own (an expiry) among others that are grouped: one producer's
// messages are stored and delivered in the order published (entries were
// sent after unlocking, and one could overtake another).
func TestQueueBatchOrderWithLoneMessages(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	p, err := e.r.Producer(ctxT(t), "default", "q")
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	pad := make([]byte, 2000) // fuller entries: more chances to overtake
	errs := make(chan error, n)
	for i := range n {
		m := msg(strconv.Itoa(i))
		m.Properties = map[string]any{"pad": pad}
		if i%7 == 0 {
			m.Expiry = time.Now().Add(time.Hour)
		}
		p.Publish(m, func(_ Outcome, err error) { errs <- err })
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	_, col := consume(t, e.r, "default", "q", ConsumeOptions{}, n)
	for i := range n {
		d := col.next(t)
		if string(d.Message.Body) != strconv.Itoa(i) {
			t.Fatalf("message %q (seq %d) where %d was expected", d.Message.Body, d.Sequence, i)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
}

// batchedQueue starts a router with a queue "q" holding n messages
// ("0", "1", …) stored in batch entries.
func batchedQueue(t *testing.T, n int) *env {
	t.Helper()
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	publishBatched(t, e.r, "q", n)
	return e
}

// drainWait drains c and fails the test unless the drain completes.
func drainWait(t *testing.T, c *Consumer) {
	t.Helper()
	drained := make(chan struct{})
	c.Drain(func() { close(drained) })
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not complete")
	}
}
