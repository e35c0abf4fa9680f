package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/conns"
)

// ---- connections (docs/admin-api.md "Connections"): the live
// connections of a node, one in detail, closing one. With --tenant the
// tenant's paths are used (tenant administrators and operators);
// without, the platform administrator's /api/connections.

var connectionOrder = []string{"list", "get", "close"}

// connBase is the connections path for --tenant (empty: all tenants).
func connBase(ten string) string {
	if ten == "" {
		return "/api/connections"
	}
	return "/api/tenants/" + seg(ten) + "/connections"
}

func connTenantFlag(fs *flag.FlagSet) *string {
	return fs.String("tenant", "", "the tenant's connections (its administrators and operators); empty: every tenant's (platform administrator)")
}

// rate shows messages per second.
func rate(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

var connectionCmds = map[string]command{
	"list": {"connection list [--tenant T] [--protocol amqp|mqtt3|mqtt5] [--of-user U] [--device D] [--client-id ID] [--limit N] [--after ID]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := connTenantFlag(fs)
			proto := fs.String("protocol", "", "only this protocol: amqp, mqtt3, mqtt5")
			user := fs.String("of-user", "", "only this user's connections (--user is who asks)")
			device := fs.String("device", "", "only this device's")
			clientID := fs.String("client-id", "", "only this MQTT client id or AMQP container id")
			limit := fs.Int("limit", 100, "at most this many (1 to 1000)")
			after := fs.String("after", "", "the page after this connection id (the previous page's last)")
			return func(ctx context.Context, pos []string) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				q := url.Values{}
				for k, v := range map[string]string{"protocol": *proto, "user": *user, "device": *device, "clientId": *clientID, "after": *after} {
					if v != "" {
						q.Set(k, v)
					}
				}
				q.Set("limit", strconv.Itoa(*limit))
				var l admin.ConnectionList
				raw, err := cl.call(ctx, "GET", connBase(*ten)+"?"+q.Encode(), nil, &l)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				rows := make([][]string, 0, len(l.Connections))
				for _, s := range l.Connections {
					who := s.User
					if s.Device != "" {
						who = "device " + s.Device
					}
					rows = append(rows, []string{s.ID, s.Tenant, s.Protocol, orDash(s.ClientID), orDash(who), s.Remote,
						fmt.Sprint(s.MessagesIn), fmt.Sprint(s.MessagesOut), rate(s.RateIn), rate(s.RateOut), fmt.Sprint(s.Links), ago(s.Since)})
				}
				table(c.stdout, "ID\tTENANT\tPROTOCOL\tCLIENT\tWHO\tREMOTE\tIN\tOUT\tIN/S\tOUT/S\tLINKS\tSINCE", rows)
				if l.Next != "" {
					fmt.Fprintf(c.stdout, "more: --after %s\n", l.Next)
				}
				if len(l.Missing) > 0 {
					// A cluster's nodes that did not answer: their
					// connections are not in the list.
					fmt.Fprintf(c.stdout, "not answering (their connections are not listed): %s\n", strings.Join(l.Missing, ", "))
				}
				return nil
			}
		}},
	"get": {"connection get ID [--tenant T]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := connTenantFlag(fs)
			return func(ctx context.Context, pos []string) error {
				id, err := oneName(pos, "connection id")
				if err != nil {
					return err
				}
				var s conns.Snapshot
				raw, err := cl.call(ctx, "GET", connBase(*ten)+"/"+seg(id), nil, &s)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				rows := [][]string{
					{"id", s.ID}, {"node", s.Node}, {"tenant", s.Tenant}, {"protocol", s.Protocol},
					{"clientId", orDash(s.ClientID)}, {"user", orDash(s.User)}, {"device", orDash(s.Device)},
					{"remoteAddress", s.Remote}, {"tls", fmt.Sprint(s.TLS)}, {"connectedSince", ago(s.Since)},
					{"messagesIn", fmt.Sprint(s.MessagesIn)}, {"messagesOut", fmt.Sprint(s.MessagesOut)},
					{"bytesIn", config.ByteSize(s.BytesIn).String()}, {"bytesOut", config.ByteSize(s.BytesOut).String()},
					{"messagesInPerSecond", rate(s.RateIn)}, {"messagesOutPerSecond", rate(s.RateOut)},
				}
				for _, l := range s.LinkList {
					var parts []string
					if l.Name != "" {
						parts = append(parts, "name="+l.Name)
					}
					if l.QoS != nil {
						parts = append(parts, fmt.Sprintf("qos=%d", *l.QoS))
					}
					if l.Credit != nil {
						parts = append(parts, fmt.Sprintf("credit=%d", *l.Credit))
					}
					if l.Unsettled != nil {
						parts = append(parts, fmt.Sprintf("unsettled=%d", *l.Unsettled))
					}
					if l.Backlog != nil {
						parts = append(parts, fmt.Sprintf("waiting=%d", *l.Backlog))
					}
					rows = append(rows, []string{l.Kind, strings.TrimSpace(l.Address + " " + strings.Join(parts, " "))})
				}
				table(c.stdout, "FIELD\tVALUE", rows)
				return nil
			}
		}},
	"close": {"connection close ID [--tenant T]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := connTenantFlag(fs)
			return func(ctx context.Context, pos []string) error {
				id, err := oneName(pos, "connection id")
				if err != nil {
					return err
				}
				if _, err := cl.call(ctx, "DELETE", connBase(*ten)+"/"+seg(id), nil, nil); err != nil {
					return err
				}
				c.done(cl, nil, "connection %s closed", id)
				return nil
			}
		}},
}

func (c *cli) connection(ctx context.Context, args []string) error {
	return c.dispatch(ctx, "connection", connectionCmds, connectionOrder, args)
}

// ---- queue actions on addresses (docs/admin-api.md "Queue actions"):
// throng address purge|peek|move, beside the address verbs of
// commands.go.

func init() {
	addressOrder = append(addressOrder, "purge", "peek", "move")
	addressCmds["purge"] = command{"address purge NAME [--tenant T]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "address")
				if err != nil {
					return err
				}
				var res admin.PurgeResult
				raw, err := cl.call(ctx, "POST", "/api/tenants/"+seg(*ten)+"/purge/"+seg(name), nil, &res)
				if err != nil {
					return err
				}
				c.done(cl, raw, "address %s purged: %d messages removed", name, res.Purged)
				return nil
			}
		}}
	addressCmds["peek"] = command{"address peek NAME [--tenant T] [--limit N]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			limit := fs.Int("limit", 10, "at most this many messages (1 to 100)")
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "address")
				if err != nil {
					return err
				}
				var res admin.PeekResult
				raw, err := cl.call(ctx, "GET", "/api/tenants/"+seg(*ten)+"/messages/"+seg(name)+"?limit="+strconv.Itoa(*limit), nil, &res)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				rows := make([][]string, 0, len(res.Messages))
				for _, m := range res.Messages {
					body := m.Body
					if m.Encoding == "base64" {
						body = "base64:" + body
					}
					if len(body) > 60 {
						body = body[:57] + "..."
					}
					var props []string
					for k, v := range m.Properties {
						props = append(props, k+"="+v)
					}
					rows = append(rows, []string{fmt.Sprint(m.Sequence), ago(m.Time), fmt.Sprint(m.Size), orDash(strings.Join(props, " ")), strconv.Quote(body)})
				}
				table(c.stdout, "SEQ\tSTORED\tSIZE\tPROPERTIES\tBODY", rows)
				return nil
			}
		}}
	addressCmds["move"] = command{"address move NAME --to ADDRESS [--tenant T] [--limit N]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			to := fs.String("to", "", "the address to move the messages to (same tenant)")
			limit := fs.Int("limit", 0, "move at most this many (0: all)")
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "address")
				if err != nil {
					return err
				}
				if *to == "" {
					return usagef("address move needs --to")
				}
				q := url.Values{"to": {*to}}
				if *limit > 0 {
					q.Set("limit", strconv.Itoa(*limit))
				}
				var res admin.MoveResult
				raw, err := cl.call(ctx, "POST", "/api/tenants/"+seg(*ten)+"/move/"+seg(name)+"?"+q.Encode(), nil, &res)
				if err != nil {
					return err
				}
				c.done(cl, raw, "%d messages moved from %s to %s", res.Moved, name, *to)
				return nil
			}
		}}
}
