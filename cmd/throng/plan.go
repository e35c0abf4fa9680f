package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/tenant"
)

// ---- plans (docs/security.md "Plans and quotas"): named sets of tenant
// limits, for the platform administrator.

var planOrder = []string{"create", "list", "get", "update", "delete"}

// planLimitFlags registers the limit flags of plan create and update.
func planLimitFlags(fs *flag.FlagSet) func() tenant.Limits {
	var lim tenant.Limits
	fs.IntVar(&lim.MaxConnections, "max-connections", 0, "maximum connections (0: unlimited)")
	fs.IntVar(&lim.MaxAddresses, "max-addresses", 0, "maximum addresses (0: unlimited)")
	fs.IntVar(&lim.MaxUsers, "max-users", 0, "maximum users (0: unlimited)")
	fs.IntVar(&lim.MaxMessageSize, "max-message-size", 0, "maximum message size in bytes (0: unlimited)")
	fs.IntVar(&lim.MaxSessions, "max-sessions", 0, "maximum persistent MQTT sessions (0: unlimited)")
	fs.IntVar(&lim.MaxRetained, "max-retained", 0, "maximum retained messages (0: unlimited)")
	var stored config.ByteSize
	fs.TextVar(&stored, "max-stored-bytes", config.ByteSize(0), "maximum stored bytes, e.g. 10GiB (0: unlimited)")
	fs.Float64Var(&lim.MaxMessagesInPerSecond, "max-messages-in-per-second", 0, "messages the tenant may publish per second (0: unlimited)")
	fs.IntVar(&lim.Burst, "burst", 0, "messages at once after a quiet spell (0: one second's worth)")
	fs.Float64Var(&lim.MaxMessagesInPerSecondPerConnection, "max-messages-in-per-second-per-connection", 0, "messages each connection may publish per second (0: unlimited)")
	fs.Float64Var(&lim.MaxMessagesOutPerSecond, "max-messages-out-per-second", 0, "deliveries to the tenant's consumers per second (0: unlimited)")
	return func() tenant.Limits {
		l := lim
		l.MaxStoredBytes = int64(stored)
		return l
	}
}

func planLimitsText(l tenant.Limits) string {
	s := limitsText(l)
	add := func(k string, v float64) {
		if v != 0 {
			if s != "" {
				s += " "
			}
			s += fmt.Sprintf("%s=%g", k, v)
		}
	}
	add("messagesInPerSecond", l.MaxMessagesInPerSecond)
	add("burst", float64(l.Burst))
	add("messagesInPerSecondPerConnection", l.MaxMessagesInPerSecondPerConnection)
	add("messagesOutPerSecond", l.MaxMessagesOutPerSecond)
	return s
}

var planCmds = map[string]command{
	"create": {"plan create NAME [--max-messages-in-per-second N] [--burst N] [--max-addresses N ...]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			lim := planLimitFlags(fs)
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "plan")
				if err != nil {
					return err
				}
				raw, err := cl.call(ctx, "POST", "/api/plans", admin.PlanRequest{Name: name, Limits: lim()}, nil)
				if err != nil {
					return err
				}
				c.done(cl, raw, "plan %s created", name)
				return nil
			}
		}},
	"update": {"plan update NAME [limit flags as create: the plan's limits are replaced]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			lim := planLimitFlags(fs)
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "plan")
				if err != nil {
					return err
				}
				raw, err := cl.call(ctx, "PUT", "/api/plans/"+seg(name), admin.PlanRequest{Name: name, Limits: lim()}, nil)
				if err != nil {
					return err
				}
				c.done(cl, raw, "plan %s updated", name)
				return nil
			}
		}},
	"list": {"plan list", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			return func(ctx context.Context, pos []string) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				var ps []tenant.Plan
				raw, err := cl.call(ctx, "GET", "/api/plans", nil, &ps)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				rows := make([][]string, 0, len(ps))
				for _, p := range ps {
					rows = append(rows, []string{p.Name, orDash(planLimitsText(p.Limits)), ago(p.Created)})
				}
				table(c.stdout, "NAME\tLIMITS\tCREATED", rows)
				return nil
			}
		}},
	"get": {"plan get NAME", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "plan")
				if err != nil {
					return err
				}
				var p tenant.Plan
				raw, err := cl.call(ctx, "GET", "/api/plans/"+seg(name), nil, &p)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				table(c.stdout, "FIELD\tVALUE", [][]string{
					{"name", p.Name}, {"limits", orDash(planLimitsText(p.Limits))}, {"created", ago(p.Created)},
				})
				return nil
			}
		}},
	"delete": {"plan delete NAME", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "plan")
				if err != nil {
					return err
				}
				if _, err := cl.call(ctx, "DELETE", "/api/plans/"+seg(name), nil, nil); err != nil {
					return err
				}
				c.done(cl, nil, "plan %s deleted", name)
				return nil
			}
		}},
}

func (c *cli) plan(ctx context.Context, args []string) error {
	return c.dispatch(ctx, "plan", planCmds, planOrder, args)
}
