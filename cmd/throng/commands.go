package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/tenant"
)

// command is one "noun verb" admin command.
type command struct {
	synopsis string
	// adminPasswordFlag renames the administrator's --password flag, for
	// commands whose own --password means something else.
	adminPasswordFlag string
	// flags registers the command's own flags and returns the action,
	// called with the positional arguments once flags are parsed.
	flags func(c *cli, fs *flag.FlagSet, cl *client) func(ctx context.Context, pos []string) error
}

func (c *cli) dispatch(ctx context.Context, noun string, cmds map[string]command, order []string, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		var b strings.Builder
		fmt.Fprintf(&b, "Usage:\n")
		for _, v := range order {
			fmt.Fprintf(&b, "  throng %s\n", cmds[v].synopsis)
		}
		if len(args) == 0 {
			return usagef("%s needs a subcommand\n%s", noun, strings.TrimRight(b.String(), "\n"))
		}
		fmt.Fprint(c.stdout, b.String())
		return nil
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		return usagef("unknown command %q %q (want one of %s)", noun, args[0], strings.Join(order, ", "))
	}
	fs := c.newFlagSet(noun+" "+args[0], cmd.synopsis)
	pwFlag := cmd.adminPasswordFlag
	if pwFlag == "" {
		pwFlag = "password"
	}
	cl := c.clientFlags(fs, pwFlag)
	action := cmd.flags(c, fs, cl)
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	if err := cl.check(); err != nil {
		return err
	}
	return action(ctx, pos)
}

// oneName checks that exactly one positional argument, a name, was given.
func oneName(pos []string, what string) (string, error) {
	switch len(pos) {
	case 0:
		return "", usagef("missing the %s name", what)
	case 1:
		return pos[0], nil
	}
	return "", usagef("unexpected argument %q", pos[1])
}

func noArgs(pos []string) error {
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return nil
}

// table writes aligned columns.
func table(w io.Writer, header string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// done reports a change: a sentence in text mode, the resource in JSON.
func (c *cli) done(cl *client, raw []byte, format string, args ...any) {
	if cl.output == "json" {
		if len(raw) == 0 {
			raw, _ = json.Marshal(map[string]string{"result": fmt.Sprintf(format, args...)})
		}
		fmt.Fprintln(c.stdout, strings.TrimRight(string(raw), "\n"))
		return
	}
	fmt.Fprintf(c.stdout, format+"\n", args...)
}

// printedJSON prints the answer as is in JSON mode and reports whether it
// did.
func (c *cli) printedJSON(cl *client, raw []byte) bool {
	if cl.output != "json" {
		return false
	}
	fmt.Fprintln(c.stdout, strings.TrimRight(string(raw), "\n"))
	return true
}

// ---- tenants

var tenantOrder = []string{"create", "list", "get", "update", "delete"}

var tenantCmds = map[string]command{
	"create": {"tenant create NAME [--strict] [--auto-create 'jobs/#=queue']... [--max-addresses N ...]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			strict := fs.Bool("strict", false, "refuse undefined address names instead of treating them as topic space")
			var rules multiFlag
			fs.Var(&rules, "auto-create", "auto-create rule PATTERN=TYPE, e.g. 'jobs/#=queue' (repeatable)")
			var lim tenant.Limits
			fs.IntVar(&lim.MaxConnections, "max-connections", 0, "maximum connections (0: unlimited)")
			fs.IntVar(&lim.MaxAddresses, "max-addresses", 0, "maximum addresses (0: unlimited)")
			fs.IntVar(&lim.MaxUsers, "max-users", 0, "maximum users (0: unlimited)")
			fs.IntVar(&lim.MaxMessageSize, "max-message-size", 0, "maximum message size in bytes (0: unlimited)")
			fs.IntVar(&lim.MaxSessions, "max-sessions", 0, "maximum persistent MQTT sessions (0: unlimited)")
			fs.IntVar(&lim.MaxRetained, "max-retained", 0, "maximum retained messages (0: unlimited)")
			var stored config.ByteSize
			fs.TextVar(&stored, "max-stored-bytes", config.ByteSize(0), "maximum stored bytes, e.g. 10GiB (0: unlimited)")
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "tenant")
				if err != nil {
					return err
				}
				req := admin.TenantRequest{Name: name, Strict: *strict, Limits: lim}
				req.Limits.MaxStoredBytes = int64(stored)
				for _, r := range rules {
					pat, typ, ok := strings.Cut(r, "=")
					if !ok || pat == "" || typ == "" {
						return usagef("--auto-create %q: want PATTERN=TYPE, e.g. 'jobs/#=queue'", r)
					}
					req.AutoCreate = append(req.AutoCreate, tenant.AutoCreateRule{Pattern: pat, Type: address.Type(typ)})
				}
				raw, err := cl.call(ctx, "POST", "/api/tenants", req, nil)
				if err != nil {
					return err
				}
				c.done(cl, raw, "tenant %s created", name)
				return nil
			}
		}},
	"list": {"tenant list", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			return func(ctx context.Context, pos []string) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				var ts []tenant.Tenant
				raw, err := cl.call(ctx, "GET", "/api/tenants", nil, &ts)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				rows := make([][]string, 0, len(ts))
				for _, t := range ts {
					rows = append(rows, []string{t.Name, fmt.Sprint(t.Strict), orDash(rulesText(t.AutoCreate)), orDash(limitsText(t.Limits)), ago(t.Created)})
				}
				table(c.stdout, "NAME\tSTRICT\tAUTO-CREATE\tLIMITS\tCREATED", rows)
				return nil
			}
		}},
	"get": {"tenant get NAME", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "tenant")
				if err != nil {
					return err
				}
				var t tenant.Tenant
				raw, err := cl.call(ctx, "GET", "/api/tenants/"+seg(name), nil, &t)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				table(c.stdout, "FIELD\tVALUE", [][]string{
					{"name", t.Name}, {"strict", fmt.Sprint(t.Strict)},
					{"autoCreate", orDash(rulesText(t.AutoCreate))}, {"limits", orDash(limitsText(t.Limits))},
					{"created", ago(t.Created)},
				})
				return nil
			}
		}},
	"delete": {"tenant delete NAME", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "tenant")
				if err != nil {
					return err
				}
				if _, err := cl.call(ctx, "DELETE", "/api/tenants/"+seg(name), nil, nil); err != nil {
					return err
				}
				c.done(cl, nil, "tenant %s deleted", name)
				return nil
			}
		}},
}

func rulesText(rs []tenant.AutoCreateRule) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		parts = append(parts, r.Pattern+"="+string(r.Type))
	}
	return strings.Join(parts, " ")
}

func limitsText(l tenant.Limits) string {
	var parts []string
	add := func(k string, v int64) {
		if v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
	}
	add("connections", int64(l.MaxConnections))
	add("addresses", int64(l.MaxAddresses))
	add("users", int64(l.MaxUsers))
	add("messageSize", int64(l.MaxMessageSize))
	add("sessions", int64(l.MaxSessions))
	add("retained", int64(l.MaxRetained))
	if l.MaxStoredBytes != 0 {
		parts = append(parts, "storedBytes="+config.ByteSize(l.MaxStoredBytes).String())
	}
	return strings.Join(parts, " ")
}

func (c *cli) tenant(ctx context.Context, args []string) error {
	return c.dispatch(ctx, "tenant", tenantCmds, tenantOrder, args)
}

// ---- addresses

var addressOrder = []string{"create", "list", "get", "update", "delete"}

func tenantFlag(fs *flag.FlagSet) *string {
	return fs.String("tenant", tenant.Default, "tenant")
}

func addrPath(ten, name string) string {
	return "/api/tenants/" + seg(ten) + "/addresses/" + seg(name)
}

var addressCmds = map[string]command{
	"create": {"address create NAME --type TYPE [--tenant T] [--max-messages N] [--max-bytes SIZE] [--max-age DUR] ...", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			typ := fs.String("type", "", "address type: anycast, multicast, queue, topic or subscription (required)")
			var lim address.Limits
			fs.Int64Var(&lim.MaxMessages, "max-messages", 0, "maximum stored messages (0: unlimited)")
			var maxBytes config.ByteSize
			fs.TextVar(&maxBytes, "max-bytes", config.ByteSize(0), "maximum stored bytes, e.g. 100MiB (0: unlimited)")
			maxAge := fs.Duration("max-age", 0, "maximum message age, e.g. 24h (0: unlimited)")
			maxSize := fs.Int("max-message-size", 0, "maximum message size in bytes (0: unlimited)")
			fs.IntVar(&lim.MaxDeliveries, "max-deliveries", 0, "deliveries before dead-lettering (0: default 10, -1: unlimited)")
			overflow := fs.String("overflow", "", "when full: reject-new or drop-oldest (topics)")
			deadLetter := fs.String("dead-letter", "", "dead-letter address (default DLQ)")
			topic := fs.String("topic", "", "for a subscription: the topic it subscribes to")
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "address")
				if err != nil {
					return err
				}
				if *typ == "" {
					return usagef("--type is required (anycast, multicast, queue, topic or subscription)")
				}
				lim.MaxBytes = int64(maxBytes)
				lim.MaxAge = address.Duration(*maxAge)
				lim.MaxMessageSize = int32(*maxSize)
				lim.Overflow = address.Overflow(*overflow)
				req := admin.AddressRequest{Name: name, Type: address.Type(*typ), Limits: lim, DeadLetter: *deadLetter, Topic: *topic}
				raw, err := cl.call(ctx, "POST", "/api/tenants/"+seg(*ten)+"/addresses", req, nil)
				if err != nil {
					return err
				}
				c.done(cl, raw, "address %s (%s) created in tenant %s", name, *typ, *ten)
				return nil
			}
		}},
	"list": {"address list [--tenant T]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			return func(ctx context.Context, pos []string) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				var as []admin.AddressView
				raw, err := cl.call(ctx, "GET", "/api/tenants/"+seg(*ten)+"/addresses?stats=true", nil, &as)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				rows := make([][]string, 0, len(as))
				for _, a := range as {
					backlog, consumers := "-", "-"
					if a.Stats != nil {
						consumers = fmt.Sprint(a.Stats.Consumers)
						if a.Type.Stored() {
							backlog = fmt.Sprint(a.Stats.Backlog)
						}
					}
					rows = append(rows, []string{a.Name, string(a.Type), backlog, consumers, ago(a.Created)})
				}
				table(c.stdout, "NAME\tTYPE\tBACKLOG\tCONSUMERS\tCREATED", rows)
				return nil
			}
		}},
	"get": {"address get NAME [--tenant T]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "address")
				if err != nil {
					return err
				}
				var a admin.AddressView
				raw, err := cl.call(ctx, "GET", addrPath(*ten, name), nil, &a)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				rows := [][]string{{"name", a.Name}, {"type", string(a.Type)}}
				if a.Type == address.Subscription {
					rows = append(rows, []string{"topic", orDash(a.Topic)})
				}
				if a.Type.Stored() {
					dl := a.DeadLetter
					if dl == "" {
						dl = address.DefaultDeadLetter + " (default)"
					}
					rows = append(rows, []string{"deadLetter", dl})
				}
				rows = append(rows, []string{"limits", orDash(addrLimitsText(a.Type, a.Limits))}, []string{"created", ago(a.Created)})
				if a.AutoCreated {
					rows = append(rows, []string{"autoCreated", "true"})
				}
				if a.Stats != nil {
					rows = append(rows,
						[]string{"backlog", fmt.Sprint(a.Stats.Backlog)}, []string{"bytes", config.ByteSize(a.Stats.Bytes).String()},
						[]string{"consumers", fmt.Sprint(a.Stats.Consumers)},
						[]string{"messagesIn", fmt.Sprint(a.Stats.MessagesIn)}, []string{"messagesOut", fmt.Sprint(a.Stats.MessagesOut)},
						[]string{"messagesRejected", fmt.Sprint(a.Stats.MessagesRejected)},
						[]string{"bytesIn", config.ByteSize(a.Stats.BytesIn).String()}, []string{"bytesOut", config.ByteSize(a.Stats.BytesOut).String()})
				}
				table(c.stdout, "FIELD\tVALUE", rows)
				return nil
			}
		}},
	"delete": {"address delete NAME [--tenant T] [--force]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			force := fs.Bool("force", false, "delete also while consumers are attached (they are detached with an error)")
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "address")
				if err != nil {
					return err
				}
				path := addrPath(*ten, name)
				if *force {
					path += "?force=true"
				}
				if _, err := cl.call(ctx, "DELETE", path, nil, nil); err != nil {
					return err
				}
				c.done(cl, nil, "address %s deleted from tenant %s", name, *ten)
				return nil
			}
		}},
}

// addrLimitsText shows an address's limits, with the defaults that
// apply where none is set.
func addrLimitsText(t address.Type, l address.Limits) string {
	var parts []string
	if l.MaxMessages != 0 {
		parts = append(parts, fmt.Sprintf("maxMessages=%d", l.MaxMessages))
	}
	if l.MaxBytes != 0 {
		parts = append(parts, "maxBytes="+config.ByteSize(l.MaxBytes).String())
	}
	if l.MaxAge != 0 {
		parts = append(parts, "maxAge="+time.Duration(l.MaxAge).String())
	}
	if l.MaxMessageSize != 0 {
		parts = append(parts, "maxMessageSize="+config.ByteSize(l.MaxMessageSize).String())
	}
	switch {
	case l.MaxDeliveries > 0:
		parts = append(parts, fmt.Sprintf("maxDeliveries=%d", l.MaxDeliveries))
	case l.MaxDeliveries < 0:
		parts = append(parts, "maxDeliveries=unlimited")
	case t == address.Queue || t == address.Subscription:
		parts = append(parts, fmt.Sprintf("maxDeliveries=%d (default)", address.DefaultMaxDeliveries))
	}
	if l.Overflow != "" {
		parts = append(parts, "overflow="+string(l.Overflow))
	}
	return strings.Join(parts, " ")
}

func (c *cli) address(ctx context.Context, args []string) error {
	return c.dispatch(ctx, "address", addressCmds, addressOrder, args)
}

// ---- users

var userOrder = []string{"create", "list", "get", "update", "delete"}

var userCmds = map[string]command{
	"create": {"user create NAME --user-password P [--tenant T] [--role app]... [--permission 'orders/#=send,receive']...", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			// --password is the administrator's, as in every command; the
			// new user's has a name of its own (issue 14 item 12).
			// --admin-password, its name here before, still works.
			secretVar(fs, &cl.password, "admin-password", cl.password, "same as --password")
			pw := fs.String("user-password", "", "the new user's password (required)")
			var roles, perms multiFlag
			fs.Var(&roles, "role", "role: tenant-admin, operator or app; admin only in tenant default (repeatable; default app)")
			fs.Var(&perms, "permission", "permission PATTERN=ACTION,..., e.g. 'orders/#=send,receive' (repeatable)")
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "user")
				if err != nil {
					return err
				}
				newPW := *pw
				if newPW == "" {
					return usagef("--user-password is required: the new user's password (--password is the administrator's, as in every command)")
				}
				req := admin.UserRequest{Name: name, Password: newPW, Roles: []tenant.Role{}, Permissions: []tenant.Permission{}}
				if len(roles) == 0 {
					roles = multiFlag{string(tenant.RoleApp)}
				}
				for _, r := range roles {
					req.Roles = append(req.Roles, tenant.Role(r))
				}
				for _, p := range perms {
					pat, acts, ok := strings.Cut(p, "=")
					if !ok || pat == "" || acts == "" {
						return usagef("--permission %q: want PATTERN=ACTION,..., e.g. 'orders/#=send,receive'", p)
					}
					perm := tenant.Permission{Pattern: pat}
					for _, a := range strings.Split(acts, ",") {
						perm.Actions = append(perm.Actions, tenant.Action(strings.TrimSpace(a)))
					}
					req.Permissions = append(req.Permissions, perm)
				}
				raw, err := cl.call(ctx, "POST", "/api/tenants/"+seg(*ten)+"/users", req, nil)
				if err != nil {
					return err
				}
				c.done(cl, raw, "user %s created in tenant %s", name, *ten)
				return nil
			}
		}},
	"list": {"user list [--tenant T]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			return func(ctx context.Context, pos []string) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				var us []admin.UserView
				raw, err := cl.call(ctx, "GET", "/api/tenants/"+seg(*ten)+"/users", nil, &us)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				rows := make([][]string, 0, len(us))
				for _, u := range us {
					var roles, perms []string
					for _, r := range u.Roles {
						roles = append(roles, string(r))
					}
					for _, p := range u.Permissions {
						acts := make([]string, 0, len(p.Actions))
						for _, a := range p.Actions {
							acts = append(acts, string(a))
						}
						perms = append(perms, p.Pattern+"="+strings.Join(acts, ","))
					}
					rows = append(rows, []string{u.Name, orDash(strings.Join(roles, ",")), orDash(strings.Join(perms, " ")), ago(u.Created)})
				}
				table(c.stdout, "NAME\tROLES\tPERMISSIONS\tCREATED", rows)
				return nil
			}
		}},
	"delete": {"user delete NAME [--tenant T]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "user")
				if err != nil {
					return err
				}
				if _, err := cl.call(ctx, "DELETE", "/api/tenants/"+seg(*ten)+"/users/"+seg(name), nil, nil); err != nil {
					return err
				}
				c.done(cl, nil, "user %s deleted from tenant %s", name, *ten)
				return nil
			}
		}},
}

func (c *cli) user(ctx context.Context, args []string) error {
	return c.dispatch(ctx, "user", userCmds, userOrder, args)
}

// ---- status

func (c *cli) status(ctx context.Context, args []string) error {
	fs := c.newFlagSet("status", "status")
	cl := c.clientFlags(fs, "password")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if err := cl.check(); err != nil {
		return err
	}
	var st admin.Status
	raw, err := cl.call(ctx, "GET", "/api/status", nil, &st)
	if err != nil || c.printedJSON(cl, raw) {
		return err
	}
	ready := "yes"
	if !st.Ready {
		ready = "no"
	}
	table(c.stdout, "SERVER\t"+cl.server, [][]string{
		{"version", st.Version}, {"ready", ready}, {"uptime", st.Uptime},
		{"tenants", fmt.Sprint(st.Tenants)}, {"addresses", fmt.Sprint(st.Addresses)}, {"users", fmt.Sprint(st.Users)},
	})
	printCluster(c.stdout, st.Cluster) // cluster_status.go
	return nil
}
