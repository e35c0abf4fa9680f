package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
)

// amqpLink is a raw AMQP 1.0 client with one connection, one session and
// one link, built on throng's own codec (internal/amqp/encoding, frames).
//
// go-amqp, the library clients use, writes one frame per write(2) and
// waits for each frame to be written through three goroutine hand-offs:
// at a few tens of thousands of messages a second it is the bottleneck of
// a benchmark, not the broker (docs/benchmarks.md). This client pipelines:
// a sender appends transfers to a buffer and writes it when it would wait
// (no credit, window full, nothing to send), and a receiver settles what
// it got in one disposition range per read. Like the MQTT client in
// mqttconn.go it implements only what the benchmark needs: SASL ANONYMOUS
// or PLAIN, open, begin, attach, flow, transfer (single-frame sends,
// multi-frame receives), disposition.
type amqpLink struct {
	nc  net.Conn
	br  *bufio.Reader
	buf []byte // frames read but not yet consumed

	wmu  sync.Mutex
	wbuf []byte // guarded by wmu

	maxFrame uint32 // the server's max-frame-size

	// session state from the server's begin
	remoteNextOutgoing uint32
	remoteIncoming     uint32 // the server's incoming window at begin

	// link
	handle uint32
	role   frames.Role
	// deliveryCount at attach (receiver: the server's initial delivery count)
	initialCount uint32
}

type amqpDial struct {
	addr, user, password string
}

func dialAMQP(ctx context.Context, o amqpDial) (*amqpLink, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, err
	}
	l := &amqpLink{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), maxFrame: 512}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	} else {
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if err := l.handshake(o); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return l, nil
}

func (l *amqpLink) handshake(o amqpDial) error {
	host, _, _ := net.SplitHostPort(o.addr)
	// SASL
	if _, err := l.nc.Write(frames.HeaderSASL.Append(nil)); err != nil {
		return err
	}
	if h, err := l.readHeader(); err != nil {
		return err
	} else if h != frames.HeaderSASL {
		return fmt.Errorf("amqp: server answered protocol header %+v to SASL", h)
	}
	if _, _, err := l.readFrame(); err != nil { // sasl-mechanisms
		return fmt.Errorf("amqp: sasl-mechanisms: %w", err)
	}
	init := &frames.SASLInit{Mechanism: "ANONYMOUS", InitialResponse: []byte{}, Hostname: host}
	if o.user != "" {
		init = &frames.SASLInit{Mechanism: "PLAIN", InitialResponse: []byte("\x00" + o.user + "\x00" + o.password), Hostname: host}
	}
	if err := l.writeNow(frames.TypeSASL, init, nil); err != nil {
		return err
	}
	perf, _, err := l.readFrame()
	if err != nil {
		return fmt.Errorf("amqp: sasl-outcome: %w", err)
	}
	if out, ok := perf.(*frames.SASLOutcome); !ok || out.Code != frames.SASLOk {
		return fmt.Errorf("amqp: SASL %s refused (%+v)", init.Mechanism, perf)
	}
	// AMQP
	if _, err := l.nc.Write(frames.HeaderAMQP.Append(nil)); err != nil {
		return err
	}
	if h, err := l.readHeader(); err != nil {
		return err
	} else if h != frames.HeaderAMQP {
		return fmt.Errorf("amqp: server answered protocol header %+v", h)
	}
	if err := l.writeNow(frames.TypeAMQP, &frames.Open{ContainerID: "throng-bench-" + randomID(), Hostname: host,
		MaxFrameSize: 1 << 20, ChannelMax: 0}, nil); err != nil {
		return err
	}
	perf, _, err = l.readFrame()
	if err != nil {
		return fmt.Errorf("amqp: open: %w", err)
	}
	open, ok := perf.(*frames.Open)
	if !ok {
		return fmt.Errorf("amqp: expected open, got %T", perf)
	}
	if open.MaxFrameSize >= 512 {
		l.maxFrame = open.MaxFrameSize
	}
	if err := l.writeNow(frames.TypeAMQP, &frames.Begin{IncomingWindow: math.MaxInt32, OutgoingWindow: math.MaxInt32, HandleMax: 0}, nil); err != nil {
		return err
	}
	for {
		perf, _, err := l.readFrame()
		if err != nil {
			return fmt.Errorf("amqp: begin: %w", err)
		}
		switch p := perf.(type) {
		case *frames.Begin:
			l.remoteNextOutgoing, l.remoteIncoming = p.NextOutgoingID, p.IncomingWindow
			return nil
		case *frames.Close:
			return fmt.Errorf("amqp: connection closed: %v", p.Error)
		}
	}
}

// attach attaches the link and waits for the server's attach.
func (l *amqpLink) attach(role frames.Role, address string, presettled bool) error {
	a := &frames.Attach{Name: "throng-bench-" + randomID(), Handle: 0, Role: role, RcvSettleMode: frames.ReceiverSettleFirst}
	if presettled {
		a.SndSettleMode = frames.SenderSettleSettled
	} else {
		a.SndSettleMode = frames.SenderSettleUnsettled
	}
	if role == frames.RoleSender {
		a.Source = &encoding.Source{}
		a.Target = &encoding.Target{Address: address}
		a.HasInitialDeliveryCount = true
	} else {
		a.Source = &encoding.Source{Address: address}
		a.Target = &encoding.Target{}
	}
	l.role = role
	_ = l.nc.SetDeadline(time.Now().Add(30 * time.Second))
	defer l.nc.SetDeadline(time.Time{})
	if err := l.writeNow(frames.TypeAMQP, a, nil); err != nil {
		return err
	}
	for {
		perf, _, err := l.readFrame()
		if err != nil {
			return fmt.Errorf("amqp: attach: %w", err)
		}
		switch p := perf.(type) {
		case *frames.Attach:
			if (role == frames.RoleSender && p.Target == nil) || (role == frames.RoleReceiver && p.Source == nil) {
				// Refused: a detach with the error follows.
				continue
			}
			l.initialCount = p.InitialDeliveryCount
			return nil
		case *frames.Detach:
			return fmt.Errorf("amqp: attach to %q refused: %v", address, p.Error)
		case *frames.Close:
			return fmt.Errorf("amqp: connection closed: %v", p.Error)
		}
	}
}

func (l *amqpLink) readHeader() (frames.ProtoHeader, error) {
	var b [8]byte
	if _, err := io.ReadFull(l.br, b[:]); err != nil {
		return frames.ProtoHeader{}, err
	}
	return frames.ParseProtoHeader(b[:])
}

// readFrame returns the next non-empty frame's performative and payload
// (valid until the next call).
func (l *amqpLink) readFrame() (frames.Performative, []byte, error) {
	for {
		f, n, err := frames.ReadFrame(l.buf, math.MaxUint32)
		if errors.Is(err, frames.ErrNeedMore) || len(l.buf) < 8 {
			if err := l.fill(max(n, 8)); err != nil {
				return nil, nil, err
			}
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		l.buf = l.buf[n:]
		if len(f.Body) == 0 {
			continue // heartbeat
		}
		return frames.DecodePerformative(f.Body)
	}
}

// buffered reports whether a whole frame is already read.
func (l *amqpLink) buffered() bool {
	_, _, err := frames.ReadFrame(l.buf, math.MaxUint32)
	return err == nil
}

// fill reads until at least n bytes are buffered.
func (l *amqpLink) fill(n int) error {
	if len(l.buf) >= n {
		return nil
	}
	// Keep what is left at the start of a fresh slice: frames handed out
	// earlier alias the old one.
	nb := make([]byte, len(l.buf), max(n, 64<<10))
	copy(nb, l.buf)
	l.buf = nb
	for len(l.buf) < n {
		k, err := l.br.Read(l.buf[len(l.buf):cap(l.buf)])
		l.buf = l.buf[:len(l.buf)+k]
		if err != nil && len(l.buf) < n {
			return err
		}
	}
	return nil
}

// append adds a frame to the write buffer.
func (l *amqpLink) append(typ uint8, p frames.Performative, payload []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	b, err := frames.AppendFrame(l.wbuf, typ, 0, p, payload)
	if err != nil {
		return err
	}
	l.wbuf = b
	return nil
}

// flush writes the buffered frames.
func (l *amqpLink) flush() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if len(l.wbuf) == 0 {
		return nil
	}
	_, err := l.nc.Write(l.wbuf)
	l.wbuf = l.wbuf[:0]
	return err
}

func (l *amqpLink) writeNow(typ uint8, p frames.Performative, payload []byte) error {
	if err := l.append(typ, p, payload); err != nil {
		return err
	}
	return l.flush()
}

func (l *amqpLink) close() {
	_ = l.writeNow(frames.TypeAMQP, &frames.Close{}, nil)
	_ = l.nc.Close()
}

// dataMessage is the encoding of a message with one data section.
func dataMessage(dst, body []byte) []byte {
	return encoding.AppendBinary(encoding.AppendDescriptor(dst, encoding.DescData), body)
}

// ---- sender

// amqpSender sends transfers on an attached sender link.
type amqpSender struct {
	l          *amqpLink
	presettled bool

	mu   sync.Mutex
	cond *sync.Cond
	// credit and windows (guarded by mu)
	deliveryCount uint32 // transfers sent
	creditLimit   uint32 // the receiver's delivery-count + link-credit
	nextOutgoing  uint32 // session transfer id
	remoteWindow  uint32 // remote next-incoming-id + incoming-window
	unsettled     int
	err           error
	settled       func(n int, accepted bool, state encoding.DeliveryState)
}

func newAMQPSender(l *amqpLink, presettled bool, settled func(n int, accepted bool, state encoding.DeliveryState)) *amqpSender {
	s := &amqpSender{l: l, presettled: presettled, settled: settled, remoteWindow: l.remoteIncoming}
	s.cond = sync.NewCond(&s.mu)
	go s.readLoop()
	return s
}

func (s *amqpSender) readLoop() {
	for {
		perf, _, err := s.l.readFrame()
		s.mu.Lock()
		if err != nil {
			if s.err == nil {
				s.err = err
			}
			s.cond.Broadcast()
			s.mu.Unlock()
			return
		}
		switch p := perf.(type) {
		case *frames.Flow:
			if p.HasHandle && p.HasDeliveryCount && p.HasLinkCredit {
				s.creditLimit = p.DeliveryCount + p.LinkCredit
			} else if p.HasHandle && p.HasLinkCredit {
				s.creditLimit = s.l.initialCount + p.LinkCredit
			}
			if p.HasNextIncomingID {
				s.remoteWindow = p.NextIncomingID + p.IncomingWindow
			} else {
				s.remoteWindow = p.IncomingWindow
			}
		case *frames.Disposition:
			if p.Role == frames.RoleReceiver && p.Settled {
				n := int(p.Last - p.First + 1)
				s.unsettled -= n
				_, accepted := p.State.(*encoding.Accepted)
				if s.settled != nil {
					s.mu.Unlock()
					s.settled(n, accepted, p.State)
					s.mu.Lock()
				}
			}
		case *frames.Detach:
			s.err = fmt.Errorf("amqp: link detached: %v", p.Error)
		case *frames.Close:
			s.err = fmt.Errorf("amqp: connection closed: %v", p.Error)
		}
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// send queues one transfer, waiting (after flushing what is buffered)
// while there is no credit, no session window or more than inflight
// unsettled transfers. more says another send follows at once: the
// buffer is then not flushed yet.
func (s *amqpSender) send(ctx context.Context, body []byte, inflight int, more bool) error {
	s.mu.Lock()
	for s.err == nil && ctx.Err() == nil &&
		(int32(s.creditLimit-s.deliveryCount) <= 0 || int32(s.remoteWindow-s.nextOutgoing) <= 0 || (!s.presettled && s.unsettled >= inflight)) {
		s.mu.Unlock()
		if err := s.l.flush(); err != nil {
			return err
		}
		s.mu.Lock()
		if int32(s.creditLimit-s.deliveryCount) <= 0 || int32(s.remoteWindow-s.nextOutgoing) <= 0 || (!s.presettled && s.unsettled >= inflight) {
			waitCond(ctx, s.cond)
		}
	}
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return err
	}
	id := s.nextOutgoing
	s.nextOutgoing++
	s.deliveryCount++
	if !s.presettled {
		s.unsettled++
	}
	var tag [8]byte
	binary.BigEndian.PutUint64(tag[:], uint64(id))
	tr := &frames.Transfer{Handle: s.l.handle, DeliveryID: id, HasDeliveryID: true, DeliveryTag: tag[:],
		MessageFormat: 0, HasMessageFormat: true, Settled: s.presettled}
	s.mu.Unlock()
	if err := s.l.append(frames.TypeAMQP, tr, dataMessage(nil, body)); err != nil {
		return err
	}
	if !more {
		return s.l.flush()
	}
	s.l.wmu.Lock()
	big := len(s.l.wbuf) >= 64<<10
	s.l.wmu.Unlock()
	if big {
		return s.l.flush()
	}
	return nil
}

// waitUnsettled waits until every transfer is settled or ctx ends.
func (s *amqpSender) waitUnsettled(ctx context.Context) {
	_ = s.l.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.unsettled > 0 && s.err == nil && ctx.Err() == nil {
		waitCond(ctx, s.cond)
	}
}

// waitCond waits on c (whose lock is held) until signalled or, at the
// latest, shortly after ctx ends.
func waitCond(ctx context.Context, c *sync.Cond) {
	stop := context.AfterFunc(ctx, func() {
		c.L.Lock()
		c.Broadcast()
		c.L.Unlock()
	})
	c.Wait()
	stop()
}

// ---- receiver

// receive runs a receiver until ctx ends: credit is kept topped up, each
// message's data section goes to got, and unsettled deliveries are
// accepted in one disposition per read.
func (l *amqpLink) receive(ctx context.Context, credit uint32, got func([]byte)) error {
	stop := context.AfterFunc(ctx, func() { _ = l.nc.SetReadDeadline(time.Now()) })
	defer stop()
	count := l.initialCount // delivery-count: deliveries received
	flow := func() error {
		return l.append(frames.TypeAMQP, &frames.Flow{
			NextIncomingID: l.remoteNextOutgoing, HasNextIncomingID: true, IncomingWindow: math.MaxInt32,
			OutgoingWindow: math.MaxInt32, Handle: l.handle, HasHandle: true,
			DeliveryCount: count, HasDeliveryCount: true, LinkCredit: credit, HasLinkCredit: true,
		}, nil)
	}
	if err := flow(); err != nil {
		return err
	}
	if err := l.flush(); err != nil {
		return err
	}
	var sinceFlow uint32
	var first, last uint32
	pending := false // a disposition range is open
	var msg []byte   // a multi-frame delivery being assembled
	var msgSettled bool
	for {
		if !l.buffered() {
			// Everything read so far is handled: settle and top up now.
			if pending {
				if err := l.append(frames.TypeAMQP, &frames.Disposition{Role: frames.RoleReceiver, First: first, Last: last,
					Settled: true, State: &encoding.Accepted{}}, nil); err != nil {
					return err
				}
				pending = false
			}
			if err := l.flush(); err != nil {
				return err
			}
		}
		perf, payload, err := l.readFrame()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch p := perf.(type) {
		case *frames.Transfer:
			if p.HasDeliveryID && msg == nil {
				last = p.DeliveryID
				if !pending {
					first = p.DeliveryID
				}
				msgSettled = p.Settled
			}
			l.remoteNextOutgoing++
			msg = append(msg, payload...)
			if p.More {
				continue
			}
			if m, err := encoding.DecodeMessage(msg); err == nil && len(m.Data) > 0 {
				got(m.Data[0])
			}
			msg = nil
			if !msgSettled {
				pending = true
			}
			count++
			sinceFlow++
			if sinceFlow >= credit/2 {
				sinceFlow = 0
				if err := flow(); err != nil {
					return err
				}
			}
		case *frames.Detach:
			return fmt.Errorf("amqp: link detached: %v", p.Error)
		case *frames.Close:
			return fmt.Errorf("amqp: connection closed: %v", p.Error)
		}
	}
}
