package main

import (
	"context"

	"github.com/throngmq/throng/internal/bench"
)

// benchHTTP is 'throng bench http': devices POSTing telemetry to Hono's
// HTTP adapter on kept-alive connections (internal/bench/http.go).
func (c *cli) benchHTTP(ctx context.Context, args []string) error {
	fs := c.newFlagSet("bench http", "bench http --user AUTH-ID@TENANT --password P [--url URL] [--workers N] [--qos 0|1] [--rate N] [flags]")
	var cfg bench.HTTPConfig
	b := c.benchCommonFlags(fs)
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080", "base URL of the HTTP adapter")
	fs.StringVar(&cfg.Endpoint, "endpoint", "telemetry", "telemetry or event")
	fs.IntVar(&cfg.QoS, "qos", 0, "qos-level of telemetry: 0 (answered at once) or 1 (answered once an application accepted: run one on telemetry/TENANT)")
	fs.IntVar(&cfg.Workers, "workers", 16, "concurrent requests, each worker on its own kept-alive connection")
	fs.IntVar(&cfg.Size, "size", 64, "body bytes")
	fs.Float64Var(&cfg.Rate, "rate", 0, "total requests per second (0: as fast as answered)")
	fs.DurationVar(&cfg.Duration, "duration", 10e9, "how long to send (when --count is 0)")
	fs.Int64Var(&cfg.Count, "count", 0, "total requests (0: use --duration)")
	if err := c.parseBench(fs, args); err != nil {
		return err
	}
	if err := b.check(); err != nil {
		return err
	}
	cfg.User, cfg.Password, cfg.Label, cfg.Progress = *b.user, *b.password, *b.label, b.progress(c.stderr)
	stop, err := b.profile()
	if err != nil {
		return err
	}
	r, err := bench.RunHTTP(ctx, cfg)
	stop()
	if r == nil {
		return err
	}
	if perr := c.printResult(b, r); perr != nil {
		return perr
	}
	return err
}
