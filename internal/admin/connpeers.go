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
	peers := s.cfg.Observe.Peers
	id := r.PathValue("id")
	node := idNode(id)
	if peers == nil || node == "" || node == s.cfg.Observe.Conns.Node() {
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
	var snap conns.Snapshot
	var err error
	if close {
		by := "an administrator"
		if p := principal(r); p != nil {
			by = p.User + "@" + p.Tenant
		}
		if err = peers.Close(ctx, node, id, tenant, by); err == nil {
			s.log.Info("closing connection on another node", "id", id, "node", node, "by", by)
		}
	} else {
		snap, err = peers.Get(ctx, node, id, tenant)
	}
	switch {
	case err == nil && close:
		w.WriteHeader(http.StatusNoContent)
	case err == nil:
		writeJSON(w, http.StatusOK, snap)
	case errors.Is(err, ErrConnNotFound):
		writeError(w, CodeNotFound, fmt.Sprintf("connection %q not found", id))
	default:
		writeError(w, CodeNotReady, fmt.Sprintf("node %q did not answer: %v", node, err))
	}
	return true
}
