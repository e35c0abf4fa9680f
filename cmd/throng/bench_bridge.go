package main

import (
	"context"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/bench"
)

// benchBridge is 'throng bench bridge': local MQTT QoS 1 publishers →
// throng's MQTT bridge → a remote mosquitto, and the same job done by
// mosquitto's own bridge in the same run (internal/bench/bridge.go).
func (c *cli) benchBridge(ctx context.Context, args []string) error {
	fs := c.newFlagSet("bench bridge", "bench bridge [--publishers N] [--duration D|--count N] [--rate N] [--window N] [--targets throng,mosquitto] [flags]")
	var cfg bench.BridgeConfig
	output := fs.String("o", "text", "output format: text or json")
	fs.StringVar(&cfg.Label, "label", "", "free-form label copied into the result")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	nodeDone := c.nodeFlags(fs, &cfg.Node, "", true)
	fs.StringVar(&cfg.Mosquitto, "mosquitto", "", "mosquitto binary (default: on PATH or /usr/sbin/mosquitto)")
	fs.IntVar(&cfg.Publishers, "publishers", 4, "local publishing connections (QoS 1)")
	fs.IntVar(&cfg.Size, "size", 64, "payload bytes (at least 22)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "total publish rate in msg/s (0: as fast as the local broker acknowledges)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish (when --count is 0)")
	fs.Int64Var(&cfg.Count, "count", 0, "total messages per target (0: publish for --duration)")
	fs.IntVar(&cfg.Inflight, "inflight", 64, "unacknowledged publishes per publisher")
	fs.DurationVar(&cfg.Drain, "drain", 120*time.Second, "longest wait for a bridge to catch up after publishing")
	fs.IntVar(&cfg.Window, "window", 0, "throng's bridge window: messages in flight per mapping (0: the bridge's default)")
	fs.DurationVar(&cfg.RemoteDelay, "remote-delay", 0, "hold every chunk to and from the remote this long each way (a round trip of twice it, for both bridges; 0: loopback)")
	targets := fs.String("targets", "throng,mosquitto", "bridges to measure, in order: throng, mosquitto")
	if err := c.parseBench(fs, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usagef("-o must be text or json")
	}
	if err := nodeDone(); err != nil {
		return err
	}
	cfg.Targets = strings.Split(*targets, ",")
	if !*quiet {
		cfg.Progress = c.stderr
	}
	r, err := bench.RunBridge(ctx, cfg)
	if r == nil {
		return err
	}
	if perr := writeReport(c.stdout, *output, r); perr != nil {
		return perr
	}
	return err
}
