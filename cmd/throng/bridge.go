package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/bridge"
)

// ---- bridges (docs/bridges.md): a tenant's links to other brokers.

var bridgeOrder = []string{"create", "list", "get", "delete"}

func bridgePath(ten string) string { return "/api/tenants/" + seg(ten) + "/bridges" }

// readPEM reads a PEM file named by a flag ("" stays "").
func readPEM(flagName, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usagef("--%s: %v", flagName, err)
	}
	return string(b), nil
}

// parseMapping reads --map FILTER[,LOCAL_PREFIX[,REMOTE_PREFIX]].
func parseMapping(s string) bridge.Mapping {
	parts := strings.SplitN(s, ",", 3)
	m := bridge.Mapping{Filter: parts[0]}
	if len(parts) > 1 {
		m.LocalPrefix = parts[1]
	}
	if len(parts) > 2 {
		m.RemotePrefix = parts[2]
	}
	return m
}

func mappingText(m bridge.Mapping) string {
	s := m.LocalFilter()
	switch {
	case m.Topic != "":
		s += " → kafka " + m.Topic
		if m.Key != "" {
			s += " (key " + m.Key + ")"
		}
	case m.LocalPrefix != "" || m.RemotePrefix != "":
		s += " → " + m.RemoteFilter()
	}
	return s
}

func bridgeRate(f float64) string { return fmt.Sprintf("%.1f/s", f) }

var bridgeCmds = map[string]command{
	"create": {"bridge create NAME --url mqtt://HOST:PORT --map FILTER[,LOCAL_PREFIX[,REMOTE_PREFIX]]... [--tenant T] [--direction out|in|both] [--username U --remote-password P] [--ca FILE] [--client-cert FILE --client-key FILE] [--sni NAME] [--qos 0|1] [--window N] [--buffer-limit N] [--overflow keep|drop-oldest] [--kind mqtt|amqp|kafka] [--topic KAFKA_TOPIC [--key device|address|property:NAME|none]]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			kind := fs.String("kind", bridge.KindMQTT, "kind of bridge: mqtt, amqp or kafka")
			u := fs.String("url", "", "the remote: mqtt[s]://host:port, amqp[s]://host:port or kafka[s]://host:port[,host:port...]")
			topic := fs.String("topic", "", "kafka: the Kafka topic of every --map")
			rkey := fs.String("key", "", "kafka: the record key of every --map: device (default), address, property:NAME or none")
			user := fs.String("username", "", "user name on the remote")
			pass := fs.String("remote-password", "", "password on the remote (--password is yours, for the admin API)")
			cid := fs.String("client-id", "", "client id on the remote (default throng-TENANT-NAME)")
			ca := fs.String("ca", "", "PEM file of the CA that signed the remote's certificate (mqtts)")
			cert := fs.String("client-cert", "", "PEM file of throng's client certificate (mqtts)")
			key := fs.String("client-key", "", "PEM file of its private key")
			sni := fs.String("sni", "", "server name to send and verify (default: the URL's host)")
			dir := fs.String("direction", bridge.Out, "out (local → remote), in (remote → local) or both")
			var maps multiFlag
			fs.Var(&maps, "map", "topics to bridge: FILTER[,LOCAL_PREFIX[,REMOTE_PREFIX]] (repeatable)")
			qos := fs.Int("qos", 1, "QoS of the remote publishes and subscriptions (0 or 1)")
			window := fs.Int("window", 0, "mqtt, amqp out: messages in flight to the remote per mapping, 1 to 256 (0: 64)")
			limit := fs.Int("buffer-limit", 0, "messages waiting for the remote before --overflow applies (0: 100000)")
			overflow := fs.String("overflow", "", "keep (default) or drop-oldest")
			disabled := fs.Bool("disabled", false, "store it without running it")
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "bridge")
				if err != nil {
					return err
				}
				b := bridge.Bridge{
					Name: name, Kind: *kind, Direction: *dir, QoS: qos, Window: *window, BufferLimit: *limit, Overflow: *overflow, Disabled: *disabled,
					Remote: bridge.Remote{URL: *u, Username: *user, Password: *pass, ClientID: *cid, SNI: *sni},
				}
				for _, m := range maps {
					mp := parseMapping(m)
					mp.Topic, mp.Key = *topic, *rkey
					b.Mappings = append(b.Mappings, mp)
				}
				for _, f := range []struct {
					flag, path string
					dst        *string
				}{{"ca", *ca, &b.Remote.CA}, {"client-cert", *cert, &b.Remote.ClientCert}, {"client-key", *key, &b.Remote.ClientKey}} {
					if *f.dst, err = readPEM(f.flag, f.path); err != nil {
						return err
					}
				}
				raw, err := cl.call(ctx, "POST", bridgePath(*ten), b, nil)
				if err != nil {
					return err
				}
				c.done(cl, raw, "bridge %s created in tenant %s", name, *ten)
				return nil
			}
		}},
	"list": {"bridge list [--tenant T]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			return func(ctx context.Context, pos []string) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				var bs []admin.BridgeView
				raw, err := cl.call(ctx, "GET", bridgePath(*ten), nil, &bs)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				rows := make([][]string, 0, len(bs))
				for _, b := range bs {
					st := b.Status
					rows = append(rows, []string{b.Name, b.Kind, b.Direction, b.Remote.URL, st.State,
						bridgeRate(st.OutRate), bridgeRate(st.InRate), fmt.Sprint(st.Lag), orDash(st.LastError)})
				}
				table(c.stdout, "NAME\tKIND\tDIRECTION\tREMOTE\tSTATE\tOUT\tIN\tLAG\tERROR", rows)
				return nil
			}
		}},
	"get": {"bridge get NAME [--tenant T]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "bridge")
				if err != nil {
					return err
				}
				var b admin.BridgeView
				raw, err := cl.call(ctx, "GET", bridgePath(*ten)+"/"+seg(name), nil, &b)
				if err != nil || c.printedJSON(cl, raw) {
					return err
				}
				maps := make([]string, 0, len(b.Mappings))
				for _, m := range b.Mappings {
					maps = append(maps, mappingText(m))
				}
				qos := 1
				if b.QoS != nil {
					qos = *b.QoS
				}
				st := b.Status
				rows := [][]string{
					{"name", b.Name}, {"kind", b.Kind}, {"direction", b.Direction}, {"remote", b.Remote.URL},
					{"username", orDash(b.Remote.Username)}, {"client id", orDash(b.Remote.ClientID)},
					{"mappings", strings.Join(maps, ", ")}, {"qos", fmt.Sprint(qos)},
					{"window", fmt.Sprint(cmp.Or(b.Window, bridge.DefaultWindow))}, {"buffer limit", fmt.Sprint(b.BufferLimit)}, {"overflow", orDash(b.Overflow)},
					{"state", st.State}, {"owner", orDash(st.Owner)}, {"connected since", ago(st.ConnectedSince)},
					{"out", fmt.Sprintf("%d (%s)", st.Out, bridgeRate(st.OutRate))}, {"in", fmt.Sprintf("%d (%s)", st.In, bridgeRate(st.InRate))},
					{"lag", fmt.Sprint(st.Lag)}, {"dropped", fmt.Sprint(st.Dropped)}, {"retried", fmt.Sprint(st.Retried)},
					{"reconnects", fmt.Sprint(st.Reconnects)},
					{"last error", orDash(st.LastError)}, {"last error at", ago(st.LastErrorAt)},
					{"created", ago(b.Created)},
				}
				table(c.stdout, "FIELD\tVALUE", rows)
				return nil
			}
		}},
	"delete": {"bridge delete NAME [--tenant T]", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			ten := tenantFlag(fs)
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "bridge")
				if err != nil {
					return err
				}
				if _, err := cl.call(ctx, "DELETE", bridgePath(*ten)+"/"+seg(name), nil, nil); err != nil {
					return err
				}
				c.done(cl, nil, "bridge %s deleted from tenant %s", name, *ten)
				return nil
			}
		}},
}

func (c *cli) bridge(ctx context.Context, args []string) error {
	return c.dispatch(ctx, "bridge", bridgeCmds, bridgeOrder, args)
}
