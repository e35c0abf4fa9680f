// Package conns is the node's registry of live client connections, for
// observation: the admin API lists them, shows one with its links or
// subscriptions, and closes one at an administrator's request
// (docs/admin-api.md, "Connections"; docs/console.md).
//
// The registry has one owner per connection: the front-end that accepted
// it (internal/amqp, internal/mqtt) registers it once it is authenticated
// and unregisters it when it ends. It is not auth.Live, the registry of
// connections by identity that revocation uses: that one is keyed by
// user and device and closes with amqp:unauthorized-access or 0x87; this
// one is keyed by id, carries the counters and closes with
// amqp:connection:forced or 0x98. Merging them would put the counters
// behind auth's per-identity lock.
//
// HTTP requests are not connections here: Hono's HTTP adapter and the
// messaging API authenticate every request, a keep-alive TCP connection
// carries no identity between requests, and a request lasts
// milliseconds. The HTTP adapter's traffic shows in the address, tenant
// and node rates (internal/history) instead.
//
// Hot path: the front-end counts each message on the connection's own
// Entry (two uncontended atomic adds, no lock, no map); the rates are
// computed from those counters by Sample, every 5 s.
//
// Ids are unique across nodes: the node's name, '-', a sequence number
// (n1-42). The node's name comes from the cluster configuration; the
// sequence restarts with the process, so an id names a connection only
// while the node runs — a restarted node's new connections reuse small
// numbers, which is harmless because the old connections are gone.
package conns

import (
	"cmp"
	"iter"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Protocols, as the API names them.
const (
	AMQP  = "amqp"
	MQTT3 = "mqtt3" // MQTT 3.1.1
	MQTT5 = "mqtt5"
)

// Conn is the front-end's side of a registered connection.
type Conn interface {
	// CloseByAdmin ends the connection at an administrator's request:
	// AMQP closes it with amqp:connection:forced, MQTT 5 sends DISCONNECT
	// 0x98 (administrative action), MQTT 3.1.1 closes the network
	// connection. It must not block and may be called more than once.
	CloseByAdmin(reason string)
	// Links lists the connection's AMQP links or MQTT subscriptions. It
	// may wait briefly for the connection's goroutine; it is not called
	// on any hot path.
	Links() []Link
	// LinkCount is how many there are, without waiting (for lists).
	LinkCount() int
	// Info describes the connection. It must not change once the
	// connection is registered, and must not block: the registry asks
	// for it on every List (filters) instead of keeping a copy, so that
	// an idle connection costs the registry only its counters
	// (docs/mqtt.md, memory per idle connection).
	Info() Info
}

// Link is one AMQP link or MQTT subscription of a connection.
type Link struct {
	Kind    string `json:"kind"` // "sender" (to the client), "receiver" (from it), "subscription"
	Name    string `json:"name,omitempty"`
	Address string `json:"address"`
	QoS     *int   `json:"qos,omitempty"`
	Credit  *int64 `json:"credit,omitempty"`
	// Unsettled: deliveries sent to the client and not yet settled.
	Unsettled *int `json:"unsettled,omitempty"`
	Backlog   *int `json:"backlog,omitempty"`
}

// Info describes a connection; it does not change once registered.
// The front-end computes it from its own state (Conn.Info).
type Info struct {
	Tenant   string
	Protocol string
	ClientID string // MQTT client id, AMQP container id
	User     string
	Device   string
	Remote   string
	TLS      bool
}

// Entry is a registered connection. Its counters are written by the
// connection's own goroutines (In, Out) and read by Sample and the API.
// A nil *Entry counts nothing, so front-ends without a registry need no
// checks.
type Entry struct {
	seq   uint64
	since int64 // Unix nanoseconds
	conn  Conn

	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64
	// The rates are the registry's (Registry.rates), kept only for
	// connections that have had traffic, and the id is made by the
	// registry when asked for (Registry.ID): an idle connection's entry
	// is 64 bytes (TestBytesPerConnection; docs/mqtt.md).
}

// rate is a connection's message rates at the last Sample, and the
// counters they were computed from.
type rate struct {
	in, out         float64 // messages per second
	lastIn, lastOut uint64
}

// In counts a message of n payload bytes received from the client.
func (e *Entry) In(n int) {
	if e != nil {
		e.msgsIn.Add(1)
		e.bytesIn.Add(uint64(n))
	}
}

// Out counts a message of n payload bytes sent to the client.
func (e *Entry) Out(n int) {
	if e != nil {
		e.msgsOut.Add(1)
		e.bytesOut.Add(uint64(n))
	}
}

// ID is the id of e's connection, the registry's node, '-' and the
// registration's sequence number ("" for nil).
func (r *Registry) ID(e *Entry) string {
	if e == nil {
		return ""
	}
	return r.node + "-" + strconv.FormatUint(e.seq, 10)
}

// Info returns what the connection was registered with.
func (e *Entry) Info() Info { return e.conn.Info() }

// Since is when the connection was registered.
func (e *Entry) Since() time.Time { return time.Unix(0, e.since) }

// Counters returns the messages and payload bytes in and out so far.
func (e *Entry) Counters() (msgsIn, msgsOut, bytesIn, bytesOut uint64) {
	return e.msgsIn.Load(), e.msgsOut.Load(), e.bytesIn.Load(), e.bytesOut.Load()
}

// Close asks the front-end to close the connection (Conn.CloseByAdmin).
func (e *Entry) Close(reason string) { e.conn.CloseByAdmin(reason) }

// Links lists the connection's links or subscriptions (Conn.Links).
func (e *Entry) Links() []Link { return e.conn.Links() }

// Snapshot is an Entry as the API shows it.
type Snapshot struct {
	ID          string    `json:"id"`
	Node        string    `json:"node"`
	Tenant      string    `json:"tenant"`
	Protocol    string    `json:"protocol"`
	ClientID    string    `json:"clientId,omitempty"`
	User        string    `json:"user,omitempty"`
	Device      string    `json:"device,omitempty"`
	Remote      string    `json:"remoteAddress,omitempty"`
	TLS         bool      `json:"tls"`
	Since       time.Time `json:"connectedSince"`
	MessagesIn  uint64    `json:"messagesIn"`
	MessagesOut uint64    `json:"messagesOut"`
	BytesIn     uint64    `json:"bytesIn"`
	BytesOut    uint64    `json:"bytesOut"`
	RateIn      float64   `json:"messagesInPerSecond"`
	RateOut     float64   `json:"messagesOutPerSecond"`
	Links       int       `json:"links"`
	LinkList    []Link    `json:"linkList,omitempty"`
}

// Snapshot returns the state of e's connection now; withLinks lists its
// links (LinkList), otherwise only their number is given.
func (r *Registry) Snapshot(e *Entry, withLinks bool) Snapshot {
	mi, mo, bi, bo := e.Counters()
	var links []Link
	n := 0
	if withLinks {
		links = e.conn.Links()
		n = len(links)
	} else {
		n = e.conn.LinkCount()
	}
	info := e.conn.Info()
	s := Snapshot{
		ID: r.ID(e), Node: r.node, Tenant: info.Tenant, Protocol: info.Protocol,
		ClientID: info.ClientID, User: info.User, Device: info.Device,
		Remote: info.Remote, TLS: info.TLS, Since: e.Since(),
		MessagesIn: mi, MessagesOut: mo, BytesIn: bi, BytesOut: bo,
		Links: n,
	}
	r.rateMu.RLock()
	rt := r.rates[e.seq]
	r.rateMu.RUnlock()
	s.RateIn, s.RateOut = rt.in, rt.out
	if withLinks {
		s.LinkList = links
		if s.LinkList == nil {
			s.LinkList = []Link{}
		}
	}
	return s
}

// Registry holds the node's live connections by id.
type Registry struct {
	node string
	seq  atomic.Uint64
	now  func() time.Time

	mu   sync.RWMutex
	byID map[uint64]*Entry // guarded by mu

	sampleMu   sync.Mutex // serializes Sample
	lastSample time.Time  // guarded by sampleMu

	rateMu sync.RWMutex    // written by Sample
	rates  map[uint64]rate // by seq: connections that have had traffic; guarded by rateMu

	// onAdd and onRemove are Watch's callbacks (nil: none).
	onAdd, onRemove func(*Entry)
}

// Watch sets functions called after a connection is registered and when
// it is unregistered (per-tenant totals and the anomaly finder,
// internal/metrics); removed runs under the registry's lock, so that a
// ReadLocked pass and removed exclude each other. Call it before the first
// Register; they must be quick and must not call the registry.
func (r *Registry) Watch(added, removed func(*Entry)) {
	if r != nil {
		r.onAdd, r.onRemove = added, removed
	}
}

// New returns an empty registry of node (the name in the ids).
func New(node string) *Registry {
	if node == "" {
		node = "node"
	}
	return &Registry{node: node, now: time.Now, byID: map[uint64]*Entry{}, rates: map[uint64]rate{}}
}

// Node is the node's name, as in the ids.
func (r *Registry) Node() string {
	if r == nil {
		return ""
	}
	return r.node
}

// Register adds a connection and returns its entry, which the front-end
// keeps to count on and passes to Unregister. A nil registry registers
// nothing and returns nil (which counts nothing).
func (r *Registry) Register(c Conn) *Entry {
	if r == nil {
		return nil
	}
	seq := r.seq.Add(1)
	e := &Entry{seq: seq, since: r.now().UnixNano(), conn: c}
	r.mu.Lock()
	r.byID[seq] = e
	r.mu.Unlock()
	if r.onAdd != nil {
		r.onAdd(e)
	}
	return e
}

// Unregister removes the connection of e (nil: nothing).
func (r *Registry) Unregister(e *Entry) {
	if r == nil || e == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID[e.seq] != e {
		return
	}
	delete(r.byID, e.seq)
	// Under the lock: a ReadLocked pass sees the entry or what onRemove
	// did with it (its counters in a total), never both or neither.
	if r.onRemove != nil {
		r.onRemove(e)
	}
}

// ReadLocked calls f with every registered connection while holding the
// registry's read lock: no connection is unregistered meanwhile (see
// Watch). f must be quick and must not call the registry.
func (r *Registry) ReadLocked(f func(all iter.Seq[*Entry])) {
	if r == nil {
		f(func(func(*Entry) bool) {})
		return
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	f(func(yield func(*Entry) bool) {
		for _, e := range r.byID {
			if !yield(e) {
				return
			}
		}
	})
}

// Len is the number of registered connections.
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byID)
}

// parseID splits an id into its node and sequence.
func parseID(id string) (node string, seq uint64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return "", 0, false
	}
	return id[:i], seq, true
}

// Get returns the connection of id on this node. An id of another node
// is not found here (the cluster's forwarding is not built yet).
func (r *Registry) Get(id string) (*Entry, bool) {
	if r == nil {
		return nil, false
	}
	node, seq, ok := parseID(id)
	if !ok || node != r.node {
		return nil, false
	}
	r.mu.RLock()
	e, ok := r.byID[seq]
	r.mu.RUnlock()
	return e, ok
}

// Filter selects connections for List; empty fields match all.
type Filter struct {
	Tenant, Protocol, User, Device, ClientID string
}

func (f Filter) match(e *Entry) bool {
	if f == (Filter{}) {
		return true
	}
	info := e.conn.Info()
	return (f.Tenant == "" || info.Tenant == f.Tenant) &&
		(f.Protocol == "" || info.Protocol == f.Protocol) &&
		(f.User == "" || info.User == f.User) &&
		(f.Device == "" || info.Device == f.Device) &&
		(f.ClientID == "" || info.ClientID == f.ClientID)
}

// List returns up to limit connections matching f, oldest first, those
// after the connection id after ("" from the start), and the id to pass
// as after for the next page ("" on the last page). An after that is no
// longer registered still pages correctly: the order is by sequence.
//
// Cost: one pass over the registry under its read lock and a sort of the
// matches (100,000 connections: a few milliseconds); the front-ends'
// Register and Unregister wait for the pass, their counters do not.
func (r *Registry) List(f Filter, after string, limit int) ([]*Entry, string) {
	if r == nil {
		return nil, ""
	}
	var from uint64
	if after != "" {
		if _, seq, ok := parseID(after); ok {
			from = seq
		}
	}
	r.mu.RLock()
	var out []*Entry
	for seq, e := range r.byID {
		if seq > from && f.match(e) {
			out = append(out, e)
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Entry) int { return cmp.Compare(a.seq, b.seq) })
	if limit > 0 && len(out) > limit {
		return out[:limit], r.ID(out[limit-1])
	}
	return out, ""
}

// Each calls f for every registered connection (in no order), outside
// the registry's lock.
func (r *Registry) Each(f func(*Entry)) {
	if r == nil {
		return
	}
	r.mu.RLock()
	all := make([]*Entry, 0, len(r.byID))
	for _, e := range r.byID {
		all = append(all, e)
	}
	r.mu.RUnlock()
	for _, e := range all {
		f(e)
	}
}

// Sample updates every connection's rates from its counters since the
// last sample (the history sampler calls it every 5 s). The first sample
// of a connection counts from its registration.
func (r *Registry) Sample(now time.Time) {
	if r == nil {
		return
	}
	r.sampleMu.Lock()
	defer r.sampleMu.Unlock()
	last := r.lastSample
	r.lastSample = now
	next := make(map[uint64]rate, len(r.rates))
	r.Each(func(e *Entry) {
		in, out := e.msgsIn.Load(), e.msgsOut.Load()
		if in == 0 && out == 0 {
			return // never had traffic: no state kept
		}
		from := last
		if since := e.Since(); from.IsZero() || since.After(from) {
			from = since
		}
		dt := now.Sub(from).Seconds()
		rt := r.rates[e.seq] // Sample is the only writer: no lock to read
		if dt > 0 {
			rt.in = float64(in-rt.lastIn) / dt
			rt.out = float64(out-rt.lastOut) / dt
		}
		rt.lastIn, rt.lastOut = in, out
		next[e.seq] = rt
	})
	// A new map each time: the entries of connections that ended go.
	r.rateMu.Lock()
	r.rates = next
	r.rateMu.Unlock()
}
