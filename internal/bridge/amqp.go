package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// The AMQP 1.0 link bridge (docs/bridges.md), with go-amqp as the client.
//
// Out: each mapping's durable subscription, as for MQTT; every message
// goes over a sender link (transfers unsettled, receiver settles first) whose target
// is the remote address (remotePrefix + the local name's rest), one at a
// time per mapping, and is settled locally only when the remote's
// disposition is accepted. Rejected: rejected locally (dead-lettered where
// the address has a dead-letter address), counted as dropped. Released,
// modified, a lost link or connection: sent again (counted as retried;
// the remote may have it twice).
//
// In: per mapping a receiver link on the remote source remotePrefix +
// filter; each message is published to the local address localPrefix +
// filter and accepted remotely only after the local outcome (rejected if
// the tenant refuses it for good). Until then it is unsettled: a lost
// connection or a restart of throng makes the remote send it again.

// amqpLink is a bridge's connection to the remote AMQP container, kept up
// by amqpConnLoop.
type amqpLink struct {
	mu      sync.Mutex
	conn    *amqp.Conn
	sess    *amqp.Session
	ready   chan struct{} // closed while conn is up
	senders map[string]*amqp.Sender
}

func (r *runner) startAMQP() {
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
	opts := &amqp.ConnOptions{
		ContainerID: r.def.Remote.ClientID,
		SASLType:    amqp.SASLTypeAnonymous(),
		TLSConfig:   tlsCfg,
		IdleTimeout: time.Minute,
	}
	if opts.ContainerID == "" {
		opts.ContainerID = "throng-" + r.tenant + "-" + r.def.Name
	}
	if r.def.Remote.Username != "" {
		opts.SASLType = amqp.SASLTypePlain(r.def.Remote.Username, r.def.Remote.Password)
	}
	if tlsCfg != nil {
		opts.HostName = tlsCfg.ServerName
	}
	r.amqp = &amqpLink{ready: make(chan struct{})}
	r.wg.Add(1)
	go r.amqpConnLoop(u.Scheme+"://"+u.Host, opts)
	if r.def.in() {
		for _, mp := range r.def.Mappings {
			r.wg.Add(1)
			go r.amqpInLoop(mp)
		}
	}
}

// amqpConnLoop connects, waits until the connection ends and connects
// again, with exponential back-off (250 ms to 30 s).
func (r *runner) amqpConnLoop(addr string, opts *amqp.ConnOptions) {
	defer r.wg.Done()
	l := r.amqp
	backoff := 250 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		conn, err := amqp.Dial(ctx, addr, opts)
		var sess *amqp.Session
		if err == nil {
			if sess, err = conn.NewSession(ctx, nil); err != nil {
				_ = conn.Close()
			}
		}
		cancel()
		if r.ctx.Err() != nil {
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		if err != nil {
			r.fail(fmt.Errorf("amqp connect: %w", err))
			r.setDown()
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = 250 * time.Millisecond
		l.mu.Lock()
		l.conn, l.sess, l.senders = conn, sess, map[string]*amqp.Sender{}
		close(l.ready)
		l.mu.Unlock()
		r.setUp()
		select {
		case <-r.ctx.Done():
			return // close closes conn
		case <-conn.Done():
		}
		r.fail(fmt.Errorf("amqp connection lost: %v", conn.Err()))
		r.setDown()
		l.mu.Lock()
		l.conn, l.sess, l.senders, l.ready = nil, nil, nil, make(chan struct{})
		l.mu.Unlock()
	}
}

func (l *amqpLink) close() {
	l.mu.Lock()
	c := l.conn
	l.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// session waits for the connection.
func (l *amqpLink) session(ctx context.Context) (*amqp.Conn, *amqp.Session, error) {
	for {
		l.mu.Lock()
		c, s, ready := l.conn, l.sess, l.ready
		l.mu.Unlock()
		if s != nil {
			return c, s, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-ready:
		}
	}
}

// sender returns the connection's sender link to addr, attaching it if
// needed.
func (l *amqpLink) sender(ctx context.Context, addr string) (*amqp.Conn, *amqp.Sender, error) {
	c, s, err := l.session(ctx)
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	snd := l.senders[addr]
	l.mu.Unlock()
	if snd != nil {
		return c, snd, nil
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// snd-settle-mode mixed (go-amqp's default: a transfer is unsettled
	// unless sent settled, which this bridge never does) rather than
	// unsettled: go-amqp refuses an attach whose answer differs from the
	// mode asked for, and Qpid Proton answers mixed whatever was asked.
	snd, err = s.NewSender(actx, addr, nil)
	if err != nil {
		return c, nil, err
	}
	l.mu.Lock()
	if l.conn == c && l.senders != nil {
		l.senders[addr] = snd
	}
	l.mu.Unlock()
	return c, snd, nil
}

// broken forgets a failed sender; a failed session closes the
// connection, which amqpConnLoop then opens again.
func (l *amqpLink) broken(c *amqp.Conn, addr string, snd *amqp.Sender, err error) {
	l.mu.Lock()
	if l.conn == c && l.senders != nil && (snd == nil || l.senders[addr] == snd) {
		delete(l.senders, addr)
	}
	l.mu.Unlock()
	if snd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = snd.Close(ctx)
		cancel()
	}
	var se *amqp.SessionError
	if c != nil && errors.As(err, &se) {
		_ = c.Close()
	}
}

// sendAMQP sends one delivery until the remote accepted or rejected it
// (or the bridge stops: released, it comes again), then settles it.
func (r *runner) sendAMQP(d *router.Delivery, mp Mapping) {
	addr, ok := mp.ToRemote(d.Address)
	if !ok {
		d.Settle(router.Outcome{Kind: router.Accepted})
		return
	}
	wait := func(t time.Duration) bool {
		select {
		case <-r.ctx.Done():
			d.Settle(router.Outcome{Kind: router.Released})
			return false
		case <-time.After(t):
			return true
		}
	}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			r.count("out", "retried")
		}
		msg, err := toGoAMQP(d)
		if err != nil {
			r.fail(fmt.Errorf("message for %q: %w", addr, err))
			d.Settle(router.Outcome{Kind: router.Rejected, Description: "cannot be sent over AMQP: " + err.Error()})
			r.count("out", "dropped")
			return
		}
		c, snd, err := r.amqp.sender(r.ctx, addr)
		if err != nil {
			if r.ctx.Err() != nil {
				d.Settle(router.Outcome{Kind: router.Released})
				return
			}
			// Attach refused (not found, not allowed) or the connection
			// went: the message waits (lag), the error shows.
			r.fail(fmt.Errorf("amqp sender to %q: %w", addr, err))
			r.amqp.broken(c, addr, nil, err)
			if !wait(time.Second) {
				return
			}
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
		var st amqp.DeliveryState
		rc, err := snd.SendWithReceipt(ctx, msg, nil)
		if err == nil {
			st, err = rc.Wait(ctx)
		}
		cancel()
		if err == nil {
			switch st := st.(type) {
			case *amqp.StateAccepted:
				d.Settle(router.Outcome{Kind: router.Accepted})
				r.count("out", "sent")
				return
			case *amqp.StateRejected:
				why := "rejected"
				if st.Error != nil {
					why = st.Error.Error()
				}
				r.fail(fmt.Errorf("remote rejected a message to %q: %s", addr, why))
				d.Settle(router.Outcome{Kind: router.Rejected, Description: "remote rejected it: " + why})
				r.count("out", "dropped")
				return
			}
			// Released, modified (or no outcome): sent again.
			r.fail(fmt.Errorf("remote did not accept a message to %q: %T", addr, st))
			if !wait(200 * time.Millisecond) {
				return
			}
			continue
		}
		if r.ctx.Err() != nil {
			d.Settle(router.Outcome{Kind: router.Released})
			return
		}
		r.fail(fmt.Errorf("amqp send to %q: %w", addr, err))
		r.amqp.broken(c, addr, snd, err)
		if !wait(200 * time.Millisecond) {
			return
		}
	}
}

// amqpInLoop pulls a mapping's remote source into its local address.
func (r *runner) amqpInLoop(mp Mapping) {
	defer r.wg.Done()
	src, local := mp.RemoteFilter(), mp.LocalFilter()
	for {
		c, s, err := r.amqp.session(r.ctx)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		rcv, err := s.NewReceiver(ctx, src, &amqp.ReceiverOptions{Credit: outWindow})
		cancel()
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.fail(fmt.Errorf("amqp receiver from %q: %w", src, err))
			r.amqp.broken(c, "", nil, err)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for {
			am, err := rcv.Receive(r.ctx, nil)
			if err != nil {
				if r.ctx.Err() != nil {
					return
				}
				r.fail(fmt.Errorf("amqp receive from %q: %w", src, err))
				r.amqp.broken(c, "", nil, err)
				break
			}
			m, err := fromGoAMQP(am)
			if err != nil {
				r.fail(fmt.Errorf("amqp message from %q: %w", src, err))
				_ = rcv.RejectMessage(r.ctx, am, &amqp.Error{Condition: amqp.ErrCondDecodeError, Description: err.Error()})
				r.count("in", "dropped")
				continue
			}
			m.Origin = r.org
			switch r.publishLocal(local, m, false) {
			case localStopped:
				return // unsettled: the remote sends it again
			case localDropped:
				err = rcv.RejectMessage(r.ctx, am, &amqp.Error{Condition: amqp.ErrCondNotAllowed, Description: "refused by the bridge's tenant"})
			default:
				err = rcv.AcceptMessage(r.ctx, am)
			}
			if err != nil && r.ctx.Err() == nil {
				// Published locally, not settled remotely: the remote
				// sends it again (a duplicate).
				r.fail(fmt.Errorf("amqp settle from %q: %w", src, err))
			}
		}
	}
}

// toGoAMQP converts a delivery's message for go-amqp: AMQP messages from
// their own sections (byte for byte what their sender sent, bar the
// header), others built from the model as the AMQP front-end does.
func toGoAMQP(d *router.Delivery) (*amqp.Message, error) {
	m := d.Message
	am := &amqp.Message{}
	if m.NativeFormat == message.NativeAMQP && len(m.Native) > 0 {
		if err := am.UnmarshalBinary(m.Native); err != nil {
			return nil, err
		}
	} else {
		p := &amqp.MessageProperties{MessageID: idToGo(m.MessageID), CorrelationID: idToGo(m.CorrelationID), UserID: m.UserID}
		str := func(s string) *string {
			if s == "" {
				return nil
			}
			return &s
		}
		p.To, p.Subject, p.ReplyTo, p.GroupID = str(m.To), str(m.Subject), str(m.ReplyTo), str(m.GroupID)
		p.ContentType, p.ContentEncoding = str(m.ContentType), str(m.ContentEncoding)
		if !m.CreationTime.IsZero() {
			t := m.CreationTime
			p.CreationTime = &t
		}
		if !m.Expiry.IsZero() {
			t := m.Expiry
			p.AbsoluteExpiryTime = &t
		}
		am.Properties = p
		for k, v := range m.Properties {
			if am.ApplicationProperties == nil {
				am.ApplicationProperties = map[string]any{}
			}
			am.ApplicationProperties[k] = v
		}
		switch m.BodyKind {
		case message.BodyAMQPString:
			am.Value = string(m.Body)
		case message.BodyAMQPValue, message.BodyAMQPSequence:
			body := m.Body
			if m.BodyKind == message.BodyAMQPValue {
				body = append([]byte{0x00, 0x53, 0x77}, m.Body...) // amqp-value descriptor
			}
			var b amqp.Message
			if err := b.UnmarshalBinary(body); err != nil {
				return nil, err
			}
			am.Value, am.Sequence = b.Value, b.Sequence
		default:
			am.Data = [][]byte{m.Body}
		}
	}
	h := &amqp.MessageHeader{Durable: m.Durable, Priority: m.Priority}
	if m.NativeFormat != message.NativeAMQP && h.Priority == 0 {
		h.Priority = 4
	}
	if !m.Expiry.IsZero() {
		h.TTL = max(time.Until(m.Expiry), time.Millisecond)
	} else if m.TTL > 0 {
		h.TTL = m.TTL
	}
	am.Header = h
	return am, nil
}

func idToGo(v any) any {
	switch v := v.(type) {
	case [16]byte:
		return amqp.UUID(v)
	case string, uint64, []byte:
		return v
	}
	return nil
}

func idFromGo(v any) any {
	if u, ok := v.(amqp.UUID); ok {
		return [16]byte(u)
	}
	switch v.(type) {
	case string, uint64, []byte:
		return v
	}
	return nil
}

// fromGoAMQP converts a received message: the decoded view for routing
// and other protocols, and its sections (without header and delivery
// annotations) as Native, so that local AMQP receivers get them as the
// remote sent them.
func fromGoAMQP(am *amqp.Message) (*message.Message, error) {
	m := &message.Message{Priority: 4, CreationTime: time.Now()}
	if h := am.Header; h != nil {
		m.Durable, m.Priority, m.TTL = h.Durable, h.Priority, h.TTL
	}
	if p := am.Properties; p != nil {
		m.MessageID, m.CorrelationID, m.UserID = idFromGo(p.MessageID), idFromGo(p.CorrelationID), p.UserID
		val := func(s *string) string {
			if s == nil {
				return ""
			}
			return *s
		}
		m.To, m.Subject, m.ReplyTo, m.GroupID = val(p.To), val(p.Subject), val(p.ReplyTo), val(p.GroupID)
		m.ContentType, m.ContentEncoding = val(p.ContentType), val(p.ContentEncoding)
		if p.CreationTime != nil {
			m.CreationTime = *p.CreationTime
		}
		if p.AbsoluteExpiryTime != nil {
			m.Expiry = *p.AbsoluteExpiryTime
		}
	}
	for k, v := range am.ApplicationProperties {
		if m.Properties == nil {
			m.Properties = map[string]any{}
		}
		m.Properties[k] = propFromGo(v)
	}
	switch {
	case am.Data != nil:
		m.Body = bytes.Join(am.Data, nil)
	case am.Sequence != nil:
		b, err := (&amqp.Message{Sequence: am.Sequence}).MarshalBinary()
		if err != nil {
			return nil, err
		}
		m.BodyKind, m.Body = message.BodyAMQPSequence, b
	case am.Value != nil:
		switch v := am.Value.(type) {
		case string:
			m.BodyKind, m.Body = message.BodyAMQPString, []byte(v)
		case []byte:
			m.Body = v
		default:
			b, err := (&amqp.Message{Value: v}).MarshalBinary()
			if err != nil {
				return nil, err
			}
			m.BodyKind, m.Body = message.BodyAMQPValue, b[3:] // after the amqp-value descriptor
		}
	}
	bare := &amqp.Message{Annotations: am.Annotations, Properties: am.Properties, ApplicationProperties: am.ApplicationProperties,
		Data: am.Data, Value: am.Value, Sequence: am.Sequence, Footer: am.Footer}
	native, err := bare.MarshalBinary()
	if err != nil {
		return nil, err
	}
	m.NativeFormat, m.Native = message.NativeAMQP, native
	return m, nil
}

// propFromGo maps an application property onto the model's kinds.
func propFromGo(v any) any {
	if p, ok := message.Property(v); ok {
		return p
	}
	switch v := v.(type) {
	case amqp.Symbol:
		return string(v)
	case amqp.UUID:
		return v.String()
	}
	return fmt.Sprint(v)
}
