package amqp

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/amqp/frames"
)

// trickle writes b one byte per interval until stop or a write fails.
func trickle(nc net.Conn, b []byte, every time.Duration, stop <-chan struct{}) {
	for _, c := range b {
		select {
		case <-stop:
			return
		case <-time.After(every):
		}
		if _, err := nc.Write([]byte{c}); err != nil {
			return
		}
	}
}

// TestTrickledFramesClosed: after open, a started frame must be complete
// within the read timeout, and the idle-time-out counts complete frames
// (heartbeats included), so a byte at a time does not keep a connection
// open (issue 11 item 5).
func TestTrickledFramesClosed(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	// An 8-byte frame header claiming 1000 bytes, then its body.
	frame := append([]byte{0, 0, 0x03, 0xe8, 2, 0, 0, 0}, make([]byte, 992)...)
	closedWith := func(t *testing.T, p *rawPeer, want time.Duration, text string) {
		t.Helper()
		start := time.Now()
		c := p.expectClose()
		if c == nil || c.Condition != frames.CondResourceLimitExceeded || !strings.Contains(c.Description, text) {
			t.Fatalf("close %+v, want resource-limit-exceeded %q", c, text)
		}
		if el := time.Since(start); el > want+1500*time.Millisecond {
			t.Fatalf("closed after %v, want about %v", el, want)
		}
	}

	e := startEnv(t, func(c *Config) { c.ReadTimeout = time.Second })
	p := dialRaw(t, e)
	go trickle(p.nc, frame, 100*time.Millisecond, stop)
	closedWith(t, p, time.Second, "read timeout")

	e2 := startEnv(t, func(c *Config) { c.IdleTimeout, c.ReadTimeout = time.Second, time.Minute })
	p = dialRaw(t, e2)
	go trickle(p.nc, frame, 200*time.Millisecond, stop)
	closedWith(t, p, time.Second, "idle-timeout")

	// Heartbeats are complete frames: they keep the connection open.
	p = dialRaw(t, e2)
	for range 8 {
		p.write(frames.AppendHeartbeat(nil))
		time.Sleep(250 * time.Millisecond)
	}
	p.openSession()

	// Before open: a frame over max-frame-size closes at once, a
	// trickled handshake ends at the handshake timeout.
	e3 := startEnv(t, func(c *Config) { c.HandshakeTimeout = time.Second })
	p = dialRawHeader(t, e3)
	p.write(frames.HeaderAMQP.Append(nil))
	p.readHeader()
	p.write([]byte{0, 0x10, 0, 0, 2, 0, 0, 0}) // claims 1 MiB
	p.expectEOF()
	p = dialRawHeader(t, e3)
	go trickle(p.nc, frames.HeaderAMQP.Append(nil), 300*time.Millisecond, stop)
	start := time.Now()
	p.expectEOF()
	if el := time.Since(start); el > 2500*time.Millisecond {
		t.Fatalf("trickled protocol header closed after %v", el)
	}
}

// TestHandshakeLimits: at most MaxHandshakes connections are in their
// handshake (the next waits to be accepted), and bytes buffered before
// open beyond HandshakeMemory close the connection that asks for more
// (issue 11 item 4).
func TestHandshakeLimits(t *testing.T) {
	e := startEnv(t, func(c *Config) {
		c.MaxHandshakes = 4
		c.HandshakeTimeout = 1500 * time.Millisecond
		c.HandshakeMemory = 16 << 10
	})
	for range 4 {
		dialRawHeader(t, e) // silent: holds a slot until the handshake timeout
	}
	time.Sleep(100 * time.Millisecond) // let the server accept them
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := goamqp.Dial(ctx, e.url(), &goamqp.ConnOptions{SASLType: goamqp.SASLTypeAnonymous()})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if el := time.Since(start); el < time.Second {
		t.Fatalf("connected after %v while every handshake slot was taken", el)
	}

	// A SASL frame claiming 40 KiB (under max-frame-size) sent in part:
	// its buffer outgrows the 16 KiB budget and the connection is closed.
	p := dialRawHeader(t, e)
	p.write(frames.HeaderSASL.Append(nil))
	p.readHeader()
	p.write(append([]byte{0, 0, 0xa0, 0, 2, 1, 0, 0}, make([]byte, 24<<10)...))
	p.expectEOF()
	deadline := time.Now().Add(10 * time.Second)
	for e.srv.hsUsed.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("handshake budget still holds %d bytes", e.srv.hsUsed.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
