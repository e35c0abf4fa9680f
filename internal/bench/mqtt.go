// Package bench is throng's load and comparison tool (`throng bench`):
// MQTT publish/subscribe shapes, AMQP 1.0 senders and receivers, and idle
// connection storms, against throng or any other broker. Every message
// carries its publisher, sequence number and intended send time, so runs
// report lost and duplicated messages and latency percentiles measured
// from when each message was due (no coordinated omission at a fixed
// rate). See docs/benchmarks.md.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MQTTConfig configures an MQTT run. Zero values take the documented
// defaults (see Defaults).
type MQTTConfig struct {
	Server      string // host:port
	SubServer   string // the subscribers' host:port if not Server (the bridge shape: a remote broker)
	User        string
	Password    string
	Shape       string // "fan-in" (N→1), "fan-out" (1→N) or "" (Publishers/Subscribers as given)
	Publishers  int
	Subscribers int
	QoS         int
	Version     int // 3 (3.1.1) or 5
	Size        int // payload bytes (at least 22)
	Rate        float64
	Duration    time.Duration // publishing time when Count is 0
	Count       int64         // total messages to publish (0: use Duration)
	Topic       string
	Shared      string        // shared subscription group ($share/<group>/<topic>)
	Inflight    int           // unacknowledged QoS 1/2 publishes per publisher
	Drain       time.Duration // how long to wait for stragglers after publishing
	Label       string
	Progress    io.Writer // one line per second (nil: quiet)
	// Client is "raw" (default: the bench's pipelining client,
	// mqttconn.go) or "paho" (github.com/eclipse/paho.golang, MQTT 5: a
	// third-party client for cross-checks, mqttpaho.go).
	Client string
}

func (c *MQTTConfig) defaults() error {
	switch c.Shape {
	case "fan-in":
		if c.Publishers == 0 {
			c.Publishers = 4
		}
		if c.Subscribers == 0 {
			c.Subscribers = 1
		}
	case "fan-out":
		if c.Publishers == 0 {
			c.Publishers = 1
		}
		if c.Subscribers == 0 {
			c.Subscribers = 100
		}
	case "":
		if c.Publishers == 0 {
			c.Publishers = 1
		}
		if c.Subscribers == 0 {
			c.Subscribers = 1
		}
	default:
		return fmt.Errorf("bench: unknown shape %q (want fan-in or fan-out)", c.Shape)
	}
	if c.Server == "" {
		c.Server = "127.0.0.1:1883"
	}
	switch c.Client {
	case "":
		c.Client = "raw"
	case "raw", "paho":
	default:
		return fmt.Errorf("bench: --client must be raw or paho, not %q", c.Client)
	}
	if c.Version == 0 {
		c.Version = 5
	}
	if c.Version != 3 && c.Version != 5 {
		return fmt.Errorf("bench: --version must be 3 or 5, not %d", c.Version)
	}
	if c.QoS < 0 || c.QoS > 2 {
		return fmt.Errorf("bench: --qos must be 0, 1 or 2, not %d", c.QoS)
	}
	if c.Size == 0 {
		c.Size = 64
	}
	if c.Size < payloadHeader {
		return fmt.Errorf("bench: --size must be at least %d bytes", payloadHeader)
	}
	if c.Publishers < 0 || c.Subscribers < 0 {
		return errors.New("bench: negative publishers or subscribers")
	}
	if c.Duration == 0 && c.Count == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Topic == "" {
		c.Topic = "bench/" + randomID()
	}
	if c.Inflight == 0 {
		c.Inflight = 64
	}
	if c.Drain == 0 {
		c.Drain = 10 * time.Second
	}
	return nil
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RunMQTT runs publishers and subscribers on one topic and reports.
func RunMQTT(ctx context.Context, cfg MQTTConfig) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	res := &Result{
		Mode: "mqtt", Target: cfg.Server, Label: cfg.Label, Started: time.Now().UTC().Format(time.RFC3339),
		Publishers: cfg.Publishers, Subscribers: cfg.Subscribers, QoS: cfg.QoS, Version: cfg.Version,
		Size: cfg.Size, Rate: cfg.Rate, Topic: cfg.Topic, Shared: cfg.Shared, Client: cfg.Client,
	}
	if cfg.Client == "paho" {
		return runMQTTPaho(ctx, cfg, res)
	}
	var errs errorList
	run := randomID()
	base := time.Now()
	opts := func(role string, i int) mqttOptions {
		addr := cfg.Server
		if role == "s" && cfg.SubServer != "" {
			addr = cfg.SubServer
		}
		return mqttOptions{Addr: addr, ClientID: fmt.Sprintf("tb-%s-%s%d", run, role, i), User: cfg.User,
			Password: cfg.Password, Version: cfg.Version, KeepAlive: 60 * time.Second}
	}
	var conns []*mqttConn
	var readers sync.WaitGroup
	defer func() {
		for _, c := range conns {
			c.disconnect()
		}
		readers.Wait()
	}()

	// Subscribers first, so that no message is published before they
	// are there.
	filter := cfg.Topic
	if cfg.Shared != "" {
		filter = "$share/" + cfg.Shared + "/" + cfg.Topic
	}
	rcv := make([]*Receiver, cfg.Subscribers)
	for i := range rcv {
		c, err := dialMQTT(ctx, opts("s", i))
		if err != nil {
			return nil, fmt.Errorf("bench: subscriber %d: %w", i, err)
		}
		conns = append(conns, c)
		r := NewReceiver(base)
		rcv[i] = r
		c.onPublish = r.Record
		c.subacks = make(chan []byte, 1)
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := c.readLoop(); err != nil && ctx.Err() == nil && !isClosed(err) {
				errs.add(fmt.Errorf("subscriber: %w", err))
			}
		}()
		if err := c.subscribe(ctx, filter, byte(cfg.QoS)); err != nil {
			return nil, fmt.Errorf("bench: subscriber %d: %w", i, err)
		}
	}

	type pubState struct {
		c    *mqttConn
		free chan uint16
		dead chan struct{}
		sent atomic.Uint64
	}
	pubs := make([]*pubState, cfg.Publishers)
	for i := range pubs {
		c, err := dialMQTT(ctx, opts("p", i))
		if err != nil {
			return nil, fmt.Errorf("bench: publisher %d: %w", i, err)
		}
		conns = append(conns, c)
		p := &pubState{c: c, dead: make(chan struct{})}
		if cfg.QoS > 0 {
			w := min(cfg.Inflight, c.recvMax, 65535)
			p.free = make(chan uint16, w)
			for id := 1; id <= w; id++ {
				p.free <- uint16(id)
			}
			c.onAck = func(pid uint16) {
				select {
				case p.free <- pid:
				default: // an ack we did not ask for
				}
			}
		}
		pubs[i] = p
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer close(p.dead)
			if err := c.readLoop(); err != nil && ctx.Err() == nil && !isClosed(err) {
				errs.add(fmt.Errorf("publisher: %w", err))
			}
		}()
	}

	pubCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Count == 0 {
		pubCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	start := time.Now().Add(5 * time.Millisecond)
	var pubWG sync.WaitGroup
	for i, p := range pubs {
		n := shareOf(cfg.Count, cfg.Publishers, i)
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			errs.add(publishLoop(pubCtx, p.c, uint32(i), n, cfg, NewSchedule(start, cfg.Rate/float64(cfg.Publishers)), base, p.free, p.dead, &p.sent))
		}()
	}
	sentNow := func() (n uint64) {
		for _, p := range pubs {
			n += p.sent.Load()
		}
		return n
	}
	recvNow := receivedBy(rcv)
	defer sendProgress(cfg.Progress, sentNow, recvNow)()

	pubWG.Wait()
	pubEnd := time.Now()
	// Wait for outstanding acknowledgements, then for deliveries: until
	// everything expected arrived or nothing arrived for a second.
	deadline := time.Now().Add(cfg.Drain)
	for _, p := range pubs {
		for cfg.QoS > 0 && len(p.free) < cap(p.free) && time.Now().Before(deadline) {
			select {
			case <-p.dead:
			case <-time.After(5 * time.Millisecond):
				continue
			}
			break
		}
	}
	sent := map[uint32]uint64{}
	for i, p := range pubs {
		sent[uint32(i)] = p.sent.Load()
	}
	res.finishMQTT(ctx, cfg, sent, rcv, base, start, pubEnd, deadline)
	res.Errors = errs.list()
	return res, nil
}

// finishMQTT waits (until deadline) for the deliveries of what the
// publishers sent (sent: publisher id → messages, sequence numbers
// 0..n-1), counts them and fills the result: delivered msg/s from the
// first intended send (start) to the last delivery.
func (res *Result) finishMQTT(ctx context.Context, cfg MQTTConfig, sent map[uint32]uint64, rcv []*Receiver, base, start, pubEnd, deadline time.Time) {
	var expected uint64
	for _, n := range sent {
		expected += n
	}
	if cfg.Shared == "" {
		expected *= uint64(cfg.Subscribers)
	}
	awaitDeliveries(ctx, deadline, expected, receivedBy(rcv))
	t := Count(sent, rcv, cfg.Shared != "")
	var last int64
	for _, r := range rcv {
		last = max(last, r.last.Load())
	}
	seconds := pubEnd.Sub(start).Seconds()
	if last > 0 {
		seconds = max(seconds, (time.Duration(last) - start.Sub(base)).Seconds())
	}
	res.fill(t, seconds, pubEnd.Sub(start).Seconds())
}

// publishLoop publishes until ctx ends or n messages were sent (n < 0:
// no limit).
func publishLoop(ctx context.Context, c *mqttConn, id uint32, n int64, cfg MQTTConfig, s *Schedule, base time.Time,
	free chan uint16, dead <-chan struct{}, sent *atomic.Uint64) error {
	payload := make([]byte, cfg.Size)
	s.OnIdle = func() { _ = c.flush() }
	qos := byte(cfg.QoS)
	defer c.flush()
	for seq := int64(0); n < 0 || seq < n; seq++ {
		intended, err := s.Next(ctx)
		if err != nil {
			return nil
		}
		var pid uint16
		if qos > 0 {
			select {
			case pid = <-free:
			default:
				if err := c.flush(); err != nil {
					return err
				}
				select {
				case pid = <-free:
				case <-ctx.Done():
					return nil
				case <-dead:
					return errors.New("publisher connection lost")
				}
			}
		}
		putHeader(payload, id, uint64(seq), int64(intended.Sub(base)))
		if err := c.publish(cfg.Topic, qos, pid, payload); err != nil {
			return err
		}
		sent.Add(1)
	}
	return nil
}

// shareOf is how many of count messages sender i of senders sends (the
// first count%senders send one more); -1 (no limit) when count is 0.
func shareOf(count int64, senders, i int) int64 {
	if count <= 0 {
		return -1
	}
	n := count / int64(senders)
	if int64(i) < count%int64(senders) {
		n++
	}
	return n
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}
