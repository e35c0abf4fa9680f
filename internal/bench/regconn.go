package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// The registry mode's MQTT side: connect passes (rate and latency of
// device connects, cold and warm) and reconnect storms with a probe.

func (r *regRun) user(i int) (id, user, password string) {
	id = r.cfg.deviceID(i)
	return id, id + "@" + r.cfg.Tenant, registryPassword(i)
}

// authCounters reads the node's bcrypt and cache-hit counters.
func (r *regRun) authCounters(ctx context.Context) (bcrypts, hits float64) {
	m := r.api.metrics(ctx, mBcrypts, mCacheHits)
	return m[mBcrypts], m[mCacheHits]
}

// connectPasses measures device connects of ConnectClients devices spread
// over the registered ones: a cold pass (their first connect since the
// node started: one bcrypt comparison each), then WarmPasses warm passes
// (the verification cache answers; short, so repeated for a median). With
// Client "both", paho.golang repeats a warm pass on the same devices as a
// cross-check of the raw client.
func (r *regRun) connectPasses(ctx context.Context, n int) {
	devs := spread(n, r.cfg.ConnectClients, 0)
	if len(devs) == 0 {
		return
	}
	first := "raw"
	if r.cfg.Client == "paho" {
		first = "paho"
	}
	passes := []struct{ name, client string }{{"cold", first}}
	for k := 1; k <= r.cfg.WarmPasses; k++ {
		name := "warm"
		if k > 1 {
			name = fmt.Sprintf("warm-%d", k)
		}
		passes = append(passes, struct{ name, client string }{name, first})
	}
	if r.cfg.Client == "both" {
		passes = append(passes, struct{ name, client string }{"paho-warm", "paho"})
	}
	for _, p := range passes {
		cp := r.connectPass(ctx, p.name, p.client, devs)
		r.reg.Connect = append(r.reg.Connect, cp)
		r.logf("connect %s (%s): %d ok %d failed in %.2fs: %.0f/s, p50 %s p99 %s, %0.f bcrypt, %0.f cache hits",
			cp.Name, cp.Client, cp.OK, cp.Failed, cp.Seconds, cp.Rate, fmtUS(cp.Latency.P50), fmtUS(cp.Latency.P99), cp.Bcrypts, cp.CacheHits)
		if ctx.Err() != nil {
			return
		}
	}
}

func (r *regRun) connectPass(ctx context.Context, name, client string, devs []int) ConnectPass {
	par := r.cfg.ConnectParallel
	if name == "cold" {
		// Cold connects queue for the node's bcrypt workers (GOMAXPROCS
		// of them): more in flight only wait longer, up to the node's
		// handshake timeout (then 0x88), without adding throughput.
		par = r.cfg.ColdParallel
	}
	cp := ConnectPass{Name: name, Client: client, Clients: len(devs), Parallel: par}
	b0, h0 := r.authCounters(ctx)
	lat := newLockedHist()
	var errs errorList
	var ok, failed, next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				k := int(next.Add(1) - 1)
				if k >= len(devs) {
					return
				}
				id, user, pw := r.user(devs[k])
				t := time.Now()
				var err error
				if client == "paho" {
					err = pahoConnect(ctx, r.cfg.Server, id, user, pw)
				} else {
					var c *mqttConn
					c, err = dialMQTT(ctx, mqttOptions{Addr: r.cfg.Server, ClientID: id, User: user, Password: pw,
						Version: r.cfg.Version, KeepAlive: 30 * time.Second, Timeout: 30 * time.Second})
					if err == nil {
						lat.record(time.Since(t))
						c.disconnect()
					}
				}
				if err != nil {
					failed.Add(1)
					errs.add(connectError(err))
					continue
				}
				if client == "paho" {
					lat.record(time.Since(t))
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b1, h1 := r.authCounters(ctx)
	cp.OK, cp.Failed, cp.Seconds = int(ok.Load()), int(failed.Load()), el.Seconds()
	if el > 0 {
		cp.Rate = float64(cp.OK) / el.Seconds()
	}
	cp.Latency, cp.Bcrypts, cp.CacheHits = lat.summary(), b1-b0, h1-h0
	cp.Load, cp.Errors = loadAverage(), errs.list()
	return cp
}

// pahoConnect connects with paho.golang (MQTT 5), checks the CONNACK and
// disconnects: a third-party client's view of the connect latency
// (latency includes paho's DISCONNECT here, unlike the raw client's).
func pahoConnect(ctx context.Context, addr, id, user, pw string) error {
	d := net.Dialer{Timeout: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: nc})
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ack, err := c.Connect(cctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte(pw), PasswordFlag: true})
	if ack != nil && ack.ReasonCode != 0 {
		nc.Close()
		return reasonError{"CONNECT", ack.ReasonCode}
	}
	if err != nil {
		nc.Close()
		return err
	}
	return c.Disconnect(&paho.Disconnect{})
}

// connectError names a failed connect by its kind, so that errorList
// counts them (a refusal's reason code, a timeout, a reset).
func connectError(err error) error {
	var re reasonError
	var ne net.Error
	switch {
	case errors.As(err, &re):
		return fmt.Errorf("CONNACK 0x%02x", re.code)
	case errors.Is(err, syscall.ECONNRESET):
		return errors.New("connection reset")
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("connection refused")
	case errors.As(err, &ne) && ne.Timeout():
		return errors.New("timeout")
	case isClosed(err) || strings.Contains(err.Error(), "EOF"):
		return errors.New("closed by the server before CONNACK")
	}
	return err
}

// storms runs the reconnect storm of Storm devices: cold (every device's
// first connect since the node started, as after a node restart: one
// bcrypt comparison each), then, with all of them connected, every
// connection dropped at once (RST, as a network outage ends) and all
// reconnecting at once (warm: the verification cache answers). A probe
// publisher and subscriber, connected throughout, measure what the node's
// other clients see.
func (r *regRun) storms(ctx context.Context, n int) error {
	devs := r.stormDevices(n)
	if len(devs) == 0 {
		return nil
	}
	raiseFileLimit()
	var sources []net.IP
	if host, _, err := net.SplitHostPort(r.cfg.Server); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() && ip.To4() != nil {
			for k := 1; k <= min(254, len(devs)/5000+1); k++ {
				sources = append(sources, net.IPv4(127, 0, 0, byte(k)))
			}
		}
	}
	pr, err := startProbe(ctx, r.cfg)
	if err != nil {
		return fmt.Errorf("bench: storm probe: %w", err)
	}
	defer pr.close()
	sleepCtx(ctx, r.cfg.pause)
	base := pr.window()
	r.logf("probe before the storm: %d sent, %d received, p50 %s p99 %s max %s", base.Sent, base.Received,
		fmtUS(base.Latency.P50), fmtUS(base.Latency.P99), fmtUS(base.Latency.Max))
	r.reg.Storms = append(r.reg.Storms, StormPass{Name: "baseline", Probe: &base, Load: loadAverage()})

	conns := make([]*mqttConn, len(devs))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
	}()
	for _, name := range []string{"cold", "warm"} {
		if name == "warm" {
			sleepCtx(ctx, r.cfg.pause)
			pr.window() // the hold between the storms is not measured
			for i, c := range conns {
				if c != nil {
					if tc, ok := c.conn.(*net.TCPConn); ok {
						_ = tc.SetLinger(0)
					}
					c.conn.Close()
					conns[i] = nil
				}
			}
		}
		sp := r.storm(ctx, name, devs, conns, sources)
		p := pr.window()
		sp.Probe = &p
		r.reg.Storms = append(r.reg.Storms, sp)
		r.logf("storm %s: %d of %d connected in %.1fs (%.0f/s), %d attempts; attempt p50 %s p99 %s; time to connected p50 %s p99 %s; %0.f bcrypt; probe p50 %s p99 %s max %s (%d/%d)",
			name, sp.Connected, sp.Devices, sp.Seconds, sp.Rate, sp.Attempts, fmtUS(sp.Attempt.P50), fmtUS(sp.Attempt.P99),
			fmtUS(sp.ToConnect.P50), fmtUS(sp.ToConnect.P99), sp.Bcrypts, fmtUS(p.Latency.P50), fmtUS(p.Latency.P99), fmtUS(p.Latency.Max), p.Received, p.Sent)
		if ctx.Err() != nil {
			break
		}
	}
	for i, c := range conns {
		if c != nil {
			c.disconnect()
			conns[i] = nil
		}
	}
	return ctx.Err()
}

// stormDevices picks Storm devices spread over 0..n-1 and, as long as
// there are enough, none of the connect passes' devices: a cold storm
// must meet an empty verification cache.
func (r *regRun) stormDevices(n int) []int {
	k := min(r.cfg.Storm, n)
	used := map[int]bool{}
	if r.cfg.has("connect") {
		for _, i := range spread(n, r.cfg.ConnectClients, 0) {
			used[i] = true
		}
	}
	free := n - len(used)
	var out []int
	if free >= k {
		// The k-th of the unused ones at even steps.
		stride := float64(free) / float64(k)
		next, rank := 0.0, 0
		for i := 0; i < n && len(out) < k; i++ {
			if used[i] {
				continue
			}
			if float64(rank) >= next {
				out = append(out, i)
				next += stride
			}
			rank++
		}
		return out
	}
	return spread(n, k, 0)
}

// storm connects every device of devs at once, each retrying with
// exponential backoff (1 s doubling to 16 s, ±50 % jitter) after a failed
// attempt until StormTimeout; the connections stay open in conns.
func (r *regRun) storm(ctx context.Context, name string, devs []int, conns []*mqttConn, sources []net.IP) StormPass {
	sp := StormPass{Name: name, Devices: len(devs)}
	b0, h0 := r.authCounters(ctx)
	attempt, toConn := newLockedHist(), newLockedHist()
	var errs errorList
	var attempts, connected atomic.Int64
	var lastNS atomic.Int64
	deadline := time.Now().Add(r.cfg.StormTimeout)
	stop := make(chan struct{})
	go progress(r.cfg.Progress, 5*time.Second, stop, func(el time.Duration) string {
		return fmt.Sprintf("%5s  storm %s: connected %d of %d, %d attempts", el, name, connected.Load(), len(devs), attempts.Load())
	})
	start := time.Now()
	var wg sync.WaitGroup
	for j, i := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, user, pw := r.user(i)
			o := mqttOptions{Addr: r.cfg.Server, ClientID: id, User: user, Password: pw, Version: r.cfg.Version, Timeout: 30 * time.Second}
			if len(sources) > 0 {
				o.LocalIP = sources[j%len(sources)]
			}
			for try := 0; ctx.Err() == nil; try++ {
				t := time.Now()
				attempts.Add(1)
				c, err := dialMQTT(ctx, o)
				if err == nil {
					now := time.Now()
					attempt.record(now.Sub(t))
					toConn.record(now.Sub(start))
					conns[j] = c
					connected.Add(1)
					for {
						l := lastNS.Load()
						if int64(now.Sub(start)) <= l || lastNS.CompareAndSwap(l, int64(now.Sub(start))) {
							break
						}
					}
					return
				}
				errs.add(connectError(err))
				wait := time.Second << min(try, 4)
				wait = wait/2 + time.Duration(rand.Int64N(int64(wait)))
				if time.Now().Add(wait).After(deadline) {
					return
				}
				sleepCtx(ctx, wait)
			}
		}()
	}
	wg.Wait()
	close(stop)
	b1, h1 := r.authCounters(ctx)
	sp.Connected, sp.Attempts = int(connected.Load()), int(attempts.Load())
	sp.Seconds = time.Duration(lastNS.Load()).Seconds()
	if sp.Connected < sp.Devices {
		sp.Seconds = time.Since(start).Seconds()
	}
	if sp.Seconds > 0 {
		sp.Rate = float64(sp.Connected) / sp.Seconds
	}
	sp.Attempt, sp.ToConnect = attempt.summary(), toConn.summary()
	sp.Bcrypts, sp.CacheHits = b1-b0, h1-h0
	sp.Load, sp.Errors = loadAverage(), errs.list()
	return sp
}

// probe is a connected user's publisher and subscriber on one topic, QoS
// 1 at a fixed rate, latency measured from each message's intended send
// time (no coordinated omission: a stalled node shows as latency).
type probe struct {
	pub, sub *mqttConn
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	sent     atomic.Uint64

	mu       sync.Mutex
	hist     *Histogram
	received uint64
	sentMark uint64
}

func startProbe(ctx context.Context, cfg RegistryConfig) (*probe, error) {
	topic := "bench/probe-" + randomID()
	o := mqttOptions{Addr: cfg.Server, User: cfg.AdminUser, Password: cfg.AdminPassword, Version: 5, KeepAlive: 60 * time.Second, Timeout: 30 * time.Second}
	o.ClientID = "tb-probe-sub-" + randomID()
	sub, err := dialMQTT(ctx, o)
	if err != nil {
		return nil, err
	}
	o.ClientID = "tb-probe-pub-" + randomID()
	pub, err := dialMQTT(ctx, o)
	if err != nil {
		sub.conn.Close()
		return nil, err
	}
	p := &probe{pub: pub, sub: sub, hist: NewHistogram()}
	base := time.Now()
	sub.onPublish = func(b []byte) {
		_, _, intended, err := parseHeader(b)
		if err != nil {
			return
		}
		lat := int64(time.Since(base)) - intended
		p.mu.Lock()
		p.hist.Record(lat)
		p.received++
		p.mu.Unlock()
	}
	sub.subacks = make(chan []byte, 1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = sub.readLoop()
	}()
	if err := sub.subscribe(ctx, topic, 1); err != nil {
		pub.conn.Close()
		sub.conn.Close()
		p.wg.Wait()
		return nil, err
	}
	free := make(chan uint16, 64)
	for id := 1; id <= 64; id++ {
		free <- uint16(id)
	}
	pub.onAck = func(pid uint16) {
		select {
		case free <- pid:
		default:
		}
	}
	dead := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(dead)
		_ = pub.readLoop()
	}()
	pctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		mc := MQTTConfig{Topic: topic, QoS: 1, Size: 64}
		_ = publishLoop(pctx, pub, 0, -1, mc, NewSchedule(time.Now(), cfg.ProbeRate), base, free, dead, &p.sent)
	}()
	return p, nil
}

// window returns what the probe saw since the last call and starts anew.
func (p *probe) window() Probe {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sent.Load()
	out := Probe{Sent: s - p.sentMark, Received: p.received, Latency: summarize(p.hist)}
	p.sentMark, p.received, p.hist = s, 0, NewHistogram()
	return out
}

func (p *probe) close() {
	p.cancel()
	p.pub.disconnect()
	p.sub.disconnect()
	p.wg.Wait()
}
