package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// Router is what a bridge needs of the router (*router.Router).
type Router interface {
	Consume(ctx context.Context, tenantName, name string, opts router.ConsumeOptions, deliver func(*router.Delivery)) (*router.Consumer, error)
	Publish(ctx context.Context, tenantName, name string, m *message.Message) (router.Outcome, error)
	Retain(ctx context.Context, tenantName, name string, m *message.Message) error
	DurablePending(ctx context.Context, tenantName, name, durable string) (uint64, error)
	DeleteDurable(ctx context.Context, tenantName, name, durable string) error
}

// Manager runs the stored bridges of every tenant that this node owns
// (owner.go: one node per bridge, a lease in KV) and follows their
// definitions (created, changed, deleted on any node).
type Manager struct {
	store *Store
	r     Router
	log   *slog.Logger
	m     *metrics

	node   string     // this node's name: the value of its leases
	syncMu sync.Mutex // held by sync: one start or stop at a time
	// claimMu: one claim at a time (owner.go).
	claimMu sync.Mutex
	stop    chan struct{} // ends keepLeases

	mu      sync.Mutex
	running map[string]*runner // tenant + "\x00" + name
	leases  map[string]*lease  // key(tenant, name)
	closed  bool
}

// NewManager returns a manager; Start starts the bridges.
func NewManager(store *Store, r Router, log *slog.Logger, reg prometheus.Registerer) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{store: store, r: r, log: log.With("component", "bridge"), m: newMetrics(reg),
		node: store.node, running: map[string]*runner{}, leases: map[string]*lease{}, stop: make(chan struct{})}
}

// Start runs every stored bridge this node can own and follows changes.
// A lease that is free or already this node's is taken at once: a single
// node starts its bridges without delay.
func (mg *Manager) Start() {
	mg.store.OnChange(func(ten, name string) {
		go func() {
			if def, ok := mg.store.Get(ten, name); ok && !def.Disabled {
				mg.claim(ten, name)
			}
			mg.sync(ten, name)
		}()
	})
	for ten, bs := range mg.store.All() {
		for _, b := range bs {
			if !b.Disabled {
				mg.claim(ten, b.Name)
			}
			mg.sync(ten, b.Name)
		}
	}
	go mg.keepLeases(mg.stop)
}

// sync starts, restarts or stops the bridge's runner to match its stored
// definition.
func (mg *Manager) sync(ten, name string) {
	mg.syncMu.Lock()
	defer mg.syncMu.Unlock()
	k := ten + "\x00" + name
	def, ok := mg.store.Get(ten, name)
	mg.mu.Lock()
	if mg.closed {
		mg.mu.Unlock()
		return
	}
	old := mg.running[k]
	lk := key(ten, name)
	owned := mg.owns(mg.leases[lk], time.Now())
	if old != nil && ok && owned && sameDef(old.def, def) {
		mg.mu.Unlock()
		return // unchanged (our own write seen again by the watch)
	}
	if old == nil && !owned && ok && !def.Disabled {
		mg.mu.Unlock()
		return // another node's
	}
	delete(mg.running, k)
	var nr *runner
	if ok && !def.Disabled && owned {
		nr = newRunner(mg, ten, def)
		mg.running[k] = nr
	}
	mg.mu.Unlock()
	if old != nil {
		old.stop()
	}
	if old != nil && nr == nil && ok && !def.Disabled {
		mg.log.Warn("bridge stopped: its lease is another node's or could not be refreshed", "tenant", ten, "bridge", name)
	}
	if !ok || def.Disabled {
		mg.release(lk)
	}
	if nr != nil {
		nr.start()
	}
	if !ok && old != nil {
		// Deleted: its durable subscriptions (and what they kept) go too.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i, mp := range old.def.Mappings {
			_ = mg.r.DeleteDurable(ctx, ten, mp.LocalFilter(), durableName(old.def.Name, i))
		}
		mg.m.forget(ten, name)
	}
}

func sameDef(a, b *Bridge) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// Close stops every bridge (the definitions stay).
func (mg *Manager) Close() {
	mg.syncMu.Lock()
	defer mg.syncMu.Unlock()
	mg.mu.Lock()
	if !mg.closed {
		close(mg.stop)
	}
	mg.closed = true
	rs := make([]*runner, 0, len(mg.running))
	for _, r := range mg.running {
		rs = append(rs, r)
	}
	mg.running = map[string]*runner{}
	mg.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() { defer wg.Done(); r.stop() }()
	}
	wg.Wait()
	// Give the leases back: another node takes the bridges at its next
	// look rather than after leaseTime.
	mg.mu.Lock()
	ks := make([]string, 0, len(mg.leases))
	for k := range mg.leases {
		ks = append(ks, k)
	}
	mg.mu.Unlock()
	for _, k := range ks {
		mg.release(k)
	}
}

// Status is a bridge's state as this node runs it.
type Status struct {
	// State: "connected", "connecting" (or reconnecting: see LastError),
	// "overflow" (connected, more than bufferLimit waiting), "disabled",
	// "standby" (another node, Owner, runs it), "stopped" (not running
	// on this node).
	State string `json:"state"`
	// Owner is the node that runs the bridge, as far as this node knows
	// (owner.go).
	Owner          string    `json:"owner,omitempty"`
	ConnectedSince time.Time `json:"connectedSince,omitzero"`
	LastError      string    `json:"lastError,omitempty"`
	LastErrorAt    time.Time `json:"lastErrorAt,omitzero"`
	// Counts since the bridge started on this node.
	Out        uint64 `json:"out"`        // sent to the remote and acknowledged by it
	In         uint64 `json:"in"`         // received from the remote and published locally
	Dropped    uint64 `json:"dropped"`    // skipped by the overflow policy, or refused locally for good
	Retried    uint64 `json:"retried"`    // sends repeated after a failure (the remote may have them twice)
	Reconnects uint64 `json:"reconnects"` // connections to the remote after the first
	// Rates over the last 10 s, messages per second.
	OutRate float64 `json:"outRate"`
	InRate  float64 `json:"inRate"`
	// Lag: engine entries waiting for the remote ("out").
	Lag uint64 `json:"lag"`
}

// Status returns a bridge's status on this node.
func (mg *Manager) Status(ten, name string) Status {
	def, ok := mg.store.Get(ten, name)
	mg.mu.Lock()
	r := mg.running[ten+"\x00"+name]
	var owner string
	if l := mg.leases[key(ten, name)]; l != nil {
		owner = l.owner
	}
	mg.mu.Unlock()
	switch {
	case r != nil:
		st := r.status()
		st.Owner = mg.node
		return st
	case ok && def.Disabled:
		return Status{State: "disabled"}
	case ok && owner != "" && owner != mg.node:
		return Status{State: "standby", Owner: owner}
	}
	return Status{State: "stopped", Owner: owner}
}

type metrics struct {
	msgs *prometheus.CounterVec // tenant, bridge, direction, result
	lag  *prometheus.GaugeVec   // tenant, bridge
	up   *prometheus.GaugeVec   // tenant, bridge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		msgs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "throng", Subsystem: "bridge", Name: "messages_total",
			Help: "Bridged messages by direction (out, in) and result (sent, dropped, retried).",
		}, []string{"tenant", "bridge", "direction", "result"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "throng", Subsystem: "bridge", Name: "lag",
			Help: "Engine entries waiting for the remote (out).",
		}, []string{"tenant", "bridge"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "throng", Subsystem: "bridge", Name: "connected",
			Help: "1 while the bridge is connected to its remote.",
		}, []string{"tenant", "bridge"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.msgs, m.lag, m.up} {
			_ = reg.Register(c)
		}
	}
	return m
}

func (m *metrics) forget(ten, name string) {
	l := prometheus.Labels{"tenant": ten, "bridge": name}
	m.msgs.DeletePartialMatch(l)
	m.lag.Delete(l)
	m.up.Delete(l)
}

// The admin API's view (admin.BridgeService).

// Bridge returns a definition.
func (mg *Manager) Bridge(ten, name string) (*Bridge, bool) { return mg.store.Get(ten, name) }

// Bridges lists a tenant's definitions.
func (mg *Manager) Bridges(ten string) []*Bridge { return mg.store.List(ten) }

// PutBridge creates or replaces a definition; the runners follow.
func (mg *Manager) PutBridge(ctx context.Context, ten string, b *Bridge, create bool) error {
	return mg.store.Put(ctx, ten, b, create)
}

// DeleteBridge deletes a definition; its runner stops and its durable
// subscriptions are removed.
func (mg *Manager) DeleteBridge(ctx context.Context, ten, name string) error {
	return mg.store.Delete(ctx, ten, name)
}

// BridgeStatus is Status.
func (mg *Manager) BridgeStatus(ten, name string) Status { return mg.Status(ten, name) }
