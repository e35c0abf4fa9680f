package main

import (
	"context"
	"flag"
	"strings"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/tenant"
)

// Changes without delete (issue 14.5): "tenant update", "address update",
// "user get" and "user update". An update reads the resource, changes
// what the flags given name (flags left out keep their value) and sends
// it back with PUT; the server keeps an address's stored messages.

func init() {
	tenantCmds["update"] = tenantUpdate
	addressCmds["update"] = addressUpdate
	userCmds["get"] = userGet
	userCmds["update"] = userUpdate
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

var tenantUpdate = command{"tenant update NAME [--strict=true|false] [--auto-create 'jobs/#=queue']... [--no-auto-create] [--max-addresses N ...]", "",
	func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
		strict := fs.Bool("strict", false, "refuse undefined address names instead of treating them as topic space")
		var rules multiFlag
		fs.Var(&rules, "auto-create", "auto-create rule PATTERN=TYPE (repeatable; replaces the tenant's rules)")
		noRules := fs.Bool("no-auto-create", false, "remove every auto-create rule")
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
			set := setFlags(fs)
			if set["auto-create"] && *noRules {
				return usagef("--auto-create and --no-auto-create exclude each other")
			}
			var t tenant.Tenant
			if _, err := cl.call(ctx, "GET", "/api/tenants/"+seg(name), nil, &t); err != nil {
				return err
			}
			req := admin.TenantRequest{Name: name, Strict: t.Strict, AutoCreate: t.AutoCreate, Limits: t.Limits}
			if set["strict"] {
				req.Strict = *strict
			}
			switch {
			case *noRules:
				req.AutoCreate = []tenant.AutoCreateRule{}
			case set["auto-create"]:
				req.AutoCreate = nil
				for _, r := range rules {
					pat, typ, ok := strings.Cut(r, "=")
					if !ok || pat == "" || typ == "" {
						return usagef("--auto-create %q: want PATTERN=TYPE, e.g. 'jobs/#=queue'", r)
					}
					req.AutoCreate = append(req.AutoCreate, tenant.AutoCreateRule{Pattern: pat, Type: address.Type(typ)})
				}
			}
			for f, v := range map[string]struct {
				to   *int
				from int
			}{
				"max-connections":  {&req.Limits.MaxConnections, lim.MaxConnections},
				"max-addresses":    {&req.Limits.MaxAddresses, lim.MaxAddresses},
				"max-users":        {&req.Limits.MaxUsers, lim.MaxUsers},
				"max-message-size": {&req.Limits.MaxMessageSize, lim.MaxMessageSize},
				"max-sessions":     {&req.Limits.MaxSessions, lim.MaxSessions},
				"max-retained":     {&req.Limits.MaxRetained, lim.MaxRetained},
			} {
				if set[f] {
					*v.to = v.from
				}
			}
			if set["max-stored-bytes"] {
				req.Limits.MaxStoredBytes = int64(stored)
			}
			raw, err := cl.call(ctx, "PUT", "/api/tenants/"+seg(name), req, nil)
			if err != nil {
				return err
			}
			c.done(cl, raw, "tenant %s updated", name)
			return nil
		}
	}}

var addressUpdate = command{"address update NAME [--tenant T] [--max-messages N] [--max-bytes SIZE] [--max-age DUR] [--dead-letter A] ...", "",
	func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
		ten := tenantFlag(fs)
		maxMsgs := fs.Int64("max-messages", 0, "maximum stored messages (0: unlimited)")
		var maxBytes config.ByteSize
		fs.TextVar(&maxBytes, "max-bytes", config.ByteSize(0), "maximum stored bytes, e.g. 100MiB (0: unlimited)")
		maxAge := fs.Duration("max-age", 0, "maximum message age, e.g. 24h (0: unlimited)")
		maxSize := fs.Int("max-message-size", 0, "maximum message size in bytes (0: unlimited)")
		maxDel := fs.Int("max-deliveries", 0, "deliveries before dead-lettering (0: default 10, -1: unlimited)")
		overflow := fs.String("overflow", "", "when full: reject-new or drop-oldest (topics)")
		deadLetter := fs.String("dead-letter", "", "dead-letter address (empty: the default, DLQ)")
		return func(ctx context.Context, pos []string) error {
			name, err := oneName(pos, "address")
			if err != nil {
				return err
			}
			set := setFlags(fs)
			var a admin.AddressView
			if _, err := cl.call(ctx, "GET", addrPath(*ten, name), nil, &a); err != nil {
				return err
			}
			l := a.Limits
			if set["max-messages"] {
				l.MaxMessages = *maxMsgs
			}
			if set["max-bytes"] {
				l.MaxBytes = int64(maxBytes)
			}
			if set["max-age"] {
				l.MaxAge = address.Duration(*maxAge)
			}
			if set["max-message-size"] {
				l.MaxMessageSize = int32(*maxSize)
			}
			if set["max-deliveries"] {
				l.MaxDeliveries = *maxDel
			}
			if set["overflow"] {
				l.Overflow = address.Overflow(*overflow)
			}
			req := admin.AddressRequest{Name: name, Type: a.Type, Limits: l, DeadLetter: a.DeadLetter, Topic: a.Topic}
			if set["dead-letter"] {
				req.DeadLetter = *deadLetter
			}
			raw, err := cl.call(ctx, "PUT", addrPath(*ten, name), req, nil)
			if err != nil {
				return err
			}
			c.done(cl, raw, "address %s updated in tenant %s", name, *ten)
			return nil
		}
	}}

func permsText(ps []tenant.Permission) string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		acts := make([]string, 0, len(p.Actions))
		for _, a := range p.Actions {
			acts = append(acts, string(a))
		}
		out = append(out, p.Pattern+"="+strings.Join(acts, ","))
	}
	return strings.Join(out, " ")
}

var userGet = command{"user get NAME [--tenant T]", "",
	func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
		ten := tenantFlag(fs)
		return func(ctx context.Context, pos []string) error {
			name, err := oneName(pos, "user")
			if err != nil {
				return err
			}
			var u admin.UserView
			raw, err := cl.call(ctx, "GET", "/api/tenants/"+seg(*ten)+"/users/"+seg(name), nil, &u)
			if err != nil || c.printedJSON(cl, raw) {
				return err
			}
			roles := make([]string, 0, len(u.Roles))
			for _, r := range u.Roles {
				roles = append(roles, string(r))
			}
			table(c.stdout, "FIELD\tVALUE", [][]string{
				{"name", u.Name}, {"tenant", u.Tenant}, {"roles", orDash(strings.Join(roles, ","))},
				{"permissions", orDash(permsText(u.Permissions))}, {"created", ago(u.Created)},
			})
			return nil
		}
	}}

var userUpdate = command{"user update NAME [--tenant T] [--user-password P] [--role R]... [--permission 'orders/#=send,receive']... [--no-permissions]", "",
	func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
		ten := tenantFlag(fs)
		// --password is the administrator's, as in every command; the
		// user's new one has a name of its own (as in user create).
		pw := fs.String("user-password", "", "the user's new password")
		var roles, perms multiFlag
		fs.Var(&roles, "role", "role (repeatable; replaces the user's roles)")
		fs.Var(&perms, "permission", "permission PATTERN=ACTION,... (repeatable; replaces the user's permissions)")
		noPerms := fs.Bool("no-permissions", false, "remove every permission")
		return func(ctx context.Context, pos []string) error {
			name, err := oneName(pos, "user")
			if err != nil {
				return err
			}
			set := setFlags(fs)
			if set["permission"] && *noPerms {
				return usagef("--permission and --no-permissions exclude each other")
			}
			var req admin.UserUpdateRequest
			if set["user-password"] {
				if *pw == "" {
					return usagef("--user-password must not be empty")
				}
				req.Password = pw
			}
			if set["role"] {
				rs := make([]tenant.Role, 0, len(roles))
				for _, r := range roles {
					rs = append(rs, tenant.Role(r))
				}
				req.Roles = &rs
			}
			if set["permission"] || *noPerms {
				ps := []tenant.Permission{}
				for _, p := range perms {
					pat, acts, ok := strings.Cut(p, "=")
					if !ok || pat == "" || acts == "" {
						return usagef("--permission %q: want PATTERN=ACTION,..., e.g. 'orders/#=send,receive'", p)
					}
					perm := tenant.Permission{Pattern: pat}
					for _, a := range strings.Split(acts, ",") {
						perm.Actions = append(perm.Actions, tenant.Action(strings.TrimSpace(a)))
					}
					ps = append(ps, perm)
				}
				req.Permissions = &ps
			}
			if req.Password == nil && req.Roles == nil && req.Permissions == nil {
				return usagef("nothing to change: give --user-password, --role, --permission or --no-permissions")
			}
			raw, err := cl.call(ctx, "PUT", "/api/tenants/"+seg(*ten)+"/users/"+seg(name), req, nil)
			if err != nil {
				return err
			}
			what := []string{}
			if req.Password != nil {
				what = append(what, "password")
			}
			if req.Roles != nil {
				what = append(what, "roles")
			}
			if req.Permissions != nil {
				what = append(what, "permissions")
			}
			c.done(cl, raw, "user %s updated in tenant %s (%s); its open connections are closed", name, *ten, strings.Join(what, ", "))
			return nil
		}
	}}
