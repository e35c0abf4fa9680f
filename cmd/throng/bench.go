package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/bench"
)

const benchUsage = `Usage:
  throng bench mqtt  [flags]   MQTT publishers → subscribers on one topic
  throng bench amqp  [flags]   AMQP 1.0 senders → receivers on one address
  throng bench conns [flags]   N idle MQTT connections: connect rate, memory per connection
  throng bench http  [flags]   HTTP devices POSTing telemetry to Hono's HTTP adapter (keep-alive)
  throng bench registry [flags] device registry: bulk create through /v1, pages, device
                               connects with authentication, reconnect storm (starts a node)
  throng bench isolation [flags] one tenant floods over its rate limit, another's QoS 1
                               latency alone and during the flood (starts a node)
  throng bench bridge [flags]  MQTT QoS 1 → throng's bridge → remote mosquitto, and
                               mosquitto's own bridge in the same run (starts them)
  throng bench table [--out FILE] RESULTS.jsonl...
                               markdown table of medians and ratios (bench-compare)

Progress goes to stderr once per second; the report to stdout, as text
or, with -o json, as one JSON object (a stable result structure).
Run 'throng bench MODE -h' for a mode's flags.
`

// bench runs the load and comparison tool (internal/bench).
func (c *cli) bench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("bench needs a mode\n%s", strings.TrimRight(benchUsage, "\n"))
	}
	switch args[0] {
	case "mqtt":
		return c.benchMQTT(ctx, args[1:])
	case "amqp":
		return c.benchAMQP(ctx, args[1:])
	case "conns":
		return c.benchConns(ctx, args[1:])
	case "registry":
		return c.benchRegistry(ctx, args[1:])
	case "http":
		return c.benchHTTP(ctx, args[1:])
	case "isolation":
		return c.benchIsolation(ctx, args[1:])
	case "bridge":
		return c.benchBridge(ctx, args[1:])
	case "table":
		return c.benchTable(args[1:])
	case "-h", "--help", "help":
		fmt.Fprint(c.stdout, benchUsage)
		return nil
	}
	return usagef("unknown bench mode %q (want mqtt, amqp, conns, http, registry, isolation, bridge or table)", args[0])
}

// benchCommon are the flags every load mode has.
type benchCommon struct {
	output   *string
	label    *string
	quiet    *bool
	user     *string
	password *string
	cpuprof  *string
}

func (c *cli) benchCommonFlags(fs *flag.FlagSet) *benchCommon {
	b := &benchCommon{
		output:   fs.String("o", "text", "output format: text or json"),
		label:    fs.String("label", "", "free-form label copied into the result (e.g. broker=mosquitto,shape=fanin)"),
		quiet:    fs.Bool("quiet", false, "no progress lines on stderr"),
		user:     fs.String("user", c.env.get("THRONG_BENCH_USER"), "user name (env THRONG_BENCH_USER)"),
		password: new(string),
		cpuprof:  fs.String("cpuprofile", "", "write the load generator's own CPU profile to this file (it shares the machine with the broker)"),
	}
	secretVar(fs, b.password, "password", c.env.get("THRONG_BENCH_PASSWORD"), "`password` (env THRONG_BENCH_PASSWORD)")
	return b
}

// profile starts the load generator's CPU profile if asked; the returned
// function stops it.
func (b *benchCommon) profile() (stop func(), err error) {
	if *b.cpuprof == "" {
		return func() {}, nil
	}
	f, err := os.Create(*b.cpuprof)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func (b *benchCommon) progress(stderr io.Writer) io.Writer {
	if *b.quiet {
		return nil
	}
	return stderr
}

func (b *benchCommon) check() error {
	if *b.output != "text" && *b.output != "json" {
		return usagef("-o must be text or json")
	}
	return nil
}

func (c *cli) printResult(b *benchCommon, r *bench.Result) error {
	if *b.output == "json" {
		enc := json.NewEncoder(c.stdout)
		return enc.Encode(r)
	}
	r.WriteText(c.stdout)
	return nil
}

func (c *cli) parseBench(fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	return noArgs(pos)
}

func (c *cli) benchMQTT(ctx context.Context, args []string) error {
	fs := c.newFlagSet("bench mqtt", "bench mqtt [--server HOST:PORT] [--sub-server HOST:PORT] [--shape fan-in|fan-out] [--qos N] [--rate N] [flags]")
	var cfg bench.MQTTConfig
	common := c.benchCommonFlags(fs)
	fs.StringVar(&cfg.Server, "server", "127.0.0.1:1883", "MQTT broker host:port")
	fs.StringVar(&cfg.SubServer, "sub-server", "", "the subscribers' host:port, e.g. another node of a cluster (default: --server)")
	fs.StringVar(&cfg.Shape, "shape", "", "fan-in (4 publishers → 1 subscriber) or fan-out (1 → 100); --publishers/--subscribers override")
	fs.IntVar(&cfg.Publishers, "publishers", 0, "publishing connections (default 1, or from --shape)")
	fs.IntVar(&cfg.Subscribers, "subscribers", 0, "subscribing connections (default 1, or from --shape)")
	fs.IntVar(&cfg.QoS, "qos", 0, "QoS of publishes and subscriptions: 0, 1 or 2")
	fs.IntVar(&cfg.Version, "version", 5, "MQTT version: 3 (3.1.1) or 5")
	fs.IntVar(&cfg.Size, "size", 64, "payload bytes (at least 22)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "total publish rate in msg/s, spread over the publishers (0: as fast as possible)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish (when --count is 0)")
	fs.Int64Var(&cfg.Count, "count", 0, "total messages to publish (0: publish for --duration)")
	fs.StringVar(&cfg.Topic, "topic", "", "topic (default bench/<random>)")
	fs.StringVar(&cfg.Shared, "shared", "", "subscribe as shared subscription group $share/GROUP/topic")
	fs.IntVar(&cfg.Inflight, "inflight", 64, "unacknowledged QoS 1/2 publishes per publisher (capped by the server's receive maximum)")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "longest wait for outstanding deliveries after publishing")
	fs.StringVar(&cfg.Client, "client", "raw", "MQTT client: raw (pipelining, the bench's codec) or paho (github.com/eclipse/paho.golang, MQTT 5 only)")
	if err := c.parseBench(fs, args); err != nil {
		return err
	}
	if err := common.check(); err != nil {
		return err
	}
	cfg.User, cfg.Password, cfg.Label, cfg.Progress = *common.user, *common.password, *common.label, common.progress(c.stderr)
	stop, err := common.profile()
	if err != nil {
		return err
	}
	r, err := bench.RunMQTT(ctx, cfg)
	stop()
	if err != nil {
		return err
	}
	return c.printResult(common, r)
}

func (c *cli) benchAMQP(ctx context.Context, args []string) error {
	fs := c.newFlagSet("bench amqp", "bench amqp [--server HOST:PORT] [--address A] [--type queue|anycast|multicast|topic] [flags]")
	var cfg bench.AMQPConfig
	common := c.benchCommonFlags(fs)
	fs.StringVar(&cfg.Server, "server", "127.0.0.1:5672", "AMQP 1.0 host:port")
	fs.StringVar(&cfg.Address, "address", "", "target and source address (default bench/<random>)")
	fs.StringVar(&cfg.Type, "type", "", "with --admin-url: create the address with this type first (queue, anycast, multicast, topic)")
	fs.StringVar(&cfg.AdminURL, "admin-url", "", "throng admin API base URL, to create the address (credentials: --admin-user/--admin-password)")
	fs.StringVar(&cfg.AdminUser, "admin-user", "admin", "throng administrator")
	secretVar(fs, &cfg.AdminPassword, "admin-password", c.env.get("THRONG_PASSWORD"), "throng administrator `password` (env THRONG_PASSWORD)")
	fs.StringVar(&cfg.Tenant, "tenant", "default", "throng tenant of the address")
	fs.IntVar(&cfg.Senders, "senders", 1, "sending links (one connection each)")
	fs.IntVar(&cfg.Receivers, "receivers", 1, "receiving links (one connection each)")
	fs.StringVar(&cfg.Settle, "settle", "unsettled", "sender settlement: unsettled (wait for the outcome) or presettled")
	fs.IntVar(&cfg.Credit, "credit", 500, "receiver link credit")
	fs.IntVar(&cfg.Inflight, "inflight", 64, "unsettled transfers per sender")
	fs.IntVar(&cfg.Size, "size", 64, "body bytes (at least 22)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "total send rate in msg/s (0: as fast as possible)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to send (when --count is 0)")
	fs.Int64Var(&cfg.Count, "count", 0, "total messages to send (0: send for --duration)")
	fs.BoolVar(&cfg.Shared, "competing", true, "receivers compete for each message (queue, anycast); false: each receiver gets every message (multicast, topic)")
	fs.StringVar(&cfg.Client, "client", "raw", "AMQP client: raw (pipelining, throng's codec) or go-amqp (github.com/Azure/go-amqp)")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "longest wait for outstanding deliveries after sending")
	if err := c.parseBench(fs, args); err != nil {
		return err
	}
	if err := common.check(); err != nil {
		return err
	}
	cfg.User, cfg.Password, cfg.Label, cfg.Progress = *common.user, *common.password, *common.label, common.progress(c.stderr)
	stop, err := common.profile()
	if err != nil {
		return err
	}
	r, err := bench.RunAMQP(ctx, cfg)
	stop()
	if err != nil {
		return err
	}
	return c.printResult(common, r)
}

func (c *cli) benchConns(ctx context.Context, args []string) error {
	fs := c.newFlagSet("bench conns", "bench conns [--server HOST:PORT] [--n N] [--pid PID] [flags]")
	var cfg bench.ConnsConfig
	common := c.benchCommonFlags(fs)
	fs.StringVar(&cfg.Server, "server", "127.0.0.1:1883", "MQTT broker host:port")
	fs.IntVar(&cfg.N, "n", 1000, "connections to open")
	fs.IntVar(&cfg.SourceIPs, "source-ips", 0, "spread connections over 127.0.0.1..127.0.0.K (default: one per 5000 connections)")
	fs.IntVar(&cfg.Parallel, "parallel", 32, "connections being opened at once")
	fs.IntVar(&cfg.Version, "version", 3, "MQTT version: 3 (3.1.1) or 5")
	fs.IntVar(&cfg.PID, "pid", 0, "broker process id: report its VmRSS per connection (Linux)")
	fs.DurationVar(&cfg.Hold, "hold", 2*time.Second, "how long to hold the connections open (idle, keep-alive) before measuring")
	fs.DurationVar(&cfg.KeepAlive, "keepalive", 60*time.Second, "MQTT keep-alive; PINGREQ is sent at half of it")
	if err := c.parseBench(fs, args); err != nil {
		return err
	}
	if err := common.check(); err != nil {
		return err
	}
	cfg.User, cfg.Password, cfg.Label, cfg.Progress = *common.user, *common.password, *common.label, common.progress(c.stderr)
	r, err := bench.RunConns(ctx, cfg)
	if err != nil {
		return err
	}
	return c.printResult(common, r)
}

func (c *cli) benchTable(args []string) error {
	fs := c.newFlagSet("bench table", "bench table [--baseline throng] RESULTS.jsonl...")
	baseline := fs.String("baseline", "throng", "broker the ratios are computed for (label broker=...)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("bench table needs result files (JSON lines from -o json)")
	}
	var results []bench.Result
	for _, p := range pos {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		rs, err := bench.ReadResults(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		results = append(results, rs...)
	}
	return bench.WriteTable(c.stdout, results, *baseline)
}

// nodeFlags registers the flags that name a bench mode's node (a running
// throng, or this binary started as 'throng serve'; startedWhere completes
// the --admin-url help). The returned function completes n after parsing;
// needServer: --admin-url without --server is a usage error.
func (c *cli) nodeFlags(fs *flag.FlagSet, n *bench.Node, startedWhere string, needServer bool) func() error {
	fs.StringVar(&n.AdminURL, "admin-url", "", "admin API of a running throng (default: start this binary as 'throng serve'"+startedWhere+")")
	fs.StringVar(&n.AdminUser, "admin-user", "admin", "throng administrator (with --admin-url)")
	secretVar(fs, &n.AdminPassword, "admin-password", c.env.get("THRONG_PASSWORD"), "throng administrator `password` (with --admin-url; env THRONG_PASSWORD)")
	fs.StringVar(&n.Server, "server", "", "MQTT host:port of the running throng (with --admin-url)")
	fs.StringVar(&n.Bin, "bin", "", "throng binary to start (default: this one)")
	nodeArgs := fs.String("node-args", "", "further 'throng serve' flags for the started node, space-separated")
	return func() error {
		n.NodeArgs = strings.Fields(*nodeArgs)
		if n.AdminURL == "" && n.Bin == "" {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			n.Bin = exe
		}
		if needServer && n.AdminURL != "" && n.Server == "" {
			return usagef("--admin-url needs --server (the node's MQTT host:port)")
		}
		return nil
	}
}

func (c *cli) benchRegistry(ctx context.Context, args []string) error {
	fs := c.newFlagSet("bench registry", "bench registry [--devices N] [--secret bcrypt|plain|sha-256] [--data-dir D] [--phases create,page,connect,storm] [flags]")
	var cfg bench.RegistryConfig
	output := fs.String("o", "text", "output format: text or json")
	fs.StringVar(&cfg.Label, "label", "", "free-form label copied into the result")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	nodeDone := c.nodeFlags(fs, &cfg.Node, " on --data-dir", false)
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data directory of the started node, kept: a rerun on it skips the devices that exist (default: a temporary one, removed)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "the started node serves /debug/pprof/ on a free loopback port (printed)")
	fs.StringVar(&cfg.Tenant, "tenant", "bench", "IoT tenant of the devices (created if missing)")
	fs.StringVar(&cfg.Prefix, "prefix", "d", "device id prefix (ids are PREFIX + 7 digits; the auth-id is the id)")
	fs.IntVar(&cfg.Devices, "devices", 1000, "devices to have registered (existing ones are skipped)")
	fs.StringVar(&cfg.Secret, "secret", "bcrypt", "hashed-password secrets: bcrypt (pwd-hash, hashed by the bench), plain (pwd-plain, the server hashes: bcrypt cost 10) or sha-256 (salted pwd-hash)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 16, "HTTP workers creating devices (one keep-alive connection each)")
	fs.DurationVar(&cfg.CreateFor, "create-for", 0, "stop creating after this long and report the rate and an extrapolation (0: create all)")
	phases := fs.String("phases", "create,page,connect,storm", "phases to run, of create, page, connect, storm")
	fs.IntVar(&cfg.PageRequests, "page-requests", 50, "sequential requests at each page offset (start, middle, end)")
	fs.IntVar(&cfg.ConnectClients, "connect-clients", 1000, "devices in each connect pass (spread over the registered ones)")
	fs.IntVar(&cfg.ConnectParallel, "parallel", 32, "connects in progress at once in a connect pass")
	fs.IntVar(&cfg.ColdParallel, "cold-parallel", 8, "connects in progress at once in the cold pass (bcrypt-bound: more only wait)")
	fs.IntVar(&cfg.WarmPasses, "warm-passes", 5, "warm connect passes after the cold one (each short: read the median)")
	fs.StringVar(&cfg.Client, "client", "both", "MQTT client of the connect passes: raw (the bench's), paho (paho.golang) or both (paho repeats the warm pass)")
	fs.IntVar(&cfg.Version, "version", 5, "MQTT version of the raw client: 3 (3.1.1) or 5")
	fs.IntVar(&cfg.Storm, "storm", 10000, "devices in the reconnect storm")
	fs.DurationVar(&cfg.StormTimeout, "storm-timeout", 15*time.Minute, "longest a storm may take (devices retry with backoff until then)")
	fs.Float64Var(&cfg.ProbeRate, "probe-rate", 200, "QoS 1 probe messages per second during the storms")
	if err := c.parseBench(fs, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usagef("-o must be text or json")
	}
	if *phases != "" {
		cfg.Phases = strings.Split(*phases, ",")
	}
	if err := nodeDone(); err != nil {
		return err
	}
	if !*quiet {
		cfg.Progress = c.stderr
	}
	r, err := bench.RunRegistry(ctx, cfg)
	if r == nil {
		return err
	}
	if perr := c.printResult(&benchCommon{output: output}, r); perr != nil {
		return perr
	}
	return err
}

func (c *cli) benchIsolation(ctx context.Context, args []string) error {
	fs := c.newFlagSet("bench isolation", "bench isolation [--rounds N] [--duration D] [--flood-conns N] [--flood-rate N] [--limit N] [flags]")
	var cfg bench.IsolationConfig
	output := fs.String("o", "text", "output format: text or json")
	fs.StringVar(&cfg.Label, "label", "", "free-form label copied into the result")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	nodeDone := c.nodeFlags(fs, &cfg.Node, "", true)
	fs.IntVar(&cfg.Rounds, "rounds", 3, "pairs of phases: the victim alone, then during the flood")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "each phase's probe time")
	fs.Float64Var(&cfg.ProbeRate, "probe-rate", 200, "the victim tenant's QoS 1 messages per second")
	fs.IntVar(&cfg.FloodConns, "flood-conns", 50, "the flooding tenant's connections")
	fs.Float64Var(&cfg.FloodRate, "flood-rate", 0, "their total QoS 0 publish rate (0: as fast as they can write)")
	fs.Float64Var(&cfg.Limit, "limit", 1000, "the flooding tenant's maxMessagesInPerSecond")
	if err := c.parseBench(fs, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usagef("-o must be text or json")
	}
	if err := nodeDone(); err != nil {
		return err
	}
	if !*quiet {
		cfg.Progress = c.stderr
	}
	r, err := bench.RunIsolation(ctx, cfg)
	if r == nil {
		return err
	}
	if perr := writeReport(c.stdout, *output, r); perr != nil {
		return perr
	}
	return err
}

// writeReport prints a bench mode's result as text or, with output
// "json", as one JSON object (the modes with a WriteText report).
func writeReport(w io.Writer, output string, r interface{ WriteText(io.Writer) }) error {
	if output == "json" {
		return json.NewEncoder(w).Encode(r)
	}
	r.WriteText(w)
	return nil
}
