package soak

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/Azure/go-amqp"
	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
)

// Clients never resend on their own: a publish whose acknowledgement was
// lost with its connection stays "sent, not acknowledged" (it may or may
// not be delivered), and every reconnect makes a new client, so what the
// checker sees is the broker's doing, not a library's retry logic.

// consumerCtl makes a consumer slow (a delay per message) or stuck (no
// message handled until a time).
type consumerCtl struct {
	delay      atomic.Int64 // ns per message
	stuckUntil atomic.Int64 // unix ns
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

func (h *harness) m5Connect(ctx context.Context, cid string, clean bool, onMsg func(*paho.Publish)) (*paho.Client, bool, error) {
	return m5ConnectAddr(ctx, h.node.MQTT, cid, clean, onMsg)
}

// m5ConnectAddr connects an MQTT 5 client; a persistent one (clean false)
// asks for a day of session expiry.
func m5ConnectAddr(ctx context.Context, addr, cid string, clean bool, onMsg func(*paho.Publish)) (*paho.Client, bool, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	cfg := paho.ClientConfig{ClientID: cid, Conn: conn}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { onMsg(pr.Packet); return true, nil },
		}
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

func (h *harness) m5Producer(ctx context.Context, st *Stream, topic string, qos byte, clean bool) {
	pid := h.newPID()
	cid := fmt.Sprintf("soak-%s-p%d", st.Name, pid)
	topic = fmt.Sprintf("%s/p%d", topic, pid)
	pace := &pacer{rate: h.cfg.Rate}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		c, _, err := h.m5Connect(ctx, cid, clean, nil)
		if err != nil {
			backoff(ctx, attempt)
			continue
		}
		attempt = 0
		for ctx.Err() == nil {
			pace.wait(ctx, 1)
			if !h.gateIn(ctx) {
				break
			}
			seq := st.Next(pid)
			pctx, cancel := context.WithTimeout(ctx, opTimeout)
			resp, err := c.Publish(pctx, &paho.Publish{Topic: topic, QoS: qos, Payload: encodePayload(st.Name, pid, seq, payload)})
			cancel()
			h.gateOut()
			if resp != nil && resp.ReasonCode >= 0x80 {
				st.Refuse(pid, seq)
				h.noteRefusal(st, fmt.Sprintf("MQTT 5 reason 0x%02x", resp.ReasonCode))
				continue
			}
			if err != nil {
				break
			}
			if qos > 0 {
				st.Ack(pid, seq)
			}
		}
		closeM5(c)
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
	for attempt := 0; ctx.Err() == nil; attempt++ {
		c, present, err := h.m5Connect(ctx, cid, clean, func(p *paho.Publish) {
			ctl.hold(ctx)
			st.record(p.Payload)
		})
		if err != nil {
			backoff(ctx, attempt)
			continue
		}
		attempt = 0
		if !first {
			bumpDisruption()
		}
		if clean || !present {
			if !clean && !first {
				h.finding("%s: persistent session not present on reconnect (stored messages gone)", st.Name)
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := c.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
			cancel()
			if err != nil {
				closeM5(c)
				continue
			}
		}
		if first {
			first = false
			ready()
		}
		select {
		case <-c.Done():
		case <-ctx.Done():
			closeM5(c)
		}
	}
}

// ---- MQTT 3.1.1 (paho.mqtt.golang) ----

func (h *harness) m3Connect(ctx context.Context, cid string, clean bool, onMsg func([]byte)) (mqtt3.Client, bool, <-chan struct{}, error) {
	lost := make(chan struct{})
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + h.node.MQTT).SetClientID(cid).
		SetProtocolVersion(4).SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(10 * time.Second).SetOrderMatters(true).SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(opTimeout).
		SetConnectionLostHandler(func(mqtt3.Client, error) { close(lost) })
	if onMsg != nil {
		// Messages of a resumed session arrive before any Subscribe
		// call: the default handler takes them.
		o.SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) { onMsg(m.Payload()) })
	}
	c := mqtt3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		if tok.Error() != nil {
			return nil, false, nil, tok.Error()
		}
		return nil, false, nil, errors.New("connect timed out")
	}
	return c, tok.(*mqtt3.ConnectToken).SessionPresent(), lost, nil
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
	for attempt := 0; ctx.Err() == nil; attempt++ {
		c, _, lost, err := h.m3Connect(ctx, cid, clean, nil)
		if err != nil {
			backoff(ctx, attempt)
			continue
		}
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
				fl = append(fl, inflight{seq, c.Publish(topic, qos, false, encodePayload(st.Name, pid, seq, payload))})
			}
			deadline := time.Now().Add(opTimeout)
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
				case <-time.After(time.Until(deadline)):
					ok = false
				}
			}
			h.gateOut()
		}
		c.Disconnect(100)
	}
}

func (h *harness) m3Consumer(ctx context.Context, st *Stream, filter string, qos byte, clean bool, ready func()) {
	cid := "soak-" + st.Name + "-c"
	ctl := h.ctl(st)
	first := true
	on := func(b []byte) {
		ctl.hold(ctx)
		st.record(b)
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		c, present, lost, err := h.m3Connect(ctx, cid, clean, on)
		if err != nil {
			backoff(ctx, attempt)
			continue
		}
		attempt = 0
		if !first {
			bumpDisruption()
		}
		if clean || !present {
			if !clean && !first {
				h.finding("%s: persistent session not present on reconnect (stored messages gone)", st.Name)
			}
			tok := c.Subscribe(filter, qos, func(_ mqtt3.Client, m mqtt3.Message) { on(m.Payload()) })
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				c.Disconnect(0)
				continue
			}
		}
		if first {
			first = false
			ready()
		}
		select {
		case <-lost:
		case <-ctx.Done():
			c.Disconnect(250)
		}
	}
}

// ---- AMQP 1.0 (go-amqp) ----

func (h *harness) amqpDial(ctx context.Context) (*amqp.Conn, *amqp.Session, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(cctx, "amqp://"+h.node.AMQP, &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous(), IdleTimeout: 30 * time.Second})
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
	for attempt := 0; ctx.Err() == nil; attempt++ {
		conn, sess, err := h.amqpDial(ctx)
		if err != nil {
			backoff(ctx, attempt)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		snd, err := sess.NewSender(sctx, address, nil)
		cancel()
		if err != nil {
			conn.Close()
			backoff(ctx, attempt)
			continue
		}
		attempt = 0
		ok := true
		for ok && ctx.Err() == nil {
			pace.wait(ctx, window)
			if !h.gateIn(ctx) {
				break
			}
			ok = h.amqpBatch(ctx, st, pid, snd, window, opTimeout)
			h.gateOut()
		}
		conn.Close()
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
	for attempt := 0; ctx.Err() == nil; attempt++ {
		conn, sess, err := h.amqpDial(ctx)
		if err != nil {
			backoff(ctx, attempt)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rcv, err := sess.NewReceiver(sctx, address, &amqp.ReceiverOptions{Credit: 100})
		cancel()
		if err != nil {
			conn.Close()
			backoff(ctx, attempt)
			continue
		}
		attempt = 0
		if !first {
			bumpDisruption()
		}
		if first {
			first = false
			ready()
		}
		for ctx.Err() == nil {
			msg, err := rcv.Receive(ctx, nil)
			if err != nil {
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
		conn.Close()
	}
}
