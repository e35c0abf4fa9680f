package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/throngmq/throng/internal/app"
	"github.com/throngmq/throng/internal/config"
)

// stdin is where --password-stdin reads (tests replace it).
var stdin io.Reader = os.Stdin

const adminUsage = `Usage:
  throng admin reset-password [--config FILE] [--data-dir DIR] [--password-stdin]

Local commands on a node's data directory; the node must be stopped.
`

// admin runs the local administration commands: they work on the data
// directory itself, not through the admin API.
func (c *cli) admin(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("admin needs a subcommand\n%s", strings.TrimRight(adminUsage, "\n"))
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(c.stdout, adminUsage)
		return nil
	case "reset-password":
		return c.resetPassword(ctx, args[1:])
	}
	return usagef("unknown command \"admin\" %q (want reset-password)", args[0])
}

// resetPassword gives the platform administrator a new password (issue 14
// item 10): the recovery when the one-time generated password is lost,
// e.g. printed by a first start that then failed. It opens the data
// directory itself, so it refuses while a node holds it (exit status 3).
func (c *cli) resetPassword(ctx context.Context, args []string) error {
	fs := c.newFlagSet("admin reset-password", "admin reset-password [--config FILE] [--data-dir DIR] [--password-stdin]")
	file := fs.String("config", "", "YAML configuration file, for its dataDir and engine settings (env "+config.EnvConfigFile+")")
	dataDir := fs.String("data-dir", "", "the node's data directory (default: the configuration's, env THRONG_DATA_DIR, else ./data)")
	fromStdin := fs.Bool("password-stdin", false, "read the new password from the first line of standard input instead of generating one")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if *file == "" {
		*file = c.env.get(config.EnvConfigFile)
	}
	cfg, err := config.Build(*file, c.env, nil)
	if err != nil {
		return err
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	pw := ""
	if *fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading the password from standard input: %w", err)
		}
		if pw = strings.TrimRight(line, "\r\n"); pw == "" {
			return usagef("--password-stdin: standard input holds no password")
		}
	}
	got, err := app.ResetAdminPassword(ctx, cfg, pw, nil)
	var locked *app.DataDirLockedError
	switch {
	case errors.As(err, &locked):
		return fmt.Errorf("%w; stop that node first", err)
	case errors.Is(err, app.ErrAdminPasswordConfigured):
		return usagef("%v", err)
	case err != nil:
		return err
	}
	if pw == "" {
		fmt.Fprintf(c.stdout, "new admin password: %s\n(user %q of tenant %q; shown only this once, stored hashed)\n", got, app.AdminUser, "default")
		return nil
	}
	fmt.Fprintf(c.stdout, "admin password set (user %q of tenant %q)\n", app.AdminUser, "default")
	return nil
}
