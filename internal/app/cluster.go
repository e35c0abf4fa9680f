package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
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
// certificate, the key and the CA are read again when their files change
// (at the next handshake) and on SIGHUP (Reload), so that an operator
// can rotate the CA (docs/cluster.md, "Route TLS").
//
// nats-server uses this one *tls.Config for every route, cloned for the
// routes it solicits, and reads it without a lock: its fields must never
// change, and Go reads the CAs from fields (ClientCAs, RootCAs). So the
// CA in force comes from callbacks: an accepted route's handshake takes
// a configuration with the current ClientCAs from GetConfigForClient; a
// solicited route's verification is VerifyConnection's, with
// InsecureSkipVerify only turning Go's own verification (against a
// fixed RootCAs) off — verifyRoute does all it did.
func (a *App) routeTLS() (*tls.Config, error) {
	t := a.cfg.Cluster.TLS
	if !t.Enabled() {
		return nil, nil
	}
	r := &certReloader{cert: t.Cert, key: t.Key}
	if _, err := r.get(nil); err != nil {
		return nil, fmt.Errorf("app: cluster.tls: %w", err)
	}
	ca := &caReloader{file: t.CA, log: a.log.With("component", "app")}
	if _, err := ca.force(); err != nil {
		return nil, err
	}
	a.reload.mu.Lock()
	a.reload.routeCert, a.reload.routeCA = r, ca
	a.reload.mu.Unlock()
	var peerHosts []string
	for _, p := range a.cfg.Cluster.Peers {
		if h, _, err := net.SplitHostPort(strings.TrimSpace(p)); err == nil {
			peerHosts = append(peerHosts, h)
		}
	}
	accept := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.get,
		ClientAuth:     tls.RequireAndVerifyClientCert,
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.get,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.get(nil)
		},
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := accept.Clone()
			c.ClientCAs = ca.get()
			return c, nil
		},
		InsecureSkipVerify: true, // verified by verifyRoute
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyRoute(cs, ca.get(), peerHosts)
		},
	}, nil
}

// verifyRoute verifies, on a route this node solicited, the peer's
// certificate as Go's client does: its chain against the CA pool, for
// server authentication, and its name against the host the route was
// dialled by (ServerName: the peer list's host, or nats-server's
// routeTLSName for an address learnt by gossip). Go does not send an IP
// address as server name, so for a route dialled by address ServerName
// is empty: then the certificate must be valid for one of the peer
// list's hosts.
func verifyRoute(cs tls.ConnectionState, pool *x509.CertPool, peerHosts []string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the route's peer sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	opts := x509.VerifyOptions{Roots: pool, DNSName: cs.ServerName, Intermediates: x509.NewCertPool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	if cs.ServerName != "" {
		return nil
	}
	for _, h := range peerHosts {
		if leaf.VerifyHostname(h) == nil {
			return nil
		}
	}
	return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates,
		Err: fmt.Errorf("x509: certificate is valid for none of the peers' hosts %v", peerHosts)}
}

// caReloader serves the CA pool of a PEM bundle, reading the file again
// when its modification time changes (at the next handshake) and on
// force (SIGHUP). A file that does not load — being written, or without
// a certificate — keeps the pool in force, and is tried again at the
// next handshake.
type caReloader struct {
	file string
	log  *slog.Logger

	mu     sync.Mutex // handshakes run concurrently
	mod    time.Time  // of the file in force
	badMod time.Time  // of the last file that did not load (warned)
	pool   *x509.CertPool
	n      int // certificates in pool
}

// force loads the file now, whatever its modification time; it returns
// the number of certificates loaded.
func (r *caReloader) force() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loadLocked()
}

func (r *caReloader) loadLocked() (int, error) {
	st, err := os.Stat(r.file)
	if err != nil {
		return 0, fmt.Errorf("app: cluster.tls.ca: %w", err)
	}
	b, err := os.ReadFile(r.file)
	if err != nil {
		return 0, fmt.Errorf("app: cluster.tls.ca: %w", err)
	}
	pool, n := x509.NewCertPool(), 0
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return 0, fmt.Errorf("app: cluster.tls.ca %s: certificate %d: %w", r.file, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("app: cluster.tls.ca %s: no certificates", r.file)
	}
	r.pool, r.mod, r.n = pool, st.ModTime(), n
	return n, nil
}

// get returns the pool in force, read again first if the file changed.
func (r *caReloader) get() *x509.CertPool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, err := os.Stat(r.file); err == nil && st.ModTime() != r.mod {
		if n, err := r.loadLocked(); err != nil {
			// Tried again at the next handshake (warned once per
			// modification time): a file caught half written must be
			// read once complete, even if its time did not change —
			// else an old CA the operator removed stays trusted.
			if st.ModTime() != r.badMod {
				r.log.Warn("cluster.tls.ca changed but does not load; the CA in force stays", "err", err)
				r.badMod = st.ModTime()
			}
		} else {
			r.log.Info("cluster.tls.ca changed: loaded", "ca", r.file, "certificates", n)
		}
	}
	return r.pool
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
