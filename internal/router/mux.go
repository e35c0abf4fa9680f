package router

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// replyMux receives replies for many requests on one wildcard
// subscription, so an asynchronous request costs a map entry rather than a
// subscription. Entries that get no reply by their deadline are called
// with a nil message by a sweeper.
type replyMux struct {
	nc     *nats.Conn
	prefix string // "<inbox>."
	sub    *nats.Subscription

	mu      sync.Mutex
	next    uint64
	pending map[uint64]pendingReply // guarded by mu
	closed  bool                    // guarded by mu
	stop    chan struct{}
}

type pendingReply struct {
	fn       func(*nats.Msg)
	deadline time.Time
}

func newReplyMux(nc *nats.Conn) (*replyMux, error) {
	m := &replyMux{nc: nc, prefix: nc.NewInbox() + ".", pending: map[uint64]pendingReply{}, stop: make(chan struct{})}
	sub, err := nc.Subscribe(m.prefix+"*", m.onReply)
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	m.sub = sub
	go m.sweep()
	return m, nil
}

// register returns a reply subject; fn gets the reply, or nil on timeout
// or close. fn runs on the subscription's goroutine: it must not block.
func (m *replyMux) register(timeout time.Duration, fn func(*nats.Msg)) (string, bool) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return "", false
	}
	m.next++
	id := m.next
	m.pending[id] = pendingReply{fn: fn, deadline: time.Now().Add(timeout)}
	m.mu.Unlock()
	return m.prefix + strconv.FormatUint(id, 36), true
}

// cancel drops a registration whose request could not be sent.
func (m *replyMux) cancel(subject string) {
	id, err := strconv.ParseUint(strings.TrimPrefix(subject, m.prefix), 36, 64)
	if err != nil {
		return
	}
	m.mu.Lock()
	delete(m.pending, id)
	m.mu.Unlock()
}

func (m *replyMux) onReply(msg *nats.Msg) {
	id, err := strconv.ParseUint(strings.TrimPrefix(msg.Subject, m.prefix), 36, 64)
	if err != nil {
		return
	}
	m.mu.Lock()
	p, ok := m.pending[id]
	delete(m.pending, id)
	m.mu.Unlock()
	if ok {
		p.fn(msg)
	}
}

func (m *replyMux) sweep() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			var expired []func(*nats.Msg)
			m.mu.Lock()
			for id, p := range m.pending {
				if now.After(p.deadline) {
					expired = append(expired, p.fn)
					delete(m.pending, id)
				}
			}
			m.mu.Unlock()
			for _, fn := range expired {
				fn(nil)
			}
		}
	}
}

func (m *replyMux) close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	pending := m.pending
	m.pending = nil
	m.mu.Unlock()
	close(m.stop)
	_ = m.sub.Unsubscribe()
	for _, p := range pending {
		p.fn(nil)
	}
}
