package admin

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// ClusterStatus is the cluster part of GET /api/status (docs/cluster.md):
// the nodes of the JetStream meta group as this node sees them, and its
// routes to the other nodes. A single node reports itself alone.
type ClusterStatus struct {
	Clustered  bool   `json:"clustered"`
	Name       string `json:"name,omitempty"`
	Node       string `json:"node"`
	MetaLeader string `json:"metaLeader,omitempty"`
	// Replicas is the replica count of new streams and buckets.
	Replicas int `json:"replicas"`
	// NotReady says why the node is not ready, if it is not.
	NotReady string         `json:"notReady,omitempty"`
	Nodes    []ClusterNode  `json:"nodes"`
	Routes   []ClusterRoute `json:"routes,omitempty"`
}

// ClusterNode is one node of the cluster.
type ClusterNode struct {
	Name     string `json:"name"`
	Self     bool   `json:"self,omitempty"`
	Leader   bool   `json:"leader,omitempty"` // the JetStream meta leader
	Online   bool   `json:"online"`
	Current  bool   `json:"current"`            // caught up with the meta leader
	LastSeen string `json:"lastSeen,omitempty"` // since the leader last heard from it
}

// ClusterRoute is this node's route to another node.
type ClusterRoute struct {
	Node       string `json:"node"`
	Addr       string `json:"addr"`
	Configured bool   `json:"configured"` // from the peer list (else learnt from another node)
	Since      string `json:"since"`
	RTT        string `json:"rtt,omitempty"`
}

// Errors of Config.RemoveNode that the API reports as such.
var (
	ErrNodeUnknown = errors.New("no such node in the cluster")
	ErrNodeOnline  = errors.New("the node is online")
)

// NodeRemoval is the answer of POST /api/cluster/nodes/{node}/remove.
type NodeRemoval struct {
	Node string `json:"node"`
	// Replaced lists the streams ("account > stream") of the node asked
	// that had a replica on the removed node: placed elsewhere and current.
	Replaced []string `json:"replaced"`
	Took     string   `json:"took"`
}

// removeWait bounds the wait for the removed node's replicas to be placed
// on the others and caught up: less than the admin listener's write
// timeout (a minute, app.go).
const removeWait = 45 * time.Second

// removeNode takes a stopped node out of the cluster for good: JetStream
// removes it from its meta group and places its replicas on the other
// nodes (docs/cluster.md, "Growing and shrinking"). A node that is still
// online is refused (409): removing a running node would disable its
// JetStream while clients use it.
func (s *Server) removeNode(w http.ResponseWriter, r *http.Request) {
	if s.cfg.RemoveNode == nil {
		writeError(w, CodeNotFound, "not a cluster")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), removeWait)
	defer cancel()
	name := r.PathValue("node")
	res, err := s.cfg.RemoveNode(ctx, name)
	switch {
	case err == nil:
		s.log.Info("node removed from the cluster", "node", name, "replaced", len(res.Replaced), "took", res.Took)
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, ErrNodeUnknown):
		writeError(w, CodeNotFound, err.Error())
	case errors.Is(err, ErrNodeOnline):
		writeError(w, CodeConflict, err.Error()+": stop it first")
	default:
		s.log.Error("remove node", "node", name, "err", err)
		writeError(w, CodeInternal, err.Error())
	}
}
