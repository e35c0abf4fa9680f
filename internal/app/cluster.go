package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/tenant"
)

// engineCluster is the engine's cluster configuration, nil for a single
// node. The node name defaults to the host name.
func (a *App) engineCluster() (*engine.Cluster, error) {
	c := a.cfg.Cluster
	if !c.Enabled() {
		return nil, nil
	}
	name := c.NodeName
	if name == "" {
		name, _ = os.Hostname()
	}
	conf, err := a.routeTLS()
	if err != nil {
		return nil, err
	}
	return &engine.Cluster{
		Name:     c.Name,
		NodeName: name,
		Listen:   c.Listen,
		Peers:    append([]string(nil), c.Peers...),
		Secret:   c.Secret,
		Replicas: c.Replicas,
		TLS:      conf,
	}, nil
}

// routeTLS is the mutual TLS of the routes between nodes (cluster.tls),
// nil when not configured. One configuration serves both sides of a
// route: a node accepts routes (server: it requires the peer's
// certificate and verifies it against the CA) and solicits them (client:
// it presents its certificate and verifies the peer's against the CA,
// and the peer's name against the host in the peer list). The
// certificate and key are read again when their files change (at the
// next handshake) and on SIGHUP (Reload); the CA is read at start only.
func (a *App) routeTLS() (*tls.Config, error) {
	t := a.cfg.Cluster.TLS
	if !t.Enabled() {
		return nil, nil
	}
	r := &certReloader{cert: t.Cert, key: t.Key}
	if _, err := r.get(nil); err != nil {
		return nil, fmt.Errorf("app: cluster.tls: %w", err)
	}
	b, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, fmt.Errorf("app: cluster.tls.ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("app: cluster.tls.ca %s: no certificates", t.CA)
	}
	a.reload.mu.Lock()
	a.reload.routeCert = r
	a.reload.mu.Unlock()
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.get,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.get(nil)
		},
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  pool,
		RootCAs:    pool,
	}, nil
}

// followTenants registers, on a clustered node, the engine account of
// every tenant in the replicated tenant list, now and whenever one is
// created on any node: a tenant's streams may be placed on this node
// whether or not a client of the tenant ever connects here, and the
// engine must know the account first (engine/cluster.go; the node that
// creates a tenant also announces it, this is the catch-all for a node
// that missed the announcement).
func (a *App) followTenants(eng *engine.Engine, store *tenant.Store) {
	if !a.cfg.Cluster.Enabled() {
		return
	}
	log := a.log.With("component", "cluster")
	register := func(name string) {
		if err := eng.RegisterAccount(engine.AccountFor(name)); err != nil {
			log.Error("register tenant account", "tenant", name, "err", err)
		}
	}
	store.OnTenantChange(func(name string) {
		if _, ok := store.Tenant(name); ok {
			go register(name) // not on the watch goroutine
		}
	})
	for _, t := range store.Tenants() {
		register(t.Name)
	}
}

// clusterStatus is the cluster part of GET /api/status.
func (a *App) clusterStatus() *admin.ClusterStatus {
	a.mu.Lock()
	eng := a.eng
	a.mu.Unlock()
	if eng == nil {
		return nil
	}
	st := eng.Status()
	out := &admin.ClusterStatus{
		Clustered: st.Clustered, Name: st.Cluster, Node: st.Node,
		MetaLeader: st.MetaLeader, Replicas: st.Replicas,
	}
	if ok, why := eng.Ready(); !ok {
		out.NotReady = why
	}
	for _, n := range st.Nodes {
		out.Nodes = append(out.Nodes, admin.ClusterNode(n))
	}
	for _, r := range st.Routes {
		out.Routes = append(out.Routes, admin.ClusterRoute(r))
	}
	return out
}

// engineReady reports whether the engine lets the node serve: always on a
// single node; clustered, while the node is part of a working cluster and
// caught up (engine.Ready). The answer is cached for a second: /readyz is
// polled.
func (a *App) engineReady() bool {
	a.mu.Lock()
	eng := a.eng
	a.mu.Unlock()
	if eng == nil {
		return false
	}
	if !a.cfg.Cluster.Enabled() {
		return true
	}
	c := &a.engReady
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) > time.Second {
		c.ok, _ = eng.Ready()
		c.at = time.Now()
	}
	return c.ok
}

// readyCache holds the last engine readiness answer.
type readyCache struct {
	mu sync.Mutex
	at time.Time // guarded by mu
	ok bool      // guarded by mu
}

// retryInCluster runs open until it succeeds, ctx ends or a minute has
// passed, when the node is clustered, each attempt bounded by two
// seconds: at the first start of a cluster every node creates the
// replicated system buckets at once, and a create may wait for JetStream
// to elect the new streams' leaders, or not be answered at all when
// another node's identical create won (seen: every first attempt ran into
// the client's 5-second timeout, the next one found the bucket). A single
// node runs open once, with ctx.
func retryInCluster[T any](ctx context.Context, a *App, what string, open func(context.Context) (T, error)) (T, error) {
	if !a.cfg.Cluster.Enabled() {
		return open(ctx)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := open(actx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return v, err
		}
		a.log.Info("retrying", "component", "cluster", "what", what, "err", err)
	}
}

// removeNode is the admin API's removal of a stopped node (engine
// RemoveNode), nil on a single node.
func (a *App) removeNode() func(context.Context, string) (*admin.NodeRemoval, error) {
	if !a.cfg.Cluster.Enabled() {
		return nil
	}
	return func(ctx context.Context, name string) (*admin.NodeRemoval, error) {
		a.mu.Lock()
		eng := a.eng
		a.mu.Unlock()
		if eng == nil {
			return nil, errors.New("engine not running")
		}
		r, err := eng.RemoveNode(ctx, name)
		switch {
		case errors.Is(err, engine.ErrUnknownNode):
			return nil, fmt.Errorf("%w: %s", admin.ErrNodeUnknown, name)
		case errors.Is(err, engine.ErrNodeOnline), errors.Is(err, engine.ErrRemoveSelf):
			return nil, fmt.Errorf("%w: %s", admin.ErrNodeOnline, name)
		case err != nil:
			return nil, err
		}
		return &admin.NodeRemoval{Node: r.Node, Replaced: r.Replaced, Took: r.Took}, nil
	}
}
