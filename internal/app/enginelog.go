package app

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
)

// engineLogFilter wraps the handler of the engine's log (issue 14 item
// 8): nats-server's start-up banner — its version, the JetStream ASCII
// art, its settings, some 25 lines — and its shutdown steps are debug
// lines here, not info lines on every start and stop; its warning that
// "maximum payloads over 8.00 MB are generally discouraged" is debug too:
// throng sets that maximum itself, on purpose, so that a large message
// fits (docs/router.md, "Large messages"), and an operator can do nothing
// about the warning; so is its warning that solicited routes' TLS
// certificates "will not be verified": throng verifies them itself, so
// that the CA can be reloaded (routeTLS). Everything else passes
// unchanged.
type engineLogFilter struct {
	slog.Handler
	ready *atomic.Bool // the engine said "Server is ready": the banner is over
}

func newEngineLogFilter(h slog.Handler) *engineLogFilter {
	return &engineLogFilter{Handler: h, ready: new(atomic.Bool)}
}

// engineQuiet are engine messages that are always debug lines.
var engineQuiet = map[string]bool{
	"Initiating Shutdown...":           true,
	"Initiating JetStream Shutdown...": true,
	"JetStream Shutdown":               true,
	"Server Exiting..":                 true,
	"Server is ready":                  true,
}

func (f *engineLogFilter) Handle(ctx context.Context, r slog.Record) error {
	demote := engineQuiet[r.Message] ||
		(r.Level == slog.LevelInfo && !f.ready.Load()) || // the banner
		(r.Level == slog.LevelWarn && strings.HasPrefix(r.Message, "Maximum payloads over")) ||
		(r.Level == slog.LevelWarn && strings.HasPrefix(r.Message, "TLS certificate chain and hostname of solicited routes will not be verified"))
	if r.Message == "Server is ready" {
		f.ready.Store(true)
	}
	if demote && r.Level > slog.LevelDebug {
		if !f.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return f.Handler.Handle(ctx, r)
}

func (f *engineLogFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return &engineLogFilter{Handler: f.Handler.WithAttrs(as), ready: f.ready}
}

func (f *engineLogFilter) WithGroup(name string) slog.Handler {
	return &engineLogFilter{Handler: f.Handler.WithGroup(name), ready: f.ready}
}
