package main

import (
	"fmt"
	"io"

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
