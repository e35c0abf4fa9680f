package testkit_test

import (
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/testkit"
)

// Large messages (DESIGN.md section 10; docs/router.md "Large messages"):
// 64 MiB by default, stored in chunks, intact end to end.

func largeBody(n int) ([]byte, [32]byte) {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(b)
	return b, sha256.Sum256(b)
}

func ctxN(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func amqpSession(t *testing.T, p *testkit.Platform) *goamqp.Session {
	t.Helper()
	conn, err := goamqp.Dial(ctxN(t, 10*time.Second), "amqp://"+p.AMQPAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypeAnonymous()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s, err := conn.NewSession(ctxN(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// heapPeak samples the heap until stopped and returns its peak above the
// level at start. GOGC is lowered meanwhile so that the figure is close to
// the live heap rather than to garbage not yet collected.
func heapPeak() (stop func() uint64) {
	old := debug.SetGCPercent(5)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		debug.SetGCPercent(old)
		return peak.Load() - min(base, peak.Load())
	}
}

// TestLarge64MiBQueueAMQP: a 64 MiB message (the default maximum) goes
// from a go-amqp sender to a queue and to a receiver on another
// connection with its bytes intact; its chunks are purged once it is
// accepted. The peak heap of the whole process (clients included) above
// the level before sending is logged.
func TestLarge64MiBQueueAMQP(t *testing.T) {
	p := testkit.Start(t)
	if err := p.Router.CreateAddress(ctxN(t, 10*time.Second), "default", &address.Address{Name: "big", Type: address.Queue}); err != nil {
		t.Fatal(err)
	}
	body, sum := largeBody(64 << 20)
	snd, err := amqpSession(t, p).NewSender(ctxN(t, 10*time.Second), "big", nil)
	if err != nil {
		t.Fatal(err)
	}
	if snd.MaxMessageSize() != 64<<20+64<<10 { // the limit plus room for the sections (amqp.messageOverhead)
		t.Fatalf("max-message-size %d, want 64 MiB + 64 KiB", snd.MaxMessageSize())
	}
	rcv, err := amqpSession(t, p).NewReceiver(ctxN(t, 10*time.Second), "big", &goamqp.ReceiverOptions{Credit: 1, MaxMessageSize: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	stop := heapPeak()
	start := time.Now()
	// The AMQP body is a little more than 64 MiB with its section
	// header; the data itself is what the limit is about.
	msg := goamqp.NewMessage(body[:64<<20-64])
	if err := snd.Send(ctxN(t, 60*time.Second), msg, nil); err != nil {
		t.Fatalf("send: %v", err)
	}
	sent := time.Since(start)
	m, err := rcv.Receive(ctxN(t, 60*time.Second), nil)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	if err := rcv.AcceptMessage(ctxN(t, 10*time.Second), m); err != nil {
		t.Fatal(err)
	}
	peak := stop()
	t.Logf("64 MiB via queue: sent (stored) in %v, received after %v; peak heap above start %d MiB (process: server and both clients)",
		sent, time.Since(start), peak>>20)
	if got := sha256.Sum256(m.GetData()); got != sha256.Sum256(body[:64<<20-64]) || len(m.GetData()) != 64<<20-64 {
		t.Fatalf("body of %d bytes differs", len(m.GetData()))
	}
	_ = sum
	testkit.Eventually(t, 10*time.Second, func() bool {
		n, _, err := p.Router.LargeChunks(context.Background(), "default")
		return err == nil && n == 0
	})
}

type pahoClient struct {
	*paho.Client
	msgs chan *paho.Publish
}

func pahoDial(t *testing.T, p *testkit.Platform, id string, clean bool, expiry uint32) *pahoClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", p.MQTTAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &pahoClient{msgs: make(chan *paho.Publish, 4)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     nc,
		// paho waits 10 s for a PUBACK by default; a 64 MiB publish is
		// acknowledged once its live subscriber took it (back-pressure),
		// which under -race can take longer.
		PacketTimeout: time.Minute,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
	})
	cp := &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 60}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	ack, err := c.Connect(ctxN(t, 10*time.Second), cp)
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("mqtt connect: %v %+v", err, ack)
	}
	if ack.Properties == nil || ack.Properties.MaximumPacketSize == nil || *ack.Properties.MaximumPacketSize < 64<<20 {
		t.Fatalf("CONNACK maximum packet size %+v", ack.Properties)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func (c *pahoClient) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(60 * time.Second):
		t.Fatal("no MQTT message within 60s")
		return nil
	}
}

// TestLarge64MiBMQTT: with paho.golang, a 64 MiB QoS 1 message reaches
// a queue's subscriber, a persistent session's subscriber through the
// topic space (stored: in chunks) and a clean session's (live), intact.
func TestLarge64MiBMQTT(t *testing.T) {
	p := testkit.Start(t)
	if err := p.Router.CreateAddress(ctxN(t, 10*time.Second), "default", &address.Address{Name: "bigq", Type: address.Queue}); err != nil {
		t.Fatal(err)
	}
	body, sum := largeBody(64 << 20)
	qsub := pahoDial(t, p, "qsub", true, 0)
	durable := pahoDial(t, p, "durable", false, 3600)
	live := pahoDial(t, p, "live", true, 0)
	for c, f := range map[*pahoClient]string{qsub: "bigq", durable: "tele/#", live: "tele/+"} {
		if _, err := c.Subscribe(ctxN(t, 10*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	pub := pahoDial(t, p, "pub", true, 0)
	for _, topic := range []string{"bigq", "tele/x"} {
		r, err := pub.Publish(ctxN(t, 60*time.Second), &paho.Publish{Topic: topic, QoS: 1, Payload: body})
		if err != nil || r.ReasonCode != 0 {
			t.Fatalf("publish %s: %v %+v", topic, err, r)
		}
	}
	for name, c := range map[string]*pahoClient{"queue": qsub, "durable topic space": durable, "live topic space": live} {
		m := c.next(t)
		if sha256.Sum256(m.Payload) != sum {
			t.Fatalf("%s: body of %d bytes differs", name, len(m.Payload))
		}
	}
}

// TestLargeSurvivesRestart: a chunked message published to a queue, the
// node restarted, then consumed: intact.
func TestLargeSurvivesRestart(t *testing.T) {
	p := testkit.Start(t)
	if err := p.Router.CreateAddress(ctxN(t, 10*time.Second), "default", &address.Address{Name: "big", Type: address.Queue}); err != nil {
		t.Fatal(err)
	}
	body, sum := largeBody(9 << 20)
	snd, err := amqpSession(t, p).NewSender(ctxN(t, 10*time.Second), "big", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctxN(t, 30*time.Second), goamqp.NewMessage(body), nil); err != nil {
		t.Fatal(err)
	}
	if n, _, err := p.Router.LargeChunks(ctxN(t, 10*time.Second), "default"); err != nil || n < 9 {
		t.Fatalf("chunks before restart: %d, %v", n, err)
	}
	p.Restart(t)
	rcv, err := amqpSession(t, p).NewReceiver(ctxN(t, 10*time.Second), "big", &goamqp.ReceiverOptions{Credit: 1, MaxMessageSize: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rcv.Receive(ctxN(t, 30*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(m.GetData()) != sum {
		t.Fatalf("body of %d bytes differs after restart", len(m.GetData()))
	}
	if err := rcv.AcceptMessage(ctxN(t, 10*time.Second), m); err != nil {
		t.Fatal(err)
	}
}
