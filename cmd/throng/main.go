// Command throng is the throng messaging platform: `throng serve` runs a
// node; the other subcommands administer a running node through its admin
// REST API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/throngmq/throng/internal/app"
	"github.com/throngmq/throng/internal/config"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the operation failed (API error, start-up failure)
	exitUsage = 2 // bad command line or configuration
	exitInUse = 3 // serve: the data directory is held by another node
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default behaviour so that a
		// second one stops the process at once.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `throng — IoT messaging platform

Usage:
  throng serve [--config FILE] [--check] [setting flags]   run a node
  throng tenant  create|list|get|delete ...                  manage tenants
  throng plan    create|list|get|update|delete ...           manage plans (named tenant limits)
  throng address create|list|get|delete ... [--tenant T]     manage addresses
  throng address purge|peek|move NAME [--tenant T]           a queue's messages: remove, look at, move
  throng connection list|get|close [--tenant T]              live connections
  throng anomalies [--tenant T]                              error makers, silent devices, top talkers
  throng user    create|list|delete ... [--tenant T]         manage users
  throng bridge  create|list|get|delete ... [--tenant T]     manage bridges to other brokers
  throng device  create|list|get|delete ... --tenant T       manage devices (Hono registry, /v1)
  throng credential set|list --tenant T --device D           manage a device's credentials
  throng status                                              show a node's status
  throng cluster remove-node NAME                            remove a stopped node for good
  throng admin   reset-password [--data-dir DIR]             new admin password, node stopped (local)
  throng hono    app [-H H -P P -u U -p P] consume|command   Hono's command line client (app)
  throng bench   mqtt|amqp|conns|table [flags]               load and comparison tool
  throng soak    [--duration 1h] [flags]                     crash, fault and soak checker
  throng version                                             print the version

Run 'throng COMMAND -h' for a command's flags. The admin commands talk to
--server (env THRONG_SERVER, default http://localhost:8161) as --user
(THRONG_USER, default admin) with --password (THRONG_PASSWORD), and print
aligned tables, or JSON with -o json.
`

// env is the process environment as a lookup.
type env []string

func (e env) get(key string) string {
	for i := len(e) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(e[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// cli carries what every command needs.
type cli struct {
	env            env
	stdout, stderr io.Writer
}

// usageError is a command-line mistake; it exits with exitUsage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// flagError is a flag mistake in command cmd ("tenant list"); it exits
// with exitUsage and points to the command's -h.
type flagError struct{ msg, cmd string }

func (e flagError) Error() string { return e.msg }

// run executes the command line and returns the exit code. It is main
// without the process: tests call it in-process.
func run(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	c := &cli{env: env(environ), stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = c.serve(ctx, rest)
	case "tenant", "tenants":
		err = c.tenant(ctx, rest)
	case "plan", "plans":
		err = c.plan(ctx, rest)
	case "address", "addresses":
		err = c.address(ctx, rest)
	case "user", "users":
		err = c.user(ctx, rest)
	case "bridge", "bridges":
		err = c.bridge(ctx, rest)
	case "connection", "connections":
		err = c.connection(ctx, rest)
	case "anomalies", "anomaly":
		err = c.anomalies(ctx, rest)
	case "device", "devices":
		err = c.device(ctx, rest)
	case "credential", "credentials":
		err = c.credential(ctx, rest)
	case "status":
		err = c.status(ctx, rest)
	case "cluster":
		err = c.cluster(ctx, rest)
	case "admin":
		err = c.admin(ctx, rest)
	case "hono":
		err = c.hono(ctx, rest)
	case "bench":
		err = c.bench(ctx, rest)
	case "soak":
		err = c.soak(ctx, rest)
	case "version", "--version":
		fmt.Fprintf(stdout, "throng %s (%s, %s/%s)\n", app.BuildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = usagef("unknown command %q", cmd)
	}
	return c.exit(err)
}

func (c *cli) exit(err error) int {
	var ue usageError
	var fe flagError
	var ae *apiError
	var locked *app.DataDirLockedError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &fe):
		fmt.Fprintf(c.stderr, "throng: %s\nRun 'throng %s -h' for its flags.\n", fe.msg, fe.cmd)
		return exitUsage
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "throng: %s\nRun 'throng help' for usage.\n", ue.msg)
		return exitUsage
	case errors.Is(err, config.ErrInvalid):
		// One problem a line (config.Build reports them all).
		msg := err.Error()
		if strings.Contains(msg, "\n") {
			msg = strings.Replace(msg, config.ErrInvalid.Error()+": ", config.ErrInvalid.Error()+":\n  ", 1)
			msg = strings.ReplaceAll(msg, "\n", "\n  ")
			msg = strings.Replace(msg, ":\n    ", ":\n  ", 1)
		}
		fmt.Fprintf(c.stderr, "throng: %s\n", msg)
		return exitUsage
	case errors.As(err, &locked):
		fmt.Fprintf(c.stderr, "throng: %v\n", err)
		return exitInUse
	case errors.As(err, &ae):
		fmt.Fprintf(c.stderr, "throng: %s (%s, HTTP %d)\n", ae.Message, ae.Code, ae.Status)
		return exitError
	}
	fmt.Fprintf(c.stderr, "throng: %v\n", err)
	return exitError
}

// newFlagSet returns a flag set whose errors are returned, not fatal, and
// whose help (-h) goes to stderr. The flag package's own output is
// discarded: it would print a mistake, then the whole usage, and exit
// the mistake again; parseArgs returns it once, with a hint to -h.
func (c *cli) newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "Usage: throng %s\n\nFlags:\n", synopsis)
		fs.SetOutput(c.stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseArgs parses flags that may come before, between or after the
// positional arguments ("address create orders --type queue") and returns
// the positional ones. After "--" everything is positional.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	// The usage text only for -h: a mistake is reported once, by exit.
	usage := fs.Usage
	fs.Usage = func() {}
	defer func() { fs.Usage = usage }()
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				usage()
				return nil, err
			}
			return nil, flagError{msg: err.Error(), cmd: fs.Name()}
		}
		rest := fs.Args()
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// secretVar registers a string flag holding a secret (a password) whose
// default, def, may come from the environment. The flag package prints a
// flag's default in the usage text (-h, or any flag mistake): a secret's
// never is, nor its value (secretValue.String is always empty).
func secretVar(fs *flag.FlagSet, p *string, name, def, usage string) {
	*p = def
	fs.Var(secretValue{p}, name, usage)
}

type secretValue struct{ p *string }

func (s secretValue) String() string     { return "" }
func (s secretValue) Set(v string) error { *s.p = v; return nil }

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
