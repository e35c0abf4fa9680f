package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// The MQTT bridge (docs/bridges.md).
//
// Out: one durable router subscription per mapping ("bridge/<name>/<i>"
// on the mapping's local filter) keeps what the remote has not
// acknowledged, across remote outages and restarts. Each stored message
// is published to the remote at the bridge's QoS, one at a time per
// mapping (in order), and settled locally only after the remote's PUBACK.
// A failed publish is sent again (the remote may then have it twice:
// counted as retried). Live (QoS 0) messages to the filter go out at QoS
// 0, at most once.
//
// In: a persistent remote session (clean start false, session expiry one
// day) subscribed to every mapping's remote filter with no-local; each
// message is published locally with the router and acknowledged to the
// remote only after the local outcome (manual acknowledgement).
//
// Loops: what the bridge publishes locally carries the bridge as its
// origin and its out subscriptions skip it; what it publishes remotely
// does not come back (no-local).

// Origin marks messages a bridge published locally. MQTT client ids
// cannot contain NUL [MQTT-1.5.4-2], so it names no client.
func origin(name string) string { return "bridge\x00" + name }

// durableName names a mapping's durable subscription.
func durableName(bridge string, i int) string { return fmt.Sprintf("bridge/%s/%d", bridge, i) }

// propRetain is the MQTT front-end's property for the RETAIN flag
// (internal/mqtt/publish.go).
const propRetain = "x-mqtt-retain"

// outWindow is how many stored messages a mapping takes from the router
// ahead of the remote's acknowledgements.
const outWindow = 256

type runner struct {
	mg     *Manager
	tenant string
	def    *Bridge
	org    string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	cm       *autopaho.ConnectionManager // mqtt
	mqttPipe *mqttPipe                   // mqtt: the out window's queue (window.go)
	kafka    *kafkaOut                   // kafka
	amqp     *amqpLink                   // amqp
	conss    []*router.Consumer

	out, in, dropped, retried, reconnects atomic.Uint64
	subscribed                            atomic.Int32 // out mappings whose durable subscription exists
	lag                                   atomic.Uint64
	overLimit                             atomic.Bool

	mu        sync.Mutex
	connected time.Time
	everUp    bool
	lastErr   string
	lastErrAt time.Time
	samples   []sample // last 10 s of counts, for rates
}

type sample struct {
	at      time.Time
	out, in uint64
}

func newRunner(mg *Manager, ten string, def *Bridge) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	return &runner{mg: mg, tenant: ten, def: def, org: origin(def.Name), ctx: ctx, cancel: cancel}
}

func (r *runner) labels() []string { return []string{r.tenant, r.def.Name} }

func (r *runner) fail(err error) {
	r.mu.Lock()
	r.lastErr, r.lastErrAt = err.Error(), time.Now().UTC()
	r.mu.Unlock()
	r.mg.log.Info("bridge error", "tenant", r.tenant, "bridge", r.def.Name, "err", err)
}

func (r *runner) start() {
	switch r.def.kind() {
	case KindKafka:
		r.startKafka()
	case KindAMQP:
		r.startAMQP()
	default:
		r.startMQTT()
	}
	if r.def.out() && (r.cm != nil || r.kafka != nil || r.amqp != nil) {
		for i, mp := range r.def.Mappings {
			r.wg.Add(1)
			go r.outLoop(i, mp)
		}
		r.wg.Add(1)
		go r.lagLoop()
	}
	r.wg.Add(1)
	go r.rateLoop()
}

func (r *runner) startMQTT() {
	u, err := r.def.remoteURL()
	if err != nil {
		r.fail(err)
		return
	}
	tlsCfg, err := r.def.tlsConfig()
	if err != nil {
		r.fail(err)
		return
	}
	clientID := r.def.Remote.ClientID
	if clientID == "" {
		clientID = "throng-" + r.tenant + "-" + r.def.Name
	}
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         24 * 3600,
		ReconnectBackoff:              autopaho.NewExponentialBackoff(250*time.Millisecond, 30*time.Second, time.Second, 2),
		ConnectTimeout:                10 * time.Second,
		OnConnectionUp:                r.up,
		OnConnectionDown: func() bool {
			r.setDown()
			return true
		},
		OnConnectError: func(err error) { r.fail(err) },
		ClientConfig: paho.ClientConfig{
			ClientID:                   clientID,
			EnableManualAcknowledgment: true,
			OnClientError:              func(err error) { r.fail(err) },
			OnServerDisconnect: func(d *paho.Disconnect) {
				r.fail(fmt.Errorf("remote disconnected: reason 0x%02x %s", d.ReasonCode, reasonString(d.Properties)))
			},
		},
	}
	if r.def.out() && r.def.qos() > 0 {
		// The out window (window.go) publishes through autopaho's queue
		// and learns of each PUBACK from the session state.
		r.mqttPipe = &mqttPipe{maxQoS: 2, retainAvail: true}
		cfg.Session = &trackedSession{State: state.NewInMemory(), pipe: r.mqttPipe}
	}
	if r.def.Remote.Username != "" {
		cfg.ConnectUsername = r.def.Remote.Username
		cfg.ConnectPassword = []byte(r.def.Remote.Password)
	}
	if r.def.in() {
		in := make(chan paho.PublishReceived, 1024)
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case in <- pr:
			case <-r.ctx.Done():
			}
			return true, nil
		}}
		r.wg.Add(1)
		go r.inLoop(in)
	}
	cm, err := autopaho.NewConnection(r.ctx, cfg)
	if err != nil {
		r.fail(err)
		return
	}
	r.cm = cm
}

func reasonString(p *paho.DisconnectProperties) string {
	if p == nil {
		return ""
	}
	return p.ReasonString
}

func (r *runner) stop() {
	r.cancel()
	if r.cm != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = r.cm.Disconnect(ctx)
		cancel()
	}
	if r.kafka != nil {
		r.kafka.close()
	}
	r.wg.Wait()
	if r.amqp != nil {
		r.amqp.close()
	}
	for _, c := range r.conss {
		c.Close()
	}
	r.mg.m.up.WithLabelValues(r.labels()...).Set(0)
}

// up subscribes the in mappings (again: the remote may have lost the
// session) and records the connection.
func (r *runner) up(cm *autopaho.ConnectionManager, ack *paho.Connack) {
	if r.mqttPipe != nil {
		r.mqttPipe.up(ack)
	}
	r.setUp()
	if !r.def.in() {
		return
	}
	go func() {
		s := &paho.Subscribe{}
		for _, mp := range r.def.Mappings {
			s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{
				Topic: mp.RemoteFilter(), QoS: r.def.qos(), NoLocal: true, RetainAsPublished: true,
			})
		}
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		sa, err := cm.Subscribe(ctx, s)
		if err != nil {
			r.fail(fmt.Errorf("remote subscribe: %w", err))
			return
		}
		for i, rc := range sa.Reasons {
			if rc >= 0x80 && i < len(s.Subscriptions) {
				r.fail(fmt.Errorf("remote refused subscription %q: reason 0x%02x", s.Subscriptions[i].Topic, rc))
			}
		}
	}()
}

// setUp records a connection to the remote.
func (r *runner) setUp() {
	r.mu.Lock()
	if r.everUp {
		r.reconnects.Add(1)
	}
	r.everUp = true
	r.connected = time.Now().UTC()
	r.mu.Unlock()
	r.mg.m.up.WithLabelValues(r.labels()...).Set(1)
}

func (r *runner) setDown() {
	r.mu.Lock()
	r.connected = time.Time{}
	r.mu.Unlock()
	r.mg.m.up.WithLabelValues(r.labels()...).Set(0)
}

// ---- out

type outItem struct {
	d    *router.Delivery
	live bool // from the live companion (QoS 0)
}

func (r *runner) outLoop(i int, mp Mapping) {
	defer r.wg.Done()
	q := make(chan outItem, 2*outWindow)
	filter := func(m *message.Message) bool { return m.Origin != r.org }
	var c *router.Consumer
	for {
		var err error
		c, err = r.mg.r.Consume(r.ctx, r.tenant, mp.LocalFilter(),
			router.ConsumeOptions{Durable: durableName(r.def.Name, i), Filter: filter},
			func(d *router.Delivery) { q <- outItem{d: d} }) // at most outWindow outstanding: never blocks
		if err == nil {
			break
		}
		r.fail(fmt.Errorf("local subscription %q: %w", mp.LocalFilter(), err))
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
	r.mu.Lock()
	r.conss = append(r.conss, c)
	r.mu.Unlock()
	r.subscribed.Add(1)
	var live *router.Consumer
	if address.IsWildcard(mp.LocalFilter()) {
		// QoS 0 publishes in the topic space are not stored: a live
		// companion takes them (at most once).
		var err error
		live, err = r.mg.r.Consume(r.ctx, r.tenant, mp.LocalFilter(),
			router.ConsumeOptions{StoredCompanion: true, Filter: filter},
			func(d *router.Delivery) { q <- outItem{d: d, live: true} })
		if err != nil {
			r.fail(fmt.Errorf("local live subscription %q: %w", mp.LocalFilter(), err))
		} else {
			r.mu.Lock()
			r.conss = append(r.conss, live)
			r.mu.Unlock()
			live.AddCredit(outWindow)
		}
	}
	c.AddCredit(outWindow)
	r.windowLoop(mp, q, func(it outItem) {
		if it.live {
			live.AddCredit(1)
		} else {
			c.AddCredit(1)
		}
	})
}

// forward sends one delivery to the remote with the bridge's kind and
// calls done once it is settled (the Kafka producer settles later, in
// its callback: more than one record in flight).
func (r *runner) forward(d *router.Delivery, mp Mapping, done func()) {
	if r.overflowDrop(d) {
		done()
		return
	}
	switch r.def.kind() {
	case KindKafka:
		r.sendKafka(d, mp, done)
		return
	case KindAMQP:
		r.sendAMQP(d, mp)
	default:
		r.send(d, mp)
	}
	done()
}

// overflowDrop applies drop-oldest: while more than bufferLimit messages
// wait, the oldest are acknowledged unsent and counted as dropped.
func (r *runner) overflowDrop(d *router.Delivery) bool {
	if d.PreSettled() || r.def.overflow() != OverflowDropOldest || !r.overLimit.Load() {
		return false
	}
	if n := r.lag.Load(); n > 0 {
		r.lag.Store(n - 1)
	}
	if r.lag.Load() <= uint64(r.def.bufferLimit()) {
		r.overLimit.Store(false)
	}
	d.Settle(router.Outcome{Kind: router.Accepted})
	r.count("out", "dropped")
	return true
}

// count counts a bridged message (Status and the metric).
func (r *runner) count(dir, result string) {
	switch {
	case result == "dropped":
		r.dropped.Add(1)
	case result == "retried":
		r.retried.Add(1)
	case dir == "out":
		r.out.Add(1)
	default:
		r.in.Add(1)
	}
	r.mg.m.msgs.WithLabelValues(r.tenant, r.def.Name, dir, result).Inc()
}

// mqttPublish is the remote PUBLISH of a delivery (false: the topic is
// not this mapping's).
func (r *runner) mqttPublish(d *router.Delivery, mp Mapping) (*paho.Publish, string, bool) {
	m := d.Message
	topic, ok := mp.ToRemote(d.Address)
	if !ok {
		return nil, "", false
	}
	qos := r.def.qos()
	if d.PreSettled() || !m.Durable {
		qos = 0
	}
	retain, _ := m.Properties[propRetain].(bool)
	p := &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: m.Body, Properties: &paho.PublishProperties{
		ContentType: m.ContentType, ResponseTopic: m.ReplyTo,
	}}
	if cid, ok := m.CorrelationID.([]byte); ok {
		p.Properties.CorrelationData = cid
	} else if s, ok := m.CorrelationID.(string); ok {
		p.Properties.CorrelationData = []byte(s)
	}
	for k, v := range m.Properties {
		if s, ok := v.(string); ok && !strings.HasPrefix(k, "x-mqtt-") {
			p.Properties.User.Add(k, s)
		}
	}
	if m.TTL > 0 {
		sec := uint32(m.TTL / time.Second)
		p.Properties.MessageExpiry = &sec
	}
	return p, topic, true
}

// send publishes one delivery to the remote until the remote
// acknowledges it (or the bridge stops: the delivery is released and
// comes again), then settles it.
func (r *runner) send(d *router.Delivery, mp Mapping) {
	p, topic, ok := r.mqttPublish(d, mp)
	if !ok {
		d.Settle(router.Outcome{Kind: router.Accepted}) // not this mapping's (a wildcard's edge)
		return
	}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			r.retried.Add(1)
			r.mg.m.msgs.WithLabelValues(r.tenant, r.def.Name, "out", "retried").Inc()
		}
		if err := r.cm.AwaitConnection(r.ctx); err != nil {
			d.Settle(router.Outcome{Kind: router.Released})
			return
		}
		ctx, cancel := context.WithTimeout(r.ctx, 15*time.Second)
		pr, err := r.cm.Publish(ctx, p)
		cancel()
		if err == nil || (pr != nil && pr.ReasonCode < 0x80) {
			break
		}
		if pr != nil && pr.ReasonCode >= 0x80 {
			// The remote refused it (not authorised, topic invalid,
			// quota): sending it again will not help. Dead-lettered if
			// the address has a dead-letter address, else dropped.
			why := ""
			if pr.Properties != nil {
				why = pr.Properties.ReasonString
			}
			r.fail(fmt.Errorf("remote refused %q: reason 0x%02x %s", topic, pr.ReasonCode, why))
			d.Settle(router.Outcome{Kind: router.Rejected, Description: "remote refused it"})
			r.dropped.Add(1)
			r.mg.m.msgs.WithLabelValues(r.tenant, r.def.Name, "out", "dropped").Inc()
			return
		}
		if r.ctx.Err() != nil {
			d.Settle(router.Outcome{Kind: router.Released})
			return
		}
		r.fail(fmt.Errorf("publish %q: %w", topic, err))
		select {
		case <-r.ctx.Done():
			d.Settle(router.Outcome{Kind: router.Released})
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	d.Settle(router.Outcome{Kind: router.Accepted})
	r.out.Add(1)
	r.mg.m.msgs.WithLabelValues(r.tenant, r.def.Name, "out", "sent").Inc()
}

// lagLoop measures what waits in the durable subscriptions every second.
func (r *runner) lagLoop() {
	defer r.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		var total uint64
		for i, mp := range r.def.Mappings {
			ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
			n, err := r.mg.r.DurablePending(ctx, r.tenant, mp.LocalFilter(), durableName(r.def.Name, i))
			cancel()
			if err == nil {
				total += n
			}
		}
		r.lag.Store(total)
		r.overLimit.Store(total > uint64(r.def.bufferLimit()))
		r.mg.m.lag.WithLabelValues(r.labels()...).Set(float64(total))
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ---- in

func (r *runner) inLoop(in <-chan paho.PublishReceived) {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case pr := <-in:
			if r.receive(pr.Packet) {
				_ = pr.Client.Ack(pr.Packet)
			}
		}
	}
}

// receive publishes a remote message locally; false if the bridge stops
// first (not acknowledged: the remote sends it again).
func (r *runner) receive(p *paho.Publish) bool {
	var topic string
	ok := false
	for _, mp := range r.def.Mappings {
		if topic, ok = mp.ToLocal(p.Topic); ok {
			break
		}
	}
	if !ok {
		return true // not ours (an old subscription of the remote session)
	}
	m := &message.Message{Body: p.Payload, Durable: p.QoS > 0, CreationTime: time.Now(), Origin: r.org}
	props := map[string]any{}
	if p.Retain {
		props[propRetain] = true
	}
	if pp := p.Properties; pp != nil {
		m.ContentType, m.ReplyTo = pp.ContentType, pp.ResponseTopic
		if len(pp.CorrelationData) > 0 {
			m.CorrelationID = pp.CorrelationData
		}
		if pp.MessageExpiry != nil && *pp.MessageExpiry > 0 {
			m.TTL = time.Duration(*pp.MessageExpiry) * time.Second
		}
		for _, u := range pp.User {
			props[u.Key] = u.Value
		}
	}
	if len(props) > 0 {
		m.Properties = props
	}
	return r.publishLocal(topic, m, p.Retain) != localStopped
}

// Results of publishLocal.
const (
	localStopped = iota // the bridge stops: not to be acknowledged
	localSent           // published (or no subscriber)
	localDropped        // refused for good: acknowledge it, counted as dropped
)

// publishLocal publishes a remote message locally (retained too if
// retain), trying again on passing failures; false if the bridge stops
// first (the remote is not to be acknowledged: it sends it again). A
// message the tenant refuses for good is counted as dropped and true
// returned, so that the remote does not send it forever.
func (r *runner) publishLocal(topic string, m *message.Message, retain bool) int {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		var err error
		if retain {
			err = r.mg.r.Retain(ctx, r.tenant, topic, m)
		}
		if err == nil {
			_, err = r.mg.r.Publish(ctx, r.tenant, topic, m)
		}
		cancel()
		switch {
		case err == nil, errors.Is(err, router.ErrNoConsumers):
			r.count("in", "sent")
			return localSent
		case r.ctx.Err() != nil:
			return localStopped
		case errors.Is(err, router.ErrNotFound), errors.Is(err, router.ErrInvalid), errors.Is(err, router.ErrLimitExceeded), attempt >= 5:
			// Refused for good (strict tenant, invalid name, too large):
			// acknowledged, so the remote does not send it forever.
			r.fail(fmt.Errorf("local publish %q: %w", topic, err))
			r.count("in", "dropped")
			return localDropped
		}
		r.fail(fmt.Errorf("local publish %q: %w", topic, err))
		select {
		case <-r.ctx.Done():
			return localStopped
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
}

// ---- status

func (r *runner) rateLoop() {
	defer r.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		r.mu.Lock()
		r.samples = append(r.samples, sample{time.Now(), r.out.Load(), r.in.Load()})
		if len(r.samples) > 11 {
			r.samples = r.samples[1:]
		}
		r.mu.Unlock()
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *runner) status() Status {
	st := Status{
		Out: r.out.Load(), In: r.in.Load(), Dropped: r.dropped.Load(), Retried: r.retried.Load(),
		Reconnects: r.reconnects.Load(), Lag: r.lag.Load(),
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st.LastError, st.LastErrorAt = r.lastErr, r.lastErrAt
	st.ConnectedSince = r.connected
	switch {
	case r.connected.IsZero(), r.def.out() && int(r.subscribed.Load()) < len(r.def.Mappings):
		// Connected only once every out mapping's durable subscription
		// exists: what is published before is not bridged (a message in
		// the topic space is stored only for subscriptions that exist).
		st.State = "connecting"
	case r.def.out() && st.Lag > uint64(r.def.bufferLimit()):
		st.State = "overflow"
	default:
		st.State = "connected"
	}
	if n := len(r.samples); n > 1 {
		a, b := r.samples[0], r.samples[n-1]
		if dt := b.at.Sub(a.at).Seconds(); dt > 0 {
			st.OutRate = float64(b.out-a.out) / dt
			st.InRate = float64(b.in-a.in) / dt
		}
	}
	return st
}
