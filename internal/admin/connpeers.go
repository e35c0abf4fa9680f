package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/conns"
	"github.com/throngmq/throng/internal/history"
	"github.com/throngmq/throng/internal/metrics"
)

// Connections across a cluster's nodes (docs/admin-api.md, "Across
// nodes"): the lists merge every live node's answer, a get or close of
// another node's connection is forwarded to that node. The requests
// travel on the engine's system connection (internal/app/connpeers.go);
// this side only knows the interface.

// ConnPeers asks the cluster's other nodes about their connections; nil
// on a single node (the handlers then answer from this node alone, with
// no extra latency).
type ConnPeers interface {
	// Nodes is the cluster's other nodes, each with whether the engine
	// sees it online.
	Nodes() []PeerNode
	// List is node's page of connections matching f after after.
	List(ctx context.Context, node string, f conns.Filter, after string, limit int) ([]conns.Snapshot, string, error)
	// Get is node's connection id (of tenant, when not empty).
	Get(ctx context.Context, node, id, tenant string) (conns.Snapshot, error)
	// Close asks node to close its connection id (of tenant, when not
	// empty); by names who for the log and the close reason.
	Close(ctx context.Context, node, id, tenant, by string) error
}

// ObservePeers is what else the other nodes answer: their part of an
// anomaly report (anomalies.go) and a connection's history. A cluster's
// Observe.Peers implements it (internal/app/anomalypeers.go); peers that
// do not leave the anomalies this node's own and another node's
// connection history 404.
type ObservePeers interface {
	ConnPeers
	// Anomalies is node's part of a report of split nodes
	// (metrics.Observer.NodeReport).
	Anomalies(ctx context.Context, node, tenant string, th metrics.Thresholds, split int) (metrics.NodeReport, error)
	// Tally is node's counts of keys (metrics.Observer.Tally).
	Tally(ctx context.Context, node string, keys []metrics.TallyKey) ([]int64, error)
	// History is the history of node's connection id (of tenant, when
	// not empty).
	History(ctx context.Context, node, id, tenant string) (history.View, error)
}

// PeerNode is another node of the cluster.
type PeerNode struct {
	Name   string
	Online bool
}

// Errors of ConnPeers.
var (
	// ErrConnNotFound: the node does not know the connection (or it is
	// another tenant's).
	ErrConnNotFound = errors.New("connection not found")
	// ErrNodeNoAnswer: the node did not answer in time or is not reachable.
	ErrNodeNoAnswer = errors.New("the node did not answer")
)

// peerWait bounds each request to another node.
const peerWait = 2 * time.Second

// idNode is the node named by a connection id ("n3-42": "n3"), "" when
// the id has no node part.
func idNode(id string) string {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return ""
	}
	return id[:i]
}

// nodeAfter is the after to pass to node for a cluster-wide after: ids
// order by node then sequence, so a node before the after's node has
// nothing left (skip), the after's node continues after it and a later
// node starts from its beginning.
func nodeAfter(node, after string) (string, bool) {
	if after == "" {
		return "", true
	}
	an := idNode(after)
	switch {
	case node < an:
		return "", false
	case node == an:
		return after, true
	default:
		return "", true
	}
}

// listAcross is the list of every node: this node's and each live other
// node's page, asked at once, each bounded by peerWait; merged in node
// order. A node that does not answer (or is offline) is named in
// Missing and its connections are left out of this page.
func (s *Server) listAcross(ctx context.Context, peers ConnPeers, f conns.Filter, after string, limit int) ConnectionList {
	reg := s.cfg.Observe.Conns
	self := reg.Node()
	type part struct {
		node  string
		items []conns.Snapshot
		next  string
		err   error
	}
	var parts []*part
	var wg sync.WaitGroup
	if a, ok := nodeAfter(self, after); ok {
		p := &part{node: self}
		page, next := reg.List(f, a, limit)
		for _, e := range page {
			p.items = append(p.items, reg.Snapshot(e, false))
		}
		p.next = next
		parts = append(parts, p)
	}
	var missing []string
	for _, n := range peers.Nodes() {
		if n.Name == self {
			continue
		}
		a, ok := nodeAfter(n.Name, after)
		if !ok {
			continue
		}
		if !n.Online {
			missing = append(missing, n.Name)
			continue
		}
		p := &part{node: n.Name}
		parts = append(parts, p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, peerWait)
			defer cancel()
			p.items, p.next, p.err = peers.List(rctx, p.node, f, a, limit)
		}()
	}
	wg.Wait()
	slices.SortFunc(parts, func(a, b *part) int { return strings.Compare(a.node, b.node) })
	out := ConnectionList{Connections: []conns.Snapshot{}}
	more := false
	for _, p := range parts {
		if p.err != nil {
			missing = append(missing, p.node)
			continue
		}
		out.Connections = append(out.Connections, p.items...)
		if p.next != "" {
			more = true
		}
	}
	if len(out.Connections) > limit {
		out.Connections, more = out.Connections[:limit], true
	}
	if more && len(out.Connections) > 0 {
		out.Next = out.Connections[len(out.Connections)-1].ID
	}
	if missing != nil {
		slices.Sort(missing)
		out.Missing = missing
	}
	return out
}

// forwarded reports whether the path's {id} is another node's, and then
// answers the get (close false) or the close of it by asking that node.
func (s *Server) forwarded(w http.ResponseWriter, r *http.Request, close bool) bool {
	op := "get"
	if close {
		op = "close"
	}
	return s.forward(w, r, op)
}

// forward is forwarded for op: get, close or history (of a connection
// of another node: the series is in that node's rings).
func (s *Server) forward(w http.ResponseWriter, r *http.Request, op string) bool {
	peers := s.cfg.Observe.Peers
	id := r.PathValue("id")
	node := idNode(id)
	if peers == nil || node == "" || node == s.cfg.Observe.Conns.Node() {
		return false
	}
	op2, _ := peers.(ObservePeers)
	if op == "history" && op2 == nil {
		return false
	}
	known := false
	for _, n := range peers.Nodes() {
		known = known || n.Name == node
	}
	if !known {
		writeError(w, CodeNotFound, fmt.Sprintf("connection %q not found", id))
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), peerWait)
	defer cancel()
	tenant := r.PathValue("tenant")
	var body any
	var err error
	switch op {
	case "close":
		by := "an administrator"
		if p := principal(r); p != nil {
			by = p.User + "@" + p.Tenant
		}
		if err = peers.Close(ctx, node, id, tenant, by); err == nil {
			s.log.Info("closing connection on another node", "id", id, "node", node, "by", by)
		}
	case "history":
		body, err = op2.History(ctx, node, id, tenant)
	default:
		body, err = peers.Get(ctx, node, id, tenant)
	}
	switch {
	case err == nil && op == "close":
		w.WriteHeader(http.StatusNoContent)
	case err == nil:
		writeJSON(w, http.StatusOK, body)
	case errors.Is(err, ErrConnNotFound):
		writeError(w, CodeNotFound, fmt.Sprintf("connection %q not found", id))
	default:
		writeError(w, CodeNotReady, fmt.Sprintf("node %q did not answer: %v", node, err))
	}
	return true
}
