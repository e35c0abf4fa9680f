package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// The bridge shape (issue 17): local MQTT QoS 1 publishers → a broker →
// that broker's bridge → a remote mosquitto, where a subscriber counts
// what arrives. The same job is done in the same run by throng's MQTT
// bridge (a bridge definition, one "out" mapping x/#) and by mosquitto's
// own bridge (a local mosquitto with "connection" and "topic x/# out 1"),
// each to its own remote mosquitto, one after the other; the report
// compares delivered msg/s at the remote and end-to-end latency (from
// each message's due time at the publisher to its arrival at the remote
// subscriber).

// BridgeConfig configures RunBridge. Zero values take the defaults.
type BridgeConfig struct {
	// A running throng (AdminURL, Server: the bridge "bench" is created in
	// its tenant "default" and deleted at the end), or one to start (Bin).
	Node
	Mosquitto string // mosquitto binary (default: mosquitto on PATH or /usr/sbin/mosquitto)

	Publishers int     // local publishing connections (default 4)
	Size       int     // payload bytes (default 64)
	Rate       float64 // total publish rate, msg/s (0: as fast as the local broker acknowledges)
	Duration   time.Duration
	Count      int64         // total messages (0: publish for Duration, default 10 s)
	Inflight   int           // unacknowledged publishes per publisher (default 64)
	Drain      time.Duration // longest wait for the bridge to catch up after publishing (default 120 s)
	// Window is throng's bridge window (messages in flight per mapping,
	// the definition's "window"); 0: the bridge's default.
	Window int
	// RemoteDelay holds every chunk to and from the remote mosquitto this
	// long (a proxy in front of it, for both bridges): a remote a round
	// trip of 2×RemoteDelay away. 0: the remote on loopback.
	RemoteDelay time.Duration
	Targets     []string // "throng", "mosquitto" (default both, in this order)
	Label       string
	Progress    io.Writer
}

// Bridge is the result of RunBridge.
type Bridge struct {
	Mode    string `json:"mode"` // bridge
	Label   string `json:"label,omitempty"`
	Started string `json:"started"`
	Window  int    `json:"window,omitempty"`
	// RemoteDelayMS is RemoteDelay, each way, in milliseconds.
	RemoteDelayMS float64 `json:"remote_delay_ms,omitempty"`
	Load          float64 `json:"load_avg"` // 1-minute load average at the end
	// One run per target: Mode "mqtt", Label "broker=<target>".
	Throng    *Result `json:"throng,omitempty"`
	Mosquitto *Result `json:"mosquitto,omitempty"`
	// throng / mosquitto: delivered msg/s at the remote, latency p50, p99
	// (0 unless both ran).
	RateRatio float64  `json:"rate_ratio,omitempty"`
	P50Ratio  float64  `json:"p50_ratio,omitempty"`
	P99Ratio  float64  `json:"p99_ratio,omitempty"`
	Errors    []string `json:"errors,omitempty"`
}

func (c *BridgeConfig) defaults() error {
	if c.Mosquitto == "" {
		for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
			if path, err := exec.LookPath(p); err == nil {
				c.Mosquitto = path
				break
			}
		}
		if c.Mosquitto == "" {
			return errors.New("bench: mosquitto not found (apt-get install mosquitto, or --mosquitto PATH)")
		}
	}
	if c.Publishers <= 0 {
		c.Publishers = 4
	}
	if c.Size == 0 {
		c.Size = 64
	}
	if c.Duration == 0 && c.Count == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Inflight <= 0 {
		c.Inflight = 64
	}
	if c.Drain <= 0 {
		c.Drain = 120 * time.Second
	}
	if len(c.Targets) == 0 {
		c.Targets = []string{"throng", "mosquitto"}
	}
	for _, t := range c.Targets {
		if t != "throng" && t != "mosquitto" {
			return fmt.Errorf("bench: unknown bridge target %q (want throng or mosquitto)", t)
		}
	}
	return nil
}

// RunBridge measures throng's MQTT bridge and mosquitto's.
func RunBridge(ctx context.Context, cfg BridgeConfig) (*Bridge, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	res := &Bridge{Mode: "bridge", Label: cfg.Label, Started: time.Now().UTC().Format(time.RFC3339), Window: cfg.Window,
		RemoteDelayMS: float64(cfg.RemoteDelay) / 1e6}
	logf := func(format string, a ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", a...)
		}
	}
	dir, err := os.MkdirTemp("", "throng-bench-bridge-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	run := randomID()
	load := func(server, remote, user, password, topic string) MQTTConfig {
		return MQTTConfig{Server: server, SubServer: remote, User: user, Password: password, QoS: 1,
			Publishers: cfg.Publishers, Subscribers: 1, Size: cfg.Size, Rate: cfg.Rate, Duration: cfg.Duration,
			Count: cfg.Count, Inflight: cfg.Inflight, Drain: cfg.Drain, Topic: topic, Progress: cfg.Progress}
	}
	for _, target := range cfg.Targets {
		remote, err := startMosquitto(ctx, cfg.Mosquitto, filepath.Join(dir, target+"-remote"), "")
		if err != nil {
			return res, err
		}
		// The bridge's address of the remote (through the delay, if any);
		// the subscriber counting deliveries is on the remote itself.
		bridgeTo, stopProxy := remote.addr, func() {}
		if cfg.RemoteDelay > 0 {
			px, err := startDelayProxy(remote.addr, cfg.RemoteDelay)
			if err != nil {
				remote.stop()
				return res, err
			}
			bridgeTo, stopProxy = px.addr(), px.close
		}
		var r *Result
		switch target {
		case "throng":
			r, err = bridgeThrong(ctx, cfg, dir, bridgeTo, remote.addr, run, load, logf)
		case "mosquitto":
			r, err = bridgeMosquitto(ctx, cfg, dir, bridgeTo, remote.addr, run, load, logf)
		}
		stopProxy()
		remote.stop()
		if err != nil {
			return res, fmt.Errorf("bench: %s: %w", target, err)
		}
		r.Label = "broker=" + target + ",shape=bridge"
		if cfg.Label != "" {
			r.Label += "," + cfg.Label
		}
		logf("%s: %.0f msg/s delivered at the remote, latency p50 %s p99 %s, lost %d", target,
			r.DeliveredRate, fmtUS(r.Latency.P50), fmtUS(r.Latency.P99), r.Lost)
		if target == "throng" {
			res.Throng = r
		} else {
			res.Mosquitto = r
		}
	}
	if t, m := res.Throng, res.Mosquitto; t != nil && m != nil {
		res.RateRatio = ratio(t.DeliveredRate, m.DeliveredRate)
		res.P50Ratio = ratio(t.Latency.P50, m.Latency.P50)
		res.P99Ratio = ratio(t.Latency.P99, m.Latency.P99)
	}
	res.Load = loadAverage()
	return res, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// bridgeThrong runs the load through throng's MQTT bridge.
func bridgeThrong(ctx context.Context, cfg BridgeConfig, dir, bridgeTo, remote, run string, load func(server, remote, user, password, topic string) MQTTConfig,
	logf func(string, ...any)) (*Result, error) {
	n := cfg.Node
	if n.AdminURL == "" {
		nd, err := startNode(ctx, n.Bin, filepath.Join(dir, "data"), filepath.Join(dir, "node.log"), false, n.NodeArgs)
		if err != nil {
			return nil, err
		}
		defer nd.stop(10 * time.Second)
		n.AdminURL, n.AdminUser, n.AdminPassword, n.Server = nd.adminURL(), "admin", nd.password, nd.mqtt
	}
	if n.AdminUser == "" {
		n.AdminUser = "admin"
	}
	admin := newRegClient(n.AdminURL, n.AdminUser, n.AdminPassword, 1)
	name := "bench-" + run
	def := map[string]any{"name": name, "kind": "mqtt", "direction": "out",
		"remote":   map[string]any{"url": "mqtt://" + bridgeTo, "clientId": "throng-bench-" + run},
		"mappings": []map[string]any{{"filter": "x/#"}}}
	if cfg.Window > 0 {
		def["window"] = cfg.Window
	}
	body, _ := json.Marshal(def)
	path := "/api/tenants/default/bridges"
	if st, b, err := admin.do(ctx, "POST", path, body); err != nil || st/100 != 2 {
		return nil, fmt.Errorf("POST %s: %d %s %v", path, st, b, err)
	}
	defer admin.do(context.Background(), "DELETE", path+"/"+name, nil)
	// Connected: the remote session is up and the durable subscription
	// exists (what is published before would not be bridged).
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, b, err := admin.do(ctx, "GET", path+"/"+name, nil)
		var v struct {
			Status struct {
				State string `json:"state"`
			} `json:"status"`
			State string `json:"state"`
		}
		if err == nil && st == 200 && json.Unmarshal(b, &v) == nil && (v.State == "connected" || v.Status.State == "connected") {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bridge not connected within 60 s: %d %s %v", st, b, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	user, password := n.AdminUser, n.AdminPassword
	if err := warmUp(ctx, load(n.Server, remote, user, password, "x/"+run+"/throng-warm")); err != nil {
		return nil, err
	}
	logf("throng: bridge %s to %s connected", name, remote)
	r, err := RunMQTT(ctx, load(n.Server, remote, user, password, "x/"+run+"/throng"))
	if r != nil {
		r.Target = "throng " + n.Server + " → bridge → mosquitto " + remote
	}
	return r, err
}

// bridgeMosquitto runs the load through a local mosquitto's own bridge.
func bridgeMosquitto(ctx context.Context, cfg BridgeConfig, dir, bridgeTo, remote, run string, load func(server, remote, user, password, topic string) MQTTConfig,
	logf func(string, ...any)) (*Result, error) {
	// mosquitto's bridge defaults (cleansession false, try_private,
	// notifications, queue limits) are kept: the bridge as a user
	// writes it. No persistence on either side, mosquitto's default.
	local, err := startMosquitto(ctx, cfg.Mosquitto, filepath.Join(dir, "mosquitto-local"),
		"connection bench\naddress "+bridgeTo+"\nremote_clientid mosquitto-bench-"+run+"\ntopic x/# out 1\n")
	if err != nil {
		return nil, err
	}
	defer local.stop()
	if err := warmUp(ctx, load(local.addr, remote, "", "", "x/"+run+"/mosquitto-warm")); err != nil {
		return nil, err
	}
	logf("mosquitto: bridge to %s connected", remote)
	r, err := RunMQTT(ctx, load(local.addr, remote, "", "", "x/"+run+"/mosquitto"))
	if r != nil {
		r.Target = "mosquitto " + local.addr + " → bridge → mosquitto " + remote
	}
	return r, err
}

// warmUp publishes one message at a time until one crosses the bridge
// (the bridge's connection is up), for at most a minute.
func warmUp(ctx context.Context, c MQTTConfig) error {
	c.Publishers, c.Count, c.Rate, c.Drain, c.Progress = 1, 1, 0, 2*time.Second, nil
	deadline := time.Now().Add(time.Minute)
	for {
		r, err := RunMQTT(ctx, c)
		if err == nil && r.Received > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("nothing arrived")
			}
			return fmt.Errorf("no message crossed the bridge within a minute: %w", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// mosquittoProc is a mosquitto the bench started.
type mosquittoProc struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startMosquitto runs bin on a free loopback port (anonymous clients)
// with extra configuration lines; its log goes to dir/mosquitto.log.
func startMosquitto(ctx context.Context, bin, dir, extra string) (*mosquittoProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := "listener " + port + " 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type error\nlog_type warning\nmax_queued_messages 0\n"
	if os.Geteuid() == 0 {
		conf += "user root\n" // as root mosquitto would switch to user mosquitto
	}
	conf += extra
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	m := &mosquittoProc{addr: addr, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(m.done)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return m, nil
		}
		select {
		case <-m.done:
			return nil, fmt.Errorf("mosquitto exited: %s", tail(filepath.Join(dir, "mosquitto.log")))
		case <-ctx.Done():
			m.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, errors.New("mosquitto not listening on " + addr + " within 10 s")
		}
	}
}

func (m *mosquittoProc) stop() {
	_ = m.cmd.Process.Kill()
	<-m.done
}

// WriteText prints a human-readable report.
func (b *Bridge) WriteText(w io.Writer) {
	fmt.Fprintf(w, "bridge bench (local MQTT QoS 1 → bridge → remote mosquitto)")
	if b.Label != "" {
		fmt.Fprintf(w, " [%s]", b.Label)
	}
	fmt.Fprintln(w)
	if b.Window > 0 {
		fmt.Fprintf(w, "  throng's bridge window %d\n", b.Window)
	}
	if b.RemoteDelayMS > 0 {
		fmt.Fprintf(w, "  remote %.1f ms away each way (a delaying proxy in front of it)\n", b.RemoteDelayMS)
	}
	for _, r := range []*Result{b.Throng, b.Mosquitto} {
		if r != nil {
			r.WriteText(w)
		}
	}
	if b.RateRatio > 0 {
		fmt.Fprintf(w, "throng / mosquitto: delivered %.2f×, latency p50 %.2f×, p99 %.2f× (load average %.1f)\n",
			b.RateRatio, b.P50Ratio, b.P99Ratio, b.Load)
	}
	for _, e := range b.Errors {
		fmt.Fprintf(w, "  error        %s\n", e)
	}
}
