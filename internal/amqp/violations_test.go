package amqp

import (
	"bytes"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
)

// Protocol violations from a scripted peer: each ends only its own scope
// (link, session or connection) with the condition the spec names, and
// other connections carry on.
func TestProtocolViolations(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "svc", Type: address.Anycast})
	e.addrDef(t, "default", &address.Address{Name: "q", Type: address.Queue})
	good := e.session(t, nil)
	goodSnd := sender(t, good, "q", nil)

	t.Run("malformed performative", func(t *testing.T) {
		p := dialRaw(t, e)
		// A begin whose list claims more bytes than it has.
		p.write([]byte{0, 0, 0, 14, 2, 0, 0, 0, 0x00, 0x53, 0x11, 0xc0, 9, 3})
		if c := p.expectClose(); c == nil || c.Condition != frames.CondDecodeError {
			t.Fatalf("close %+v", c)
		}
	})
	t.Run("frame over max-frame-size", func(t *testing.T) {
		p := dialRaw(t, e)
		hdr := []byte{0, 2, 0, 0, 2, 0, 0, 0} // 128 KiB frame, announced max is 64 KiB
		p.write(hdr)
		if c := p.expectClose(); c == nil || c.Condition != frames.CondFrameSizeTooSmall {
			t.Fatalf("close %+v", c)
		}
	})
	t.Run("frame on a channel without session", func(t *testing.T) {
		p := dialRaw(t, e)
		p.send(3, &frames.End{})
		if c := p.expectClose(); c == nil || c.Condition != frames.CondNotFound {
			t.Fatalf("close %+v", c)
		}
	})
	t.Run("unattached handle", func(t *testing.T) {
		p := dialRaw(t, e)
		p.openSession()
		p.transfer(7, 0, true, minimalMessage("x"))
		end := expect[*frames.End](p)
		if end.Error == nil || end.Error.Condition != frames.CondUnattachedHandle {
			t.Fatalf("end %+v", end.Error)
		}
	})
	t.Run("handle in use", func(t *testing.T) {
		p := dialRaw(t, e)
		p.openSession()
		p.attachSender(0, "q")
		p.send(0, &frames.Attach{Name: "dup", Handle: 0, Role: frames.RoleSender, Target: &encoding.Target{Address: "q"}})
		end := expect[*frames.End](p)
		if end.Error == nil || end.Error.Condition != frames.CondHandleInUse {
			t.Fatalf("end %+v", end.Error)
		}
	})
	t.Run("transfer without credit", func(t *testing.T) {
		p := dialRaw(t, e)
		p.openSession()
		p.attachSender(0, "svc") // anycast without consumer: no credit
		p.transfer(0, 0, false, minimalMessage("x"))
		d := expect[*frames.Detach](p)
		if d.Error == nil || d.Error.Condition != frames.CondTransferLimitExceeded || !d.Closed {
			t.Fatalf("detach %+v", d)
		}
		// The session lives on: a new link works.
		p.send(0, &frames.Detach{Handle: 0, Closed: true})
		p.attachSender(1, "q")
		if f := p.expectFlow(); f.LinkCredit == 0 {
			t.Fatalf("no credit on a queue link: %+v", f)
		}
	})
	t.Run("bad protocol header", func(t *testing.T) {
		p := dialRawHeader(t, e)
		p.write([]byte("AMQP\x00\x02\x00\x00"))
		if h := p.readHeader(); h != frames.HeaderAMQP {
			t.Fatalf("header %+v", h)
		}
		p.expectEOF()
	})
	t.Run("aborted transfer", func(t *testing.T) {
		p := dialRaw(t, e)
		p.openSession()
		p.attachSender(0, "q")
		p.expectFlow()
		p.sendPayload(0, &frames.Transfer{Handle: 0, DeliveryID: 0, HasDeliveryID: true, DeliveryTag: []byte{1}, More: true}, []byte{0x00, 0x53})
		p.sendPayload(0, &frames.Transfer{Handle: 0, Aborted: true}, nil)
		// The next delivery goes through normally.
		p.sendPayload(0, &frames.Transfer{Handle: 0, DeliveryID: 1, HasDeliveryID: true, DeliveryTag: []byte{2}, More: true}, minimalMessage("ab")[:4])
		p.sendPayload(0, &frames.Transfer{Handle: 0}, minimalMessage("ab")[4:])
		d := p.expectDisposition()
		if d.First != 1 || !isAccepted(d.State) {
			t.Fatalf("disposition %+v", d)
		}
	})
	// Other connections were not affected.
	send(t, goodSnd, dataMsg("still here"))
}

func TestIdleTimeoutAndHeartbeats(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	// The server sends heartbeats at half our idle-time-out.
	p := dialRawHeader(t, e)
	p.write(frames.HeaderAMQP.Append(nil))
	p.readHeader()
	p.send(0, &frames.Open{ContainerID: "hb", MaxFrameSize: 65536, ChannelMax: 1, IdleTimeOut: 200})
	o := expect[*frames.Open](p)
	if o.IdleTimeOut != 300 {
		t.Fatalf("server idle-time-out %d", o.IdleTimeOut)
	}
	hb := frames.AppendHeartbeat(nil)
	deadline := time.Now().Add(5 * time.Second)
	for !bytes.Contains(p.buf, hb) {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat")
		}
		_ = p.fill(len(p.buf) + 1)
	}
	// A peer that stays silent past our idle-time-out is closed.
	if c := p.expectClose(); c == nil || c.Condition != frames.CondResourceLimitExceeded {
		t.Fatalf("close %+v", c)
	}
}

func TestSessionWindowViolation(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.SessionWindow = 4 })
	e.addrDef(t, "default", &address.Address{Name: "q", Type: address.Queue})
	p := dialRaw(t, e)
	p.openSession()
	p.attachSender(0, "q")
	p.expectFlow()
	// Six transfers in one write against a window of four.
	var b []byte
	for i := range uint32(6) {
		b, _ = frames.AppendFrame(b, frames.TypeAMQP, 0, &frames.Transfer{Handle: 0, DeliveryID: i, HasDeliveryID: true,
			DeliveryTag: []byte{byte(i)}, Settled: true}, minimalMessage("x"))
	}
	p.write(b)
	end := expect[*frames.End](p)
	if end.Error == nil || end.Error.Condition != frames.CondWindowViolation {
		t.Fatalf("end %+v", end.Error)
	}
}
