package amqp

import (
	"errors"
	"io"
	"math"
	"net"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
)

// rawPeer is a scripted AMQP client speaking raw frames, for protocol
// violations no real client commits (STYLE habit 13).
type rawPeer struct {
	t   testing.TB
	nc  net.Conn
	buf []byte
}

// dialRaw connects without SASL (anonymous from loopback), opens the
// connection and returns the peer.
func dialRaw(t testing.TB, e *testEnv) *rawPeer {
	t.Helper()
	p := dialRawHeader(t, e)
	p.write(frames.HeaderAMQP.Append(nil))
	if h := p.readHeader(); h != frames.HeaderAMQP {
		t.Fatalf("header %+v", h)
	}
	p.send(0, &frames.Open{ContainerID: "raw", MaxFrameSize: 65536, ChannelMax: 10})
	if _, ok := p.next().(*frames.Open); !ok {
		t.Fatal("no open")
	}
	return p
}

func dialRawHeader(t testing.TB, e *testEnv) *rawPeer {
	t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawPeer{t: t, nc: nc}
}

func (p *rawPeer) write(b []byte) {
	p.t.Helper()
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

func (p *rawPeer) fill(n int) error {
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(p.buf) < n {
		var tmp [65536]byte
		k, err := p.nc.Read(tmp[:])
		p.buf = append(p.buf, tmp[:k]...)
		if err != nil && len(p.buf) < n {
			return err
		}
	}
	return nil
}

func (p *rawPeer) readHeader() frames.ProtoHeader {
	p.t.Helper()
	if err := p.fill(8); err != nil {
		p.t.Fatalf("read header: %v", err)
	}
	h, _ := frames.ParseProtoHeader(p.buf)
	p.buf = p.buf[8:]
	return h
}

func (p *rawPeer) send(ch uint16, perf frames.Performative) { p.sendPayload(ch, perf, nil) }

func (p *rawPeer) sendPayload(ch uint16, perf frames.Performative, payload []byte) {
	p.t.Helper()
	b, err := frames.AppendFrame(nil, frames.TypeAMQP, ch, perf, payload)
	if err != nil {
		p.t.Fatal(err)
	}
	p.write(b)
}

// nextFrame returns the next non-empty frame's performative and payload,
// or an error (io.EOF when the server closed the socket).
func (p *rawPeer) nextFrame() (frames.Performative, []byte, error) {
	for {
		if err := p.fill(8); err != nil {
			return nil, nil, err
		}
		f, n, err := frames.ReadFrame(p.buf, math.MaxUint32)
		if errors.Is(err, frames.ErrNeedMore) {
			if err := p.fill(n); err != nil {
				return nil, nil, err
			}
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		body := append([]byte(nil), f.Body...)
		p.buf = p.buf[n:]
		if len(body) == 0 {
			continue
		}
		perf, payload, err := frames.DecodePerformative(body)
		return perf, payload, err
	}
}

func (p *rawPeer) next() frames.Performative {
	p.t.Helper()
	perf, _, err := p.nextFrame()
	if err != nil {
		p.t.Fatalf("read frame: %v", err)
	}
	return perf
}

// expect reads frames until one of type T arrives (skipping flows and
// others) and returns it.
func expect[T frames.Performative](p *rawPeer) T {
	p.t.Helper()
	for {
		perf := p.next()
		if v, ok := perf.(T); ok {
			return v
		}
	}
}

func (p *rawPeer) openSession() {
	p.t.Helper()
	p.send(0, &frames.Begin{NextOutgoingID: 0, IncomingWindow: 1000, OutgoingWindow: 1000, HandleMax: 100})
	expect[*frames.Begin](p)
}

func (p *rawPeer) attachSender(h uint32, addr string) {
	p.t.Helper()
	p.send(0, &frames.Attach{Name: "s" + addr, Handle: h, Role: frames.RoleSender, SndSettleMode: frames.SenderSettleMixed,
		Source: &encoding.Source{}, Target: &encoding.Target{Address: addr}, HasInitialDeliveryCount: true})
	expect[*frames.Attach](p)
}

func (p *rawPeer) attachReceiver(h uint32, addr string) {
	p.t.Helper()
	p.send(0, &frames.Attach{Name: "r" + addr, Handle: h, Role: frames.RoleReceiver, SndSettleMode: frames.SenderSettleMixed,
		Source: &encoding.Source{Address: addr}, Target: &encoding.Target{}})
	expect[*frames.Attach](p)
}

func (p *rawPeer) expectFlow() *frames.Flow { p.t.Helper(); return expect[*frames.Flow](p) }

func (p *rawPeer) expectDisposition() *frames.Disposition {
	p.t.Helper()
	return expect[*frames.Disposition](p)
}

func (p *rawPeer) transfer(h, id uint32, settled bool, payload []byte) {
	p.t.Helper()
	p.sendPayload(0, &frames.Transfer{Handle: h, DeliveryID: id, HasDeliveryID: true, DeliveryTag: []byte{byte(id)},
		MessageFormat: 0, HasMessageFormat: true, Settled: settled}, payload)
}

func (p *rawPeer) flow(h, deliveryCount, credit uint32) {
	p.t.Helper()
	p.send(0, &frames.Flow{NextIncomingID: 0, HasNextIncomingID: true, IncomingWindow: 1000, NextOutgoingID: 0, OutgoingWindow: 1000,
		Handle: h, HasHandle: true, DeliveryCount: deliveryCount, HasDeliveryCount: true, LinkCredit: credit, HasLinkCredit: true})
}

func (p *rawPeer) expectTransfer() []byte {
	p.t.Helper()
	for {
		perf, payload, err := p.nextFrame()
		if err != nil {
			p.t.Fatalf("read: %v", err)
		}
		if _, ok := perf.(*frames.Transfer); ok {
			return payload
		}
	}
}

// expectClose reads until the server's close and returns its error.
func (p *rawPeer) expectClose() *encoding.Error {
	p.t.Helper()
	for {
		perf, _, err := p.nextFrame()
		if err != nil {
			p.t.Fatalf("no close (%v)", err)
		}
		if c, ok := perf.(*frames.Close); ok {
			return c.Error
		}
	}
}

func (p *rawPeer) expectEOF() {
	p.t.Helper()
	for {
		_, _, err := p.nextFrame()
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && !ne.Timeout() {
				return
			}
			p.t.Fatalf("connection not closed: %v", err)
		}
	}
}

func minimalMessage(body string) []byte {
	return encoding.AppendBinary(encoding.AppendDescriptor(nil, encoding.DescData), []byte(body))
}

func isAccepted(st encoding.DeliveryState) bool {
	_, ok := st.(*encoding.Accepted)
	return ok
}

type framesDetach = frames.Detach
