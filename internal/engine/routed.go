package engine

// RoutedNodes returns the names of the other nodes this node has a route
// to, one per node (routes are pooled: several connections per node);
// nil on a single node. The router asks them to confirm a subscription
// before its SUBACK (router/barrier.go).
func (e *Engine) RoutedNodes() []string {
	if e.cluster == nil {
		return nil
	}
	rz, err := e.srv.Routez(nil)
	if err != nil {
		return nil
	}
	var names []string
	for _, r := range rz.Routes {
		if r.RemoteName == "" || r.RemoteName == e.nodeName {
			continue
		}
		seen := false
		for _, n := range names {
			if n == r.RemoteName {
				seen = true
				break
			}
		}
		if !seen {
			names = append(names, r.RemoteName)
		}
	}
	return names
}

// RouteCount returns the number of route connections (pooled: several
// per node), 0 on a single node: cheap enough to ask on every barrier,
// so that a change of RoutedNodes is seen at once.
func (e *Engine) RouteCount() int {
	if e.cluster == nil {
		return 0
	}
	return e.srv.NumRoutes()
}

// Clustered reports whether the engine was started with a cluster.
func (e *Engine) Clustered() bool { return e.cluster != nil }
