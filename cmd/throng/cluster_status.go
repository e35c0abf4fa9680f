package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"

	"github.com/throngmq/throng/internal/admin"
)

// printCluster prints the cluster part of throng status: the nodes as
// the node asked sees them, and its routes.
func printCluster(w io.Writer, c *admin.ClusterStatus) {
	if c == nil || !c.Clustered {
		return
	}
	fmt.Fprintf(w, "\ncluster %s, node %s, meta leader %s, replicas %d\n", c.Name, c.Node, orDash(c.MetaLeader), c.Replicas)
	if c.NotReady != "" {
		fmt.Fprintf(w, "not ready: %s\n", c.NotReady)
	}
	var rows [][]string
	for _, n := range c.Nodes {
		role := "follower"
		if n.Leader {
			role = "leader"
		}
		state := "online"
		if !n.Online {
			state = "offline"
		}
		current := "yes"
		if !n.Current {
			current = "no"
		}
		name := n.Name
		if n.Self {
			name += " (this node)"
		}
		rows = append(rows, []string{name, role, state, current, orDash(n.LastSeen)})
	}
	table(w, "NODE\tROLE\tSTATE\tCURRENT\tLAST SEEN", rows)
	rows = rows[:0]
	for _, r := range c.Routes {
		conf := "configured"
		if !r.Configured {
			conf = "learnt"
		}
		rows = append(rows, []string{r.Node, r.Addr, conf, r.Since, orDash(r.RTT)})
	}
	fmt.Fprintln(w)
	table(w, "ROUTE TO\tADDRESS\tPEER\tUP\tRTT", rows)
}

// ---- throng cluster (docs/cluster.md, "Growing and shrinking")

var clusterOrder = []string{"remove-node"}

var clusterCmds = map[string]command{
	"remove-node": {"cluster remove-node NAME   (a stopped node, for good: its replicas move to the others)", "",
		func(c *cli, fs *flag.FlagSet, cl *client) func(context.Context, []string) error {
			return func(ctx context.Context, pos []string) error {
				name, err := oneName(pos, "node")
				if err != nil {
					return err
				}
				var res admin.NodeRemoval
				raw, err := cl.call(ctx, "POST", "/api/cluster/nodes/"+url.PathEscape(name)+"/remove", nil, &res)
				if err != nil {
					return err
				}
				c.done(cl, raw, "node %s removed from the cluster in %s; %d streams of %s had a replica on it, now placed elsewhere and current",
					res.Node, res.Took, len(res.Replaced), cl.server)
				return nil
			}
		}},
}

func (c *cli) cluster(ctx context.Context, args []string) error {
	return c.dispatch(ctx, "cluster", clusterCmds, clusterOrder, args)
}
