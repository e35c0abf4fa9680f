package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Tenant isolation (issue 14, "Plans and quotas"): does a tenant flooding
// a node — publishing over its rate limit from many connections — move
// another tenant's latency? One node (a `throng serve` child), two
// tenants: "victim" without limits, measured by a QoS 1 probe (one
// publisher, one subscriber, RunMQTT at a fixed rate, latency from each
// message's due time), and "flood" with maxMessagesInPerSecond, whose
// connections publish QoS 0 as fast as they can write (or at FloodRate)
// to a topic it subscribes to, so that what is admitted is delivered.
// Rounds alternate the probe alone and the probe during the flood, so
// that a drift of the (shared) machine's load shows in both.

// IsolationConfig configures RunIsolation. Zero values take the defaults.
type IsolationConfig struct {
	// A running node (AdminURL set: the tenants "victim" and "flood" are
	// created there), or a node to start (Bin).
	Node
	DataDir string // the started node's data directory (default: a temporary one, removed)

	Rounds     int           // alone/flooded pairs (default 3)
	Duration   time.Duration // each phase's probe time (default 10 s)
	ProbeRate  float64       // the victim's QoS 1 messages per second (default 200)
	FloodConns int           // the flooding tenant's connections (default 50)
	FloodRate  float64       // their total publish rate (0: as fast as they can)
	Limit      float64       // the flooding tenant's maxMessagesInPerSecond (default 1000)
	Label      string
	Progress   io.Writer
}

func (c *IsolationConfig) defaults() {
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.ProbeRate <= 0 {
		c.ProbeRate = 200
	}
	if c.FloodConns <= 0 {
		c.FloodConns = 50
	}
	if c.Limit <= 0 {
		c.Limit = 1000
	}
}

// Isolation is the result of RunIsolation.
type Isolation struct {
	Mode       string           `json:"mode"` // isolation
	Label      string           `json:"label,omitempty"`
	Started    string           `json:"started"`
	ProbeRate  float64          `json:"probe_rate"`
	FloodConns int              `json:"flood_conns"`
	FloodRate  float64          `json:"flood_rate"` // requested (0: unpaced)
	Limit      float64          `json:"limit"`
	Rounds     []IsolationRound `json:"rounds"`
	// P99Ratio is the median over the rounds of flooded p99 / alone p99.
	P99Ratio float64  `json:"p99_ratio"`
	Errors   []string `json:"errors,omitempty"`
}

// IsolationRound is one pair of phases.
type IsolationRound struct {
	Alone        Latency `json:"alone"`
	Flooded      Latency `json:"flooded"`
	AloneLost    uint64  `json:"alone_lost"`
	FloodedLost  uint64  `json:"flooded_lost"`
	FloodSent    float64 `json:"flood_sent_per_s"`      // the flood's publishes written per second
	FloodRefused float64 `json:"flood_refused_per_s"`   // refused over the rate (throng_tenant_quota_refused_total)
	FloodOut     float64 `json:"flood_delivered_per_s"` // delivered to the flood's subscriber
	Load         float64 `json:"load_avg"`              // 1-minute load average at the end
}

// RunIsolation starts a node and measures.
func RunIsolation(ctx context.Context, cfg IsolationConfig) (*Isolation, error) {
	cfg.defaults()
	res := &Isolation{Mode: "isolation", Label: cfg.Label, Started: time.Now().UTC().Format(time.RFC3339),
		ProbeRate: cfg.ProbeRate, FloodConns: cfg.FloodConns, FloodRate: cfg.FloodRate, Limit: cfg.Limit}
	logf := func(format string, a ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", a...)
		}
	}
	if cfg.AdminURL == "" {
		dir := cfg.DataDir
		if dir == "" {
			d, err := os.MkdirTemp("", "throng-bench-isolation-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(d)
			dir = d
		}
		n, err := startNode(ctx, cfg.Bin, filepath.Join(dir, "data"), filepath.Join(dir, "node.log"), false, cfg.NodeArgs)
		if err != nil {
			return nil, err
		}
		defer n.stop(10 * time.Second)
		cfg.AdminURL, cfg.AdminUser, cfg.AdminPassword, cfg.Server = n.adminURL(), "admin", n.password, n.mqtt
	}
	server := cfg.Server
	admin := newRegClient(cfg.AdminURL, cfg.AdminUser, cfg.AdminPassword, 2)
	limits, _ := json.Marshal(map[string]any{"maxMessagesInPerSecond": cfg.Limit})
	for _, t := range []struct{ name, limits string }{{"victim", "{}"}, {"flood", string(limits)}} {
		for _, req := range []struct{ path, body string }{
			{"/api/tenants", `{"name":"` + t.name + `","limits":` + t.limits + `}`},
			{"/api/tenants/" + t.name + "/users", `{"name":"app","password":"app-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`},
		} {
			st, b, err := admin.do(ctx, "POST", req.path, []byte(req.body))
			if err != nil || st/100 != 2 {
				return nil, fmt.Errorf("bench: POST %s: %d %s %v", req.path, st, b, err)
			}
		}
	}

	// The flood's subscriber: delivered messages are real work.
	sub, err := rawMQTT(server, "app@flood", "app-secret", "flood-sub")
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	if err := rawSubscribe(sub, "flood/#"); err != nil {
		return nil, err
	}
	var delivered atomic.Int64
	go func() {
		// It only reads: without a PINGREQ the node closes it after 1.5 ×
		// its 60 s keep-alive, and later rounds counted nothing delivered.
		tk := time.NewTicker(20 * time.Second)
		defer tk.Stop()
		for range tk.C {
			if _, err := sub.Write([]byte{0xC0, 0}); err != nil {
				return
			}
		}
	}()
	go func() {
		br := bufio.NewReaderSize(sub, 64<<10)
		for {
			b, err := readPacket(br)
			if err != nil {
				return
			}
			if b>>4 == 3 { // PUBLISH, not the PINGRESPs
				delivered.Add(1)
			}
		}
	}()

	probe := func() (*Result, error) {
		return RunMQTT(ctx, MQTTConfig{Server: server, User: "app@victim", Password: "app-secret", QoS: 1,
			Rate: cfg.ProbeRate, Duration: cfg.Duration, Topic: "probe/" + randomID(), Drain: 5 * time.Second})
	}
	var ratios []float64
	for i := range cfg.Rounds {
		var round IsolationRound
		alone, err := probe()
		if err != nil {
			return res, err
		}
		round.Alone, round.AloneLost = alone.Latency, alone.Lost

		refused0 := admin.metrics(ctx, "throng_tenant_quota_refused_total")["throng_tenant_quota_refused_total"]
		del0 := delivered.Load()
		fctx, stop := context.WithCancel(ctx)
		var sent atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, cfg.FloodConns)
		for c := range cfg.FloodConns {
			wg.Go(func() {
				if err := flood(fctx, server, fmt.Sprintf("flood-%d", c), cfg.FloodRate/float64(cfg.FloodConns), &sent); err != nil && fctx.Err() == nil {
					errs <- err
				}
			})
		}
		t0 := time.Now()
		flooded, err := probe()
		secs := time.Since(t0).Seconds()
		stop()
		wg.Wait()
		close(errs)
		for e := range errs {
			res.Errors = append(res.Errors, e.Error())
		}
		if err != nil {
			return res, err
		}
		round.Flooded, round.FloodedLost = flooded.Latency, flooded.Lost
		round.FloodSent = float64(sent.Load()) / secs
		round.FloodRefused = (admin.metrics(ctx, "throng_tenant_quota_refused_total")["throng_tenant_quota_refused_total"] - refused0) / secs
		round.FloodOut = float64(delivered.Load()-del0) / secs
		round.Load = loadAverage()
		res.Rounds = append(res.Rounds, round)
		if round.Alone.P99 > 0 {
			ratios = append(ratios, round.Flooded.P99/round.Alone.P99)
		}
		logf("round %d: alone p50 %.0f µs p99 %.0f µs; flooded p50 %.0f µs p99 %.0f µs; flood %.0f/s written, %.0f/s refused, %.0f/s delivered; load %.1f",
			i+1, round.Alone.P50, round.Alone.P99, round.Flooded.P50, round.Flooded.P99, round.FloodSent, round.FloodRefused, round.FloodOut, round.Load)
	}
	if len(ratios) > 0 {
		slices.Sort(ratios)
		res.P99Ratio = ratios[len(ratios)/2]
	}
	return res, nil
}

// WriteText prints the result as a table.
func (r *Isolation) WriteText(w io.Writer) {
	fmt.Fprintf(w, "isolation: victim QoS 1 probe at %.0f msg/s; flooding tenant: %d connections, QoS 0, ", r.ProbeRate, r.FloodConns)
	if r.FloodRate > 0 {
		fmt.Fprintf(w, "%.0f msg/s", r.FloodRate)
	} else {
		fmt.Fprint(w, "unpaced")
	}
	fmt.Fprintf(w, ", limit %.0f msg/s\n", r.Limit)
	fmt.Fprintln(w, "round  alone p50/p99 (ms)  flooded p50/p99 (ms)  p99 ratio  flood written/refused/delivered per s  load")
	for i, rd := range r.Rounds {
		ratio := 0.0
		if rd.Alone.P99 > 0 {
			ratio = rd.Flooded.P99 / rd.Alone.P99
		}
		fmt.Fprintf(w, "%5d  %8.2f / %-8.2f  %8.2f / %-8.2f  %9.2f  %10.0f / %.0f / %.0f  %5.1f\n", i+1,
			rd.Alone.P50/1e3, rd.Alone.P99/1e3, rd.Flooded.P50/1e3, rd.Flooded.P99/1e3, ratio,
			rd.FloodSent, rd.FloodRefused, rd.FloodOut, rd.Load)
	}
	fmt.Fprintf(w, "median p99 ratio (flooded / alone): %.2f\n", r.P99Ratio)
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

// flood publishes QoS 0 to flood/<id> on its own connection until ctx
// ends, at rate per second (0: as fast as the socket takes them),
// counting the publishes written.
func flood(ctx context.Context, addr, id string, rate float64, sent *atomic.Int64) error {
	c, err := rawMQTT(addr, "app@flood", "app-secret", id)
	if err != nil {
		return err
	}
	defer c.Close()
	go func() { _, _ = io.Copy(io.Discard, c) }() // a refusal would close it
	go func() { <-ctx.Done(); c.Close() }()
	topic := "flood/" + id
	body := make([]byte, 0, 96)
	body = append(body, byte(len(topic)>>8), byte(len(topic)))
	body = append(body, topic...)
	body = append(body, make([]byte, 64)...)
	pkt := append([]byte{0x30, byte(len(body))}, body...)
	const batch = 32
	buf := make([]byte, 0, batch*len(pkt))
	for range batch {
		buf = append(buf, pkt...)
	}
	var tick *time.Ticker
	if rate > 0 {
		// One batch per tick.
		tick = time.NewTicker(time.Duration(float64(time.Second) * batch / rate))
		defer tick.Stop()
	}
	for ctx.Err() == nil {
		if tick != nil {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return nil
			}
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
		sent.Add(batch)
	}
	return nil
}

// rawMQTT opens an MQTT 3.1.1 connection (clean session) with a user
// name and password and waits for an accepting CONNACK.
func rawMQTT(addr, user, password, clientID string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	str := func(b []byte, s string) []byte { return append(append(b, byte(len(s)>>8), byte(len(s))), s...) }
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 60}
	body = str(str(str(body, clientID), user), password)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		c.Close()
		return nil, err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("bench: connect %s: CONNACK % x %v", user, ack, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// rawSubscribe subscribes c to filter at QoS 0 and waits for the SUBACK.
func rawSubscribe(c net.Conn, filter string) error {
	body := []byte{0, 1, byte(len(filter) >> 8), byte(len(filter))}
	body = append(append(body, filter...), 0)
	if _, err := c.Write(append([]byte{0x82, byte(len(body))}, body...)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var ack [5]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != 0x90 || ack[4] > 2 {
		return fmt.Errorf("bench: subscribe %s: SUBACK % x %v", filter, ack, err)
	}
	return nil
}

// readPacket reads one MQTT packet and returns its first byte.
func readPacket(r *bufio.Reader) (byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	n, mul := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		mul *= 128
	}
	_, err = r.Discard(n)
	return h, err
}
