package httpapi

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/router"
)

// Receivers and locks of the messaging API (docs/http-messaging.md,
// "Receiving").
//
// A receive request is served by a receiver: one router consumer of the
// address on this node, which serves one request at a time. The request
// grants it credit for max messages, waits for the first one (or wait),
// then drains it (what is there now within the credit comes, then its
// credit is zero) and locks what came: each message stays unsettled in
// the receiver's consumer, under a lock token, until the client accepts,
// releases or rejects it, or the lock expires (the message is then given
// back for redelivery, counted as a failed delivery). A receiver goes
// back to its address's idle list after the request, keeping its locks;
// the next request on the address takes it again, so that long polls in
// a loop do not attach and detach a consumer each time. The janitor
// closes receivers idle for receiverIdle that hold no lock.
//
// Bounds (the memory this costs a node): at most maxReceivers receivers
// (router consumers; a concurrent receive request beyond is 429), at
// most maxLocks locks, maxUserLocks per user and maxLockedBytes of locked
// message bodies (a receive that would start beyond them is 429). Each
// lock holds its message, which the router holds anyway while it is
// unsettled.
//
// Lock order: messaging.mu, then receiver.mu; neither is held while
// calling the router (Consume, AddCredit, Drain, Settle, Close).

// Bounds of the receivers and locks of one node.
const (
	maxReceivers   = 4096
	maxLocks       = 100_000
	maxUserLocks   = 10_000
	maxLockedBytes = 256 << 20
	maxStreams     = 4096
	// receiverIdle is how long a receiver without locks stays open after
	// its last request.
	receiverIdle = 30 * time.Second
	// sweepEvery is how often the janitor expires locks: a lock ends at
	// most this much after its deadline.
	sweepEvery = 250 * time.Millisecond
	// drainTimeout bounds the wait for a drain (the engine's answer to a
	// no-wait pull request); a receiver whose drain does not finish is
	// closed.
	drainTimeout = 10 * time.Second
)

// rkey names an address of a tenant.
type rkey struct{ tenant, name string }

// messaging is the messaging API's state on this node.
type messaging struct {
	s *Server

	mu          sync.Mutex
	idle        map[rkey][]*receiver   // receivers not serving a request; guarded by mu
	all         map[*receiver]struct{} // open receivers; guarded by mu
	locks       map[string]*lock       // by token; guarded by mu
	userLocks   map[string]int         // locks by tenant\x00user; guarded by mu
	lockedBytes int64                  // body bytes of locked messages; guarded by mu
	closed      bool                   // set when the server shuts down; guarded by mu

	streams atomic.Int64 // open event streams
	janitor sync.Once
	expired prometheus.Counter
}

// receiver is one router consumer serving receive requests of an address.
type receiver struct {
	key rkey
	c   *router.Consumer

	// guarded by messaging.mu
	busy     bool
	closed   bool
	gone     bool // the router closed the consumer: its address was deleted
	lastUsed time.Time
	nlocks   int

	mu  sync.Mutex
	cur *receiveWait // the request being served; nil between requests; guarded by mu
}

// receiveWait collects the deliveries of one receive request.
type receiveWait struct {
	got   []*router.Delivery
	first chan struct{} // closed with the first delivery
	done  bool          // the request took what it got: later ones are released
}

// lock is a message locked for a client.
type lock struct {
	token    string
	r        *receiver
	d        *router.Delivery
	user     string // tenant \x00 user
	deadline time.Time
	size     int64
}

func newMessaging(s *Server, reg prometheus.Registerer) *messaging {
	ms := &messaging{s: s, idle: map[rkey][]*receiver{}, all: map[*receiver]struct{}{},
		locks: map[string]*lock{}, userLocks: map[string]int{}}
	ms.expired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "throng_http_api_locks_expired_total",
		Help: "Messages locked by a receive request of the HTTP messaging API whose lock expired (given back for redelivery).",
	})
	if reg != nil {
		gauge := func(name, help string, f func() float64) prometheus.Collector {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
		}
		reg.MustRegister(ms.expired,
			gauge("throng_http_api_locks", "Messages locked by receive requests of the HTTP messaging API.", func() float64 {
				ms.mu.Lock()
				defer ms.mu.Unlock()
				return float64(len(ms.locks))
			}),
			gauge("throng_http_api_receivers", "Router consumers serving receive requests of the HTTP messaging API.", func() float64 {
				ms.mu.Lock()
				defer ms.mu.Unlock()
				return float64(len(ms.all))
			}),
			gauge("throng_http_api_streams", "Open event streams (text/event-stream) of the HTTP messaging API.", func() float64 {
				return float64(ms.streams.Load())
			}))
	}
	return ms
}

// errLimit is a bound of this node's receivers, locks or streams (429).
func errLimit(what string) error {
	return newAPIError(codeLimitExceeded, what)
}

// mayLock refuses a receive that would start beyond the lock bounds.
func (ms *messaging) mayLock(user string) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	switch {
	case len(ms.locks) >= maxLocks:
		return errLimit(fmt.Sprintf("this node holds %d locks, its maximum: accept or release some", maxLocks))
	case ms.userLocks[user] >= maxUserLocks:
		return errLimit(fmt.Sprintf("the user holds %d locks, its maximum: accept or release some", maxUserLocks))
	case ms.lockedBytes >= maxLockedBytes:
		return errLimit("the messages locked on this node reach its maximum of bytes: accept or release some")
	}
	return nil
}

// acquire returns a receiver of the address for one request: an idle one,
// else a new router consumer. Only queues, subscriptions and anycast
// addresses are received from (ErrWrongType otherwise).
func (ms *messaging) acquire(ctx context.Context, key rkey) (*receiver, error) {
	ms.mu.Lock()
	if ms.closed {
		ms.mu.Unlock()
		return nil, router.ErrClosed
	}
	if rs := ms.idle[key]; len(rs) > 0 {
		r := rs[len(rs)-1]
		rs[len(rs)-1] = nil
		if rs = rs[:len(rs)-1]; len(rs) == 0 {
			delete(ms.idle, key)
		} else {
			ms.idle[key] = rs
		}
		r.busy = true
		ms.mu.Unlock()
		return r, nil
	}
	if len(ms.all) >= maxReceivers {
		ms.mu.Unlock()
		return nil, errLimit(fmt.Sprintf("this node serves %d receive requests at once, its maximum", maxReceivers))
	}
	r := &receiver{key: key, busy: true}
	ms.all[r] = struct{}{} // counted while it is being attached
	ms.mu.Unlock()
	c, err := ms.s.cfg.Router.Consume(ctx, key.tenant, key.name, router.ConsumeOptions{Gone: func() { ms.gone(r) }}, r.deliver)
	if err == nil {
		switch c.Type() {
		case address.Queue, address.Subscription, address.Anycast:
		default:
			c.Close()
			err = newAPIError(codeWrongType, fmt.Sprintf("%q is a %s: receive from a queue, a subscription (topic::name) or an anycast address; a topic or multicast address is streamed (GET …/messages, text/event-stream)", key.name, c.Type()))
		}
	}
	ms.mu.Lock()
	if err != nil {
		delete(ms.all, r)
		ms.mu.Unlock()
		return nil, err
	}
	r.c = c
	ms.mu.Unlock()
	ms.janitor.Do(func() { go ms.run() })
	return r, nil
}

// release puts a receiver back after a request.
func (ms *messaging) release(r *receiver) {
	ms.mu.Lock()
	r.busy = false
	r.lastUsed = time.Now()
	switch {
	case r.closed:
		ms.mu.Unlock()
	case ms.closed:
		ms.closeLocked(r)
		ms.mu.Unlock()
		r.c.Close()
	default:
		ms.idle[r.key] = append(ms.idle[r.key], r)
		ms.mu.Unlock()
	}
}

// gone forgets a receiver whose address was deleted (the router closed
// its consumer and released what it held): its locks end, and the next
// receive on the name attaches anew (to a new address of that name, or
// is refused).
func (ms *messaging) gone(r *receiver) {
	ms.mu.Lock()
	r.gone = true
	ms.closeLocked(r)
	ms.mu.Unlock()
}

func (ms *messaging) isGone(r *receiver) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return r.gone
}

// discard closes a receiver that cannot be trusted any more (its drain
// did not finish): its consumer releases what it holds, its locks end.
func (ms *messaging) discard(r *receiver) {
	ms.mu.Lock()
	ms.closeLocked(r)
	ms.mu.Unlock()
	r.c.Close()
}

// closeLocked forgets a receiver and its locks; the caller closes its
// consumer (which releases the locked messages). ms.mu held.
func (ms *messaging) closeLocked(r *receiver) {
	if r.closed {
		return
	}
	r.closed = true
	delete(ms.all, r)
	if rs := ms.idle[r.key]; len(rs) > 0 {
		for i, x := range rs {
			if x == r {
				rs = append(rs[:i], rs[i+1:]...)
				break
			}
		}
		if len(rs) == 0 {
			delete(ms.idle, r.key)
		} else {
			ms.idle[r.key] = rs
		}
	}
	if r.nlocks > 0 {
		for tok, l := range ms.locks {
			if l.r == r {
				ms.dropLocked(tok, l)
			}
		}
	}
}

// dropLocked removes a lock from the table. ms.mu held.
func (ms *messaging) dropLocked(tok string, l *lock) {
	delete(ms.locks, tok)
	l.r.nlocks--
	if n := ms.userLocks[l.user] - 1; n > 0 {
		ms.userLocks[l.user] = n
	} else {
		delete(ms.userLocks, l.user)
	}
	ms.lockedBytes -= l.size
}

// deliver is the receiver's router callback: a delivery for the request
// being served, or (arriving after it ended) released at once.
func (r *receiver) deliver(d *router.Delivery) {
	r.mu.Lock()
	w := r.cur
	if w == nil || w.done {
		r.mu.Unlock()
		d.Settle(router.Outcome{Kind: router.Released})
		return
	}
	w.got = append(w.got, d)
	if len(w.got) == 1 {
		close(w.first)
	}
	r.mu.Unlock()
}

// receive serves one receive request on r: it grants credit for
// p.max messages, waits up to p.wait for the first (or until stop is
// closed or ctx ends), then drains. ok is false when the drain did not
// finish (the receiver was discarded and what it had is released).
func (ms *messaging) receive(ctx context.Context, r *receiver, p receiveParams, stop <-chan struct{}) ([]*router.Delivery, bool) {
	w := &receiveWait{first: make(chan struct{})}
	r.mu.Lock()
	r.cur = w
	r.mu.Unlock()
	r.c.AddCredit(p.max)
	if p.wait > 0 {
		t := time.NewTimer(p.wait)
		select {
		case <-w.first:
		case <-t.C:
		case <-ctx.Done():
		case <-stop:
		}
		t.Stop()
	}
	drained := make(chan struct{})
	r.c.Drain(func() { close(drained) })
	ok := true
	t := time.NewTimer(drainTimeout)
	select {
	case <-drained:
	case <-t.C:
		ok = false
	}
	t.Stop()
	r.mu.Lock()
	got := w.got
	w.done, w.got, r.cur = true, nil, nil
	r.mu.Unlock()
	if !ok {
		for _, d := range got {
			d.Settle(router.Outcome{Kind: router.Released})
		}
		ms.discard(r)
		return nil, false
	}
	return got, true
}

// lockAll locks the deliveries of a receive request for user and renders
// them; an error when the server is shutting down or the address was
// deleted (the caller releases them).
func (ms *messaging) lockAll(r *receiver, got []*router.Delivery, user string, dur time.Duration, base64Body bool) ([]apiMessage, error) {
	deadline := time.Now().Add(dur)
	toks := make([]string, len(got))
	for i := range got {
		var rnd [tokenRandom]byte
		_, _ = rand.Read(rnd[:])
		toks[i] = newToken(rnd, deadline)
	}
	ms.mu.Lock()
	if r.gone {
		ms.mu.Unlock()
		return nil, fmt.Errorf("%w: %q while it was received from", router.ErrDeleted, r.key.name)
	}
	if ms.closed || r.closed {
		ms.mu.Unlock()
		return nil, router.ErrClosed
	}
	for i, d := range got {
		l := &lock{token: toks[i], r: r, d: d, user: user, deadline: deadline, size: int64(len(d.Message.Body))}
		ms.locks[l.token] = l
		r.nlocks++
		ms.userLocks[user]++
		ms.lockedBytes += l.size
	}
	ms.mu.Unlock()
	// Rendered outside the lock: bodies may be large. The deliveries stay
	// valid whatever happens to their locks meanwhile.
	out := make([]apiMessage, len(got))
	until := deadline.UTC().Format(timeLayout)
	for i, d := range got {
		out[i] = toAPIMessage(d, base64Body)
		out[i].LockToken, out[i].LockedUntil = toks[i], until
	}
	return out, nil
}

// errLock is why a token names no lock here: expired (410) when the
// deadline it was issued with has passed, else not found (404).
func errLock(tok string, now time.Time) error {
	if dl, ok := tokenDeadline(tok); ok && !now.Before(dl) {
		return newAPIError(codeLockExpired, apiErrors[codeLockExpired].message)
	}
	return newAPIError(codeLockNotFound, apiErrors[codeLockNotFound].message)
}

// take removes the lock of tok on the tenant's address and returns its
// delivery for the caller to settle. An expired lock the janitor has not
// reached yet ends here, as expired.
func (ms *messaging) take(key rkey, tok string) (*router.Delivery, error) {
	now := time.Now()
	ms.mu.Lock()
	l := ms.locks[tok]
	if l == nil || l.r.key != key {
		ms.mu.Unlock()
		return nil, errLock(tok, now)
	}
	ms.dropLocked(tok, l)
	ms.mu.Unlock()
	if !now.Before(l.deadline) {
		ms.expire(l.d)
		return nil, newAPIError(codeLockExpired, apiErrors[codeLockExpired].message)
	}
	return l.d, nil
}

// renew extends a lock to now+dur.
func (ms *messaging) renew(key rkey, tok string, dur time.Duration) (time.Time, error) {
	now := time.Now()
	ms.mu.Lock()
	l := ms.locks[tok]
	if l == nil || l.r.key != key {
		ms.mu.Unlock()
		return time.Time{}, errLock(tok, now)
	}
	if !now.Before(l.deadline) {
		ms.dropLocked(tok, l)
		ms.mu.Unlock()
		ms.expire(l.d)
		return time.Time{}, newAPIError(codeLockExpired, apiErrors[codeLockExpired].message)
	}
	l.deadline = now.Add(dur)
	dl := l.deadline
	ms.mu.Unlock()
	return dl, nil
}

// expire gives back a message whose lock expired: a failed delivery
// attempt (it counts toward the address's maximum deliveries).
func (ms *messaging) expire(d *router.Delivery) {
	ms.expired.Inc()
	d.Settle(router.Outcome{Kind: router.Modified, DeliveryFailed: true})
}

// run is the janitor: it expires locks and closes idle receivers every
// sweepEvery, and closes everything when the server shuts down.
func (ms *messaging) run() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ms.s.closing:
			ms.closeAll()
			return
		case now := <-t.C:
			ms.sweep(now)
		}
	}
}

// sweep expires the locks whose deadline passed and closes receivers
// idle for receiverIdle without locks.
func (ms *messaging) sweep(now time.Time) {
	var expired []*router.Delivery
	var closing []*receiver
	ms.mu.Lock()
	for tok, l := range ms.locks {
		if !now.Before(l.deadline) {
			ms.dropLocked(tok, l)
			expired = append(expired, l.d)
		}
	}
	for _, rs := range ms.idle {
		for _, r := range rs {
			if r.nlocks == 0 && now.Sub(r.lastUsed) >= receiverIdle {
				closing = append(closing, r)
			}
		}
	}
	for _, r := range closing {
		ms.closeLocked(r)
	}
	ms.mu.Unlock()
	for _, d := range expired {
		ms.expire(d)
	}
	for _, r := range closing {
		r.c.Close()
	}
}

// closeAll closes every receiver at shutdown: their consumers release
// the locked messages (redelivered to other consumers, or after a
// restart). A request still being served closes its receiver itself
// when it ends (release sees closed).
func (ms *messaging) closeAll() {
	ms.mu.Lock()
	ms.closed = true
	var rs []*receiver
	for r := range ms.all {
		if !r.busy {
			rs = append(rs, r)
		}
	}
	for _, r := range rs {
		ms.closeLocked(r)
	}
	ms.mu.Unlock()
	for _, r := range rs {
		r.c.Close()
	}
}
