package soak

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/go-amqp"
	paho "github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
)

// Clients never resend on their own: a publish whose acknowledgement was
// lost with its connection stays "sent, not acknowledged" (it may or may
// not be delivered), and every reconnect makes a new client, so what the
// checker sees is the broker's doing, not a library's retry logic.

// consumerCtl makes a consumer slow (a delay per message) or stuck (no
// message handled until a time).
type consumerCtl struct {
	delay      atomic.Int64  // ns per message
	stuckUntil atomic.Int64  // unix ns
	kick       chan struct{} // a send makes the consumer reconnect (buffer 1)
	away       atomic.Bool   // the consumer stays disconnected (m5Consumer; clockjump fault)
	online     atomic.Bool   // the consumer is connected (m5Consumer)
}

func newConsumerCtl() *consumerCtl { return &consumerCtl{kick: make(chan struct{}, 1)} }

// reconnect asks the consumer to drop its connection and connect again.
func (c *consumerCtl) reconnect() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// hold applies the control before a message is recorded and acknowledged.
func (c *consumerCtl) hold(ctx context.Context) {
	if d := c.delay.Load(); d > 0 {
		sleep(ctx, time.Duration(d))
	}
	for ctx.Err() == nil && time.Now().UnixNano() < c.stuckUntil.Load() {
		sleep(ctx, 50*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// pacer spaces a producer's messages to rate per second.
type pacer struct {
	rate  float64
	base  time.Time
	count int
}

func (p *pacer) wait(ctx context.Context, n int) {
	now := time.Now()
	if p.base.IsZero() || now.Sub(p.base.Add(time.Duration(float64(p.count)/p.rate*float64(time.Second)))) > time.Second {
		// Start again after a pause or a reconnect instead of bursting.
		p.base, p.count = now, 0
	}
	p.count += n
	due := p.base.Add(time.Duration(float64(p.count) / p.rate * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		sleep(ctx, d)
	}
}

// backoff waits before a reconnect.
func backoff(ctx context.Context, attempt int) {
	d := 100 * time.Millisecond << min(attempt, 4)
	sleep(ctx, d)
}

const (
	opTimeout = 15 * time.Second
	payload   = 96 // bytes per message
)

// ---- MQTT 5 (paho.golang) ----

// A persistent MQTT client keeps its session state (packet ids of QoS 1/2
// exchanges under way) across its connections, as the protocol requires of
// a client that resumes a session: a client that forgot it would reuse a
// packet id the broker still holds for an unfinished QoS 2 exchange, and
// the broker rightly answers such a PUBLISH with PUBREC without routing it.

// hosts is one client's list of nodes, as a client configured with
// several hosts has: it connects to its home node and, when an attempt
// fails or its connection ends, to the next one. The clients of a run get
// their home nodes in turn, so that they are spread over a cluster. With
// one node it is always that node.
type hosts struct {
	nodes []*Node
	i     atomic.Int64
}

func (h *harness) newHosts() *hosts {
	hs := &hosts{nodes: h.nodes}
	hs.i.Store(h.homes.Add(1) - 1)
	return hs
}

// node is where the client connects now; nil hosts is the first node.
func (hs *hosts) node(h *harness) *Node {
	if hs == nil {
		return h.node
	}
	return hs.nodes[int(hs.i.Load()%int64(len(hs.nodes)))]
}

// connected counts a connection made to the current node.
func (hs *hosts) connected() {
	if hs != nil {
		hs.node(nil).Conns.Add(1)
	}
}

// next moves the client on to the next node (a no-op with one node).
func (hs *hosts) next() {
	if hs != nil {
		hs.i.Add(1)
	}
}

func (h *harness) m5Connect(ctx context.Context, hs *hosts, cid string, clean bool, sess session.SessionManager, onMsg func(*paho.Publish), onLost func(string)) (*paho.Client, bool, error) {
	return m5ConnectAddr(ctx, hs.node(h).MQTT, cid, clean, sess, onMsg, onLost)
}

// m5ConnectAddr connects an MQTT 5 client; a persistent one (clean false)
// asks for a day of session expiry. sess may be nil (fresh state).
func m5ConnectAddr(ctx context.Context, addr, cid string, clean bool, sess session.SessionManager, onMsg func(*paho.Publish), onLost func(string)) (*paho.Client, bool, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	cfg := paho.ClientConfig{ClientID: cid, Conn: conn, Session: sess}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { onMsg(pr.Packet); return true, nil },
		}
	}
	if onLost != nil {
		cfg.OnClientError = func(err error) { onLost(err.Error()) }
		cfg.OnServerDisconnect = func(d *paho.Disconnect) { onLost(fmt.Sprintf("DISCONNECT 0x%02x", d.ReasonCode)) }
	}
	c := paho.NewClient(cfg)
	cp := &paho.Connect{ClientID: cid, CleanStart: clean, KeepAlive: 10}
	if !clean {
		exp := uint32(24 * 3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ca, err := c.Connect(cctx, cp)
	if err != nil {
		conn.Close()
		return nil, false, err
	}
	return c, ca.SessionPresent, nil
}

func newSession(clean bool) session.SessionManager {
	if clean {
		return nil
	}
	return state.NewInMemory()
}

func (h *harness) m5Producer(ctx context.Context, st *Stream, topic string, qos byte, clean bool) {
	pid := h.newPID()
	cid := fmt.Sprintf("soak-%s-p%d", st.Name, pid)
	topic = fmt.Sprintf("%s/p%d", topic, pid)
	pace := &pacer{rate: h.cfg.Rate}
	sess := newSession(clean)
	hs := h.newHosts()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		c, _, err := h.m5Connect(ctx, hs, cid, clean, sess, nil, nil)
		if err != nil {
			hs.next()
			backoff(ctx, attempt)
			continue
		}
		hs.connected()
		attempt = 0
		// With a session of its own, paho keeps waiting for the
		// acknowledgement of a publish in flight when the connection
		// drops (it resends it on the next connection): end the wait
		// with the connection.
		connCtx, cancelConn := context.WithCancel(ctx)
		go func() {
			select {
			case <-c.Done():
				cancelConn()
			case <-connCtx.Done():
			}
		}()
		for connCtx.Err() == nil {
			pace.wait(ctx, 1)
			if !h.gateIn(ctx) {
				break
			}
			seq := st.Next(pid)
			pctx, cancel := context.WithTimeout(connCtx, opTimeout)
			resp, err := c.Publish(pctx, &paho.Publish{Topic: topic, QoS: qos, Payload: encodePayload(st.Name, pid, seq, payload)})
			cancel()
			h.gateOut()
			if resp != nil && resp.ReasonCode >= 0x80 {
				st.Refuse(pid, seq)
				h.noteRefusal(st, fmt.Sprintf("MQTT 5 reason 0x%02x", resp.ReasonCode))
				continue
			}
			if err != nil {
				if connCtx.Err() == nil {
					h.lostConn(ctx, st, "producer", err.Error())
				}
				bumpDisruption()
				break
			}
			if qos > 0 {
				st.Ack(pid, seq)
			}
		}
		cancelConn()
		closeM5(c)
		hs.next()
	}
}

func closeM5(c *paho.Client) {
	done := make(chan struct{})
	go func() { _ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

func (h *harness) m5Consumer(ctx context.Context, st *Stream, filter string, qos byte, clean bool, ready func()) {
	cid := "soak-" + st.Name + "-c"
	ctl := h.ctl(st)
	first := true
	sess := newSession(clean)
	hs := h.newHosts()
	subscribed := false
	onMsg := func(p *paho.Publish) {
		ctl.hold(ctx)
		st.recordPkt(p.Payload, p.PacketID)
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		for ctl.away.Load() && ctx.Err() == nil {
			sleep(ctx, 50*time.Millisecond)
		}
		c, present, err := h.m5Connect(ctx, hs, cid, clean, sess, onMsg, func(why string) { h.lostConn(ctx, st, "consumer", why) })
		if err != nil {
			hs.next()
			backoff(ctx, attempt)
			continue
		}
		hs.connected()
		attempt = 0
		if !first {
			bumpDisruption()
		}
		// Subscribe again when the session is new, and also when the
		// last SUBSCRIBE was not granted: the session was created by the
		// CONNECT before (a cluster node whose session store is not
		// ready yet refuses the SUBSCRIBE), and a session present without
		// the subscription would get nothing, ever.
		if clean || !present || !subscribed {
			if !clean && !present && subscribed {
				h.finding("%s: persistent session not present on reconnect (stored messages gone)", st.Name)
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			sa, err := c.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
			cancel()
			if err == nil && (sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80) {
				err = fmt.Errorf("SUBACK %v", sa)
			}
			if err != nil {
				h.logf("  %s: consumer's SUBSCRIBE not granted (subscribing again on the next connection): %v", st.Name, err)
				closeM5(c)
				hs.next()
				continue
			}
			subscribed = true
		}
		if first {
			first = false
			ready()
		}
		ctl.online.Store(true)
		select {
		case <-c.Done():
		case <-ctl.kick:
			closeM5(c)
		case <-ctx.Done():
			closeM5(c)
		}
		ctl.online.Store(false)
		hs.next()
	}
}

// lostConn logs why a consumer lost its connection (outside faults that
// is worth a look: keep-alive, a takeover, a server DISCONNECT).
func (h *harness) lostConn(ctx context.Context, st *Stream, who, why string) {
	if h.inFault.Load() || ctx.Err() != nil || h.quiet.Load() {
		return
	}
	h.logf("  %s: %s connection lost outside a fault: %s", st.Name, who, why)
}

// ---- MQTT 3.1.1 (paho.mqtt.golang) ----

// m3Client is one paho.mqtt.golang client used for all the connections of
// a logical client, so that its session state (its store) carries over.
type m3Client struct {
	c     mqtt3.Client
	hosts *hosts // pubrelFix dials its current node, whatever broker paho names
	mu    sync.Mutex
	lost  chan struct{}
}

func (h *harness) newM3(cid string, clean bool, onMsg func(mqtt3.Message), onLost func(string)) *m3Client {
	m := &m3Client{hosts: h.newHosts()}
	// Resent in the order first sent [MQTT-4.6.0-1]; the plain memory
	// store resends in map order.
	store := mqtt3.NewOrderedMemoryStore()
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + h.node.MQTT).SetClientID(cid).
		SetProtocolVersion(4).SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(10 * time.Second).SetOrderMatters(true).SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(opTimeout).
		SetStore(store).
		// PUBREL, not the PUBLISH, after a PUBREC (pubrel.go).
		SetCustomOpenConnectionFn(pubrelFix(store, func() string { return m.hosts.node(h).MQTT })).
		SetConnectionLostHandler(func(_ mqtt3.Client, err error) {
			if onLost != nil {
				onLost(err.Error())
			}
			m.mu.Lock()
			if m.lost != nil {
				close(m.lost)
				m.lost = nil
			}
			m.mu.Unlock()
		})
	if onMsg != nil {
		// Messages of a resumed session arrive before any Subscribe
		// call: the default handler takes them.
		o.SetDefaultPublishHandler(func(_ mqtt3.Client, msg mqtt3.Message) { onMsg(msg) })
	}
	m.c = mqtt3.NewClient(o)
	return m
}

// connect connects and returns whether the session was present and a
// channel closed when this connection is lost.
func (m *m3Client) connect() (bool, <-chan struct{}, error) {
	lost := make(chan struct{})
	m.mu.Lock()
	m.lost = lost
	m.mu.Unlock()
	tok := m.c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		m.hosts.next()
		m.c.Disconnect(0)
		if tok.Error() != nil {
			return false, nil, tok.Error()
		}
		return false, nil, errors.New("connect timed out")
	}
	return tok.(*mqtt3.ConnectToken).SessionPresent(), lost, nil
}

func (h *harness) m3Producer(ctx context.Context, st *Stream, topic string, qos byte, clean bool) {
	pid := h.newPID()
	cid := fmt.Sprintf("soak-%s-p%d", st.Name, pid)
	pace := &pacer{rate: h.cfg.Rate}
	const window = 16
	type inflight struct {
		seq int
		tok mqtt3.Token
	}
	m := h.newM3(cid, clean, nil, func(why string) { h.lostConn(ctx, st, "producer", why) })
	for attempt, conns := 0, 0; ctx.Err() == nil; attempt++ {
		_, lost, err := m.connect()
		if err != nil {
			backoff(ctx, attempt)
			continue
		}
		if conns++; conns > 1 {
			// paho resends what was in flight: duplicates are allowed.
			bumpDisruption()
		}
		m.hosts.connected()
		attempt = 0
		ok := true
		for ok && ctx.Err() == nil {
			pace.wait(ctx, window)
			if !h.gateIn(ctx) {
				break
			}
			var fl []inflight
			for i := 0; i < window; i++ {
				seq := st.Next(pid)
				fl = append(fl, inflight{seq, m.c.Publish(topic, qos, false, encodePayload(st.Name, pid, seq, payload))})
			}
			deadline := time.NewTimer(opTimeout)
			for _, f := range fl {
				if !ok {
					break
				}
				select {
				case <-f.tok.Done():
					if f.tok.Error() != nil {
						ok = false
					} else if qos > 0 {
						st.Ack(pid, f.seq)
					}
				case <-lost:
					ok = false
				case <-deadline.C:
					h.lostConn(ctx, st, "producer", "no acknowledgement within "+opTimeout.String())
					ok = false
				}
			}
			deadline.Stop()
			h.gateOut()
		}
		m.c.Disconnect(100)
		m.hosts.next()
	}
}

func (h *harness) m3Consumer(ctx context.Context, st *Stream, filter string, qos byte, clean bool, ready func()) {
	cid := "soak-" + st.Name + "-c"
	ctl := h.ctl(st)
	first := true
	on := func(msg mqtt3.Message) {
		ctl.hold(ctx)
		st.recordPkt(msg.Payload(), msg.MessageID())
	}
	m := h.newM3(cid, clean, on, func(why string) { h.lostConn(ctx, st, "consumer", why) })
	subscribed := false
	for attempt := 0; ctx.Err() == nil; attempt++ {
		present, lost, err := m.connect()
		if err != nil {
			backoff(ctx, attempt)
			continue
		}
		m.hosts.connected()
		attempt = 0
		if !first {
			bumpDisruption()
		}
		if clean || !present || !subscribed { // as in m5Consumer
			if !clean && !present && subscribed {
				h.finding("%s: persistent session not present on reconnect (stored messages gone)", st.Name)
			}
			tok := m.c.Subscribe(filter, qos, func(_ mqtt3.Client, msg mqtt3.Message) { on(msg) })
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil || refusedSuback(tok) {
				h.logf("  %s: consumer's SUBSCRIBE not granted (subscribing again on the next connection): %v", st.Name, tok.Error())
				m.c.Disconnect(0)
				m.hosts.next()
				continue
			}
			subscribed = true
		}
		if first {
			first = false
			ready()
		}
		select {
		case <-lost:
		case <-ctl.kick:
			m.c.Disconnect(250)
		case <-ctx.Done():
			m.c.Disconnect(250)
		}
		m.hosts.next()
	}
}

// ---- AMQP 1.0 (go-amqp) ----

// amqpDial connects to hosts' current node (nil: the first node).
func (h *harness) amqpDial(ctx context.Context, hs *hosts) (*amqp.Conn, *amqp.Session, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(cctx, "amqp://"+hs.node(h).AMQP, &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous(), IdleTimeout: 30 * time.Second})
	if err != nil {
		return nil, nil, err
	}
	sess, err := conn.NewSession(cctx, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, sess, nil
}

func (h *harness) amqpProducer(ctx context.Context, st *Stream, address string) {
	pid := h.newPID()
	pace := &pacer{rate: h.cfg.Rate}
	const window = 32
	hs := h.newHosts()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		conn, sess, err := h.amqpDial(ctx, hs)
		if err != nil {
			hs.next()
			backoff(ctx, attempt)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		snd, err := sess.NewSender(sctx, address, nil)
		cancel()
		if err != nil {
			conn.Close()
			hs.next()
			backoff(ctx, attempt)
			continue
		}
		hs.connected()
		attempt = 0
		ok := true
		for ok && ctx.Err() == nil {
			pace.wait(ctx, window)
			if !h.gateIn(ctx) {
				break
			}
			ok = h.amqpBatch(ctx, st, pid, snd, window, opTimeout)
			h.gateOut()
			if !ok {
				h.lostConn(ctx, st, "producer", "send failed or no outcome within "+opTimeout.String())
				bumpDisruption()
			}
		}
		conn.Close()
		hs.next()
	}
}

// amqpBatch sends n messages pipelined, then waits for their outcomes in
// order. It reports whether the link is still usable.
func (h *harness) amqpBatch(ctx context.Context, st *Stream, pid int, snd *amqp.Sender, n int, timeout time.Duration) bool {
	type inflight struct {
		seq int
		r   amqp.SendReceipt
	}
	var fl []inflight
	ok := true
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for i := 0; i < n; i++ {
		seq := st.Next(pid)
		msg := amqp.NewMessage(encodePayload(st.Name, pid, seq, payload))
		msg.Header = &amqp.MessageHeader{Durable: true}
		r, err := snd.SendWithReceipt(sctx, msg, nil)
		if err != nil {
			ok = false
			break
		}
		fl = append(fl, inflight{seq, r})
	}
	for _, f := range fl {
		state, err := f.r.Wait(sctx)
		if err != nil {
			return false
		}
		switch s := state.(type) {
		case *amqp.StateAccepted:
			st.Ack(pid, f.seq)
		case *amqp.StateRejected:
			st.Refuse(pid, f.seq)
			cond := "rejected"
			if s.Error != nil {
				cond = "rejected " + string(s.Error.Condition)
			}
			h.noteRefusal(st, "AMQP "+cond)
		default:
			st.Refuse(pid, f.seq)
			h.noteRefusal(st, fmt.Sprintf("AMQP %T", state))
		}
	}
	return ok
}

func (h *harness) amqpConsumer(ctx context.Context, st *Stream, address string, ready func()) {
	ctl := h.ctl(st)
	first := true
	hs := h.newHosts()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		conn, sess, err := h.amqpDial(ctx, hs)
		if err != nil {
			hs.next()
			backoff(ctx, attempt)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rcv, err := sess.NewReceiver(sctx, address, &amqp.ReceiverOptions{Credit: 100})
		cancel()
		if err != nil {
			conn.Close()
			hs.next()
			backoff(ctx, attempt)
			continue
		}
		hs.connected()
		attempt = 0
		if !first {
			bumpDisruption()
		}
		if first {
			first = false
			ready()
		}
		lctx, cancelLink := context.WithCancel(ctx)
		go func() {
			select {
			case <-ctl.kick:
				cancelLink()
			case <-lctx.Done():
			}
		}()
		for lctx.Err() == nil {
			msg, err := rcv.Receive(lctx, nil)
			if err != nil {
				if lctx.Err() == nil {
					h.lostConn(ctx, st, "consumer", err.Error())
				}
				break
			}
			ctl.hold(ctx)
			st.record(msg.GetData())
			actx, cancel := context.WithTimeout(ctx, opTimeout)
			err = rcv.AcceptMessage(actx, msg)
			cancel()
			if err != nil {
				break
			}
		}
		cancelLink()
		conn.Close()
		hs.next()
	}
}

// refusedSuback reports whether a 3.1.1 SUBACK refused the subscription
// (return code 0x80).
func refusedSuback(tok mqtt3.Token) bool {
	st, ok := tok.(*mqtt3.SubscribeToken)
	if !ok {
		return false
	}
	for _, rc := range st.Result() {
		if rc >= 0x80 {
			return true
		}
	}
	return false
}
