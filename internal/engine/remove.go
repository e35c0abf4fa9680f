package engine

// Removing a node from the cluster for good (docs/cluster.md, "Growing
// and shrinking").
//
// A node that stops, even cleanly, stays a member of the JetStream meta
// group and of every stream's Raft group it has a replica in: JetStream
// expects it back (a restart, an upgrade). A cluster that shrinks must be
// told, or it keeps counting the node in every quorum: with two of five
// nodes gone for good, one more failure stops the meta group, and a
// stream with two of its three replicas on the departed nodes has no
// quorum at all. JetStream's peer-remove ($JS.API.SERVER.REMOVE, answered
// by the meta leader) takes the node out of the meta group and re-places
// each of its stream and consumer replicas on another node, which catches
// up from the stream's leader. throng does not do this on a clean stop (a
// rolling restart would move every replica twice); the operator asks for
// it once the node is gone, through the admin API (POST
// /api/cluster/nodes/{name}/remove).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Errors of RemoveNode.
var (
	ErrNotClustered = errors.New("engine: not a cluster")
	ErrUnknownNode  = errors.New("engine: no such node in the cluster")
	ErrNodeOnline   = errors.New("engine: the node is online; stop it first")
	ErrRemoveSelf   = errors.New("engine: a node cannot remove itself")
)

// Removal is what RemoveNode did.
type Removal struct {
	Node string `json:"node"`
	// Replaced are the streams ("account > stream") this node hosts that
	// had a replica on the removed node, now placed elsewhere and current.
	// Streams this node does not host are re-placed too, but only their
	// own nodes see them.
	Replaced []string `json:"replaced"`
	// Took is how long the removal and the catch-up of the new replicas
	// took.
	Took string `json:"took"`
}

// removeRetry is how often the peer-remove request is sent again while no
// meta leader answers (an election).
const removeRetry = 3 * time.Second

// RemoveNode removes an offline node from the cluster: JetStream takes it
// out of the meta group and re-places its replicas. It returns once the
// meta group no longer lists the node and every stream hosted here has
// its full replica count, all current, none of them on the removed node
// (or when ctx ends: the removal itself goes on in the engine).
func (e *Engine) RemoveNode(ctx context.Context, name string) (*Removal, error) {
	if !e.cluster.Enabled() {
		return nil, ErrNotClustered
	}
	if name == e.nodeName {
		return nil, ErrRemoveSelf
	}
	start := time.Now()
	known := false
	for _, n := range e.Status().Nodes {
		if n.Name == name {
			known = true
			if n.Online {
				return nil, fmt.Errorf("%w: %s", ErrNodeOnline, name)
			}
		}
	}
	if !known {
		return nil, fmt.Errorf("%w: %s", ErrUnknownNode, name)
	}
	had := e.streamsOn(name)

	nc, err := e.connectNATSSystem()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	req, _ := json.Marshal(server.JSApiMetaServerRemoveRequest{Server: name})
	for {
		rctx, cancel := context.WithTimeout(ctx, removeRetry)
		msg, err := nc.RequestWithContext(rctx, server.JSApiRemoveServer, req)
		cancel()
		if err == nil {
			var resp server.JSApiMetaServerRemoveResponse
			if err := json.Unmarshal(msg.Data, &resp); err != nil {
				return nil, fmt.Errorf("engine: remove node %s: %w", name, err)
			}
			if resp.Error != nil {
				return nil, fmt.Errorf("engine: remove node %s: %s", name, resp.Error.Description)
			}
			break
		}
		// No meta leader at the moment (no responders, or no answer):
		// asked again.
		if ctx.Err() != nil {
			return nil, fmt.Errorf("engine: remove node %s: %w", name, ctx.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.log.Info("node removed from the cluster; its replicas are being placed on the others", "node", name, "streams_here", len(had))

	for {
		ok, why := e.removed(name)
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("engine: node %s removed, but the streams here are not all placed and current yet (%s): %w", name, why, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	r := &Removal{Node: name, Replaced: had, Took: time.Since(start).Round(time.Millisecond).String()}
	e.log.Info("replicas of the removed node placed and current", "node", name, "streams_here", len(had), "took", r.Took)
	return r, nil
}

// connectNATSSystem connects to the server's own system account ($SYS,
// not throng's SystemAccount): JetStream's server API answers only
// there. The account is known to the authenticator just for the connect
// (a reconnection would be refused: the caller's connection is short).
func (e *Engine) connectNATSSystem() (*nats.Conn, error) {
	sys := e.srv.SystemAccount()
	if sys == nil {
		return nil, errors.New("engine: no system account")
	}
	name := sys.GetName()
	e.mu.Lock()
	_, had := e.accounts[name]
	e.accounts[name] = sys
	e.mu.Unlock()
	nc, err := e.Connect(name, nats.Name("engine-remove-node"), nats.NoReconnect())
	if !had {
		e.mu.Lock()
		delete(e.accounts, name)
		e.mu.Unlock()
	}
	return nc, err
}

// localStreams are the streams this node hosts, with their cluster view.
func (e *Engine) localStreams() ([]server.StreamDetail, []string) {
	jz, err := e.srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Config: true})
	if err != nil {
		return nil, nil
	}
	var out []server.StreamDetail
	var names []string
	for _, a := range jz.AccountDetails {
		for _, sd := range a.Streams {
			out = append(out, sd)
			names = append(names, a.Name+" > "+sd.Name)
		}
	}
	return out, names
}

// streamsOn lists the streams hosted here that have a replica on node.
func (e *Engine) streamsOn(node string) []string {
	sds, names := e.localStreams()
	var out []string
	for i, sd := range sds {
		if slices.Contains(replicaNames(sd.Cluster), node) {
			out = append(out, names[i])
		}
	}
	sort.Strings(out)
	return out
}

// removed reports whether node is gone from the meta group and from every
// stream hosted here, those streams have their full replica count and a
// leader, the replicas here are current (the server's health check), and
// those led from here have every follower current (only a stream's leader
// knows its followers' progress).
func (e *Engine) removed(node string) (bool, string) {
	for _, n := range e.Status().Nodes {
		if n.Name == node {
			return false, "still in the meta group"
		}
	}
	if h := e.srv.Healthz(&server.HealthzOptions{}); h.Status != "ok" {
		return false, "not healthy here: " + h.Error
	}
	sds, snames := e.localStreams()
	for i, sd := range sds {
		ci := sd.Cluster
		if ci == nil || ci.Leader == "" {
			return false, snames[i] + ": no leader"
		}
		names := replicaNames(ci)
		if !slices.Contains(names, e.nodeName) {
			names = append(names, e.nodeName)
		}
		if slices.Contains(names, node) {
			return false, snames[i] + ": still has a replica there"
		}
		want := e.replicas
		if sd.Config != nil && sd.Config.Replicas > 0 {
			want = sd.Config.Replicas
		}
		if len(names) < want {
			return false, fmt.Sprintf("%s: %d of %d replicas", snames[i], len(names), want)
		}
		if ci.Leader != e.nodeName {
			continue
		}
		for _, p := range ci.Replicas {
			if !p.Current || p.Offline || p.Pending {
				return false, snames[i] + ": replica on " + p.Name + " not current"
			}
		}
	}
	return true, ""
}

// replicaNames are the distinct nodes the cluster view names: the leader
// and the peers (a follower lists the leader among them too).
func replicaNames(ci *server.ClusterInfo) []string {
	if ci == nil {
		return nil
	}
	var out []string
	if ci.Leader != "" {
		out = append(out, ci.Leader)
	}
	for _, p := range ci.Replicas {
		if !slices.Contains(out, p.Name) {
			out = append(out, p.Name)
		}
	}
	return out
}
