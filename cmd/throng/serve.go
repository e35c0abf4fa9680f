package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/throngmq/throng/internal/app"
	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/config"
)

// serve runs a node until ctx ends (SIGINT or SIGTERM), then shuts it down
// gracefully. With --check it only validates and prints the effective
// configuration.
func (c *cli) serve(ctx context.Context, args []string) error {
	fs := c.newFlagSet("serve", "serve [--config FILE] [--check] [setting flags]")
	file := fs.String("config", "", "YAML configuration file (env "+config.EnvConfigFile+")")
	check := fs.Bool("check", false, "validate the configuration and the data directory, print the configuration (password redacted) and exit; lists every problem")
	fl := config.BindFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("serve takes no arguments (got %q)", pos[0])
	}
	if *file == "" {
		*file = c.env.get(config.EnvConfigFile)
	}
	var checks []func(*config.Config) error
	if *check {
		// Only --check: a starting node checks its data directory itself
		// (app), and reports that as a start-up failure.
		checks = append(checks, func(cfg *config.Config) error { return app.CheckDataDir(cfg.DataDir) })
	}
	cfg, err := config.Build(*file, c.env, fl, checks...)
	if err != nil {
		return err
	}
	if *check {
		out, err := cfg.YAML()
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "# configuration is valid\n%s", out)
		return nil
	}
	logger, err := app.NewLogger(cfg.Log, c.stderr)
	if err != nil {
		return err
	}
	if f := c.env.get(clock.EnvOffsetFile); f != "" {
		// Debug only: the soak harness's wall-clock jumps (internal/clock).
		if err := clock.Watch(ctx, f, logger); err != nil {
			return err
		}
	}
	a, err := app.New(cfg, app.WithLogger(logger), app.WithStdout(c.stdout))
	if err != nil {
		return err
	}
	// SIGHUP re-reads the TLS files and the settings that can change on a
	// running node (app.Reload; docs/security.md, "Reloading").
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		select { // a signal before the node is ready waits for it
		case <-ctx.Done():
			return
		case <-a.Ready():
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			logger.Info("SIGHUP: reloading", "component", "app")
			ncfg, err := config.Build(*file, c.env, fl)
			if err != nil {
				logger.Warn("reload: the configuration does not load; only the TLS files are read again", "component", "app", "err", err)
				ncfg = nil
			}
			if err := a.Reload(ncfg); err != nil {
				logger.Warn("reload: done with errors", "component", "app", "err", err)
			} else {
				logger.Info("reload: done", "component", "app")
			}
		}
	}()
	return a.Run(ctx)
}
