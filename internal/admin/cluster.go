package admin

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
