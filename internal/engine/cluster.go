package engine

// A clustered engine (docs/cluster.md).
//
// Each throng node embeds one NATS server; with Cluster set they join
// each other with NATS routes and run JetStream clustered: a meta group
// (Raft) places every stream on Replicas nodes and each stream is its own
// Raft group. throng adds three things on top:
//
//   - route authentication: every node presents the cluster secret as the
//     route password, so a node without it cannot join; with TLS, routes
//     are mutual TLS as well (or instead), verified against the cluster's
//     CA;
//   - tenant accounts on every node: JetStream assigns a stream of an
//     account to a node that must already have registered the account (a
//     member that does not know it refuses the assignment, and a refused
//     assignment is not retried: nats-server's processStreamAssignment
//     with no account resolver). So the first EnsureAccount of an account
//     in a process announces it to the other nodes, which register it
//     before this one goes on to create streams (announce); app also
//     registers every tenant of the replicated tenant list on every node
//     (app/cluster.go, for nodes that missed an announcement); and every
//     account registered is
//     remembered in the data directory and registered before the server
//     starts, so that it is there when the meta group replays its
//     assignments at start (knownAccounts);
//   - readiness: a node is ready once the meta group has a leader and the
//     system account's streams here are current (Ready).

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Cluster configures a clustered engine. The zero value (Listen empty) is
// a single node.
type Cluster struct {
	// Name is the cluster's name, the same on every node.
	Name string
	// NodeName is this node's name, unique in the cluster (the JetStream
	// server name: it must stay the same across restarts).
	NodeName string
	// Listen is the host:port the routes of the other nodes connect to.
	Listen string
	// Peers are the route addresses (host:port) of the nodes; this node's
	// own address may be among them (it is recognised and skipped).
	Peers []string
	// Secret authenticates routes: every node uses it as route password.
	// It may be empty when TLS is set (the certificates authenticate).
	Secret string
	// TLS, when set, makes every route TLS, both ways: the server side
	// of a route must require and verify the client's certificate
	// (ClientAuth, ClientCAs or GetConfigForClient) and the client side
	// verify the server's (RootCAs, or VerifyConnection) and present one
	// (GetClientCertificate or Certificates). A route that does not
	// complete the handshake is refused, plain ones included. The caller
	// keeps it; the server reads it without a lock, so its fields never
	// change: certificates and CAs change through its callbacks (app
	// reloads them).
	TLS *tls.Config
	// Replicas is the replica count of every stream and bucket; zero
	// picks min(3, nodes), the nodes being Peers plus this one.
	Replicas int
	// JoinTimeout bounds how long Start waits for the cluster (a meta
	// leader and Replicas nodes online); zero means 5 minutes.
	JoinTimeout time.Duration
}

// Enabled reports whether the engine is clustered.
func (c *Cluster) Enabled() bool { return c != nil && c.Listen != "" }

// routeUser is the route user name; the cluster secret is its password.
const routeUser = "throng-route"

// accountsFile lists, one per line, the accounts a clustered node has
// registered, so that it registers them again before its server starts.
const accountsFile = "cluster-accounts"

// announceSubject carries account announcements, in the system account.
const announceSubject = "throng.engine.account"

// nodes is the cluster size the peer list gives: distinct peers, this
// node counted once whether or not it is listed.
func (c *Cluster) nodes() int {
	seen := map[string]bool{}
	self := false
	for _, p := range c.Peers {
		p = strings.TrimSpace(p)
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		if isSelf(p, c.Listen, c.NodeName) {
			self = true
		}
	}
	n := len(seen)
	if !self {
		n++
	}
	return n
}

// replicas is the replica count of streams and buckets.
func (c *Cluster) replicas() int {
	if !c.Enabled() {
		return 1
	}
	if c.Replicas > 0 {
		return c.Replicas
	}
	return min(3, c.nodes())
}

// isSelf reports whether the peer address names this node's own route
// listener: the same port, and a host that is a local address, the host
// name or the node name.
func isSelf(peer, listen, nodeName string) bool {
	ph, pp, err := net.SplitHostPort(peer)
	if err != nil {
		return false
	}
	lh, lp, err := net.SplitHostPort(listen)
	if err != nil || pp != lp {
		return false
	}
	if ph == lh || ph == nodeName {
		return true
	}
	if hn, err := os.Hostname(); err == nil && strings.EqualFold(ph, hn) {
		return true
	}
	ips := []net.IP{net.ParseIP(ph)}
	if ips[0] == nil {
		ips = nil
		if addrs, err := net.LookupIP(ph); err == nil {
			ips = addrs
		}
	}
	local, _ := net.InterfaceAddrs()
	for _, ip := range ips {
		if ip.IsLoopback() || ip.IsUnspecified() {
			return true
		}
		for _, a := range local {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return true
			}
		}
	}
	return false
}

// clusterOptions fills the server options of a clustered engine: routes,
// their authentication, JetStream clustering and the accounts known from
// earlier runs, registered (with JetStream) before the server starts.
func clusterOptions(opts *server.Options, c *Cluster, dataDir string) ([]string, error) {
	host, ps, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return nil, fmt.Errorf("engine: cluster listen %q: %w", c.Listen, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return nil, fmt.Errorf("engine: cluster listen %q: bad port", c.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if c.NodeName == "" {
		return nil, errors.New("engine: cluster node name is required")
	}
	if c.Secret == "" && c.TLS == nil {
		return nil, errors.New("engine: cluster secret or TLS is required")
	}
	accounts, err := readAccounts(dataDir)
	if err != nil {
		return nil, err
	}
	for _, a := range []string{SystemAccount, AccountFor("default")} {
		if !slices.Contains(accounts, a) {
			accounts = append(accounts, a)
		}
	}
	// Only the accounts block goes through the configuration parser: it
	// is the one way to have accounts with JetStream enabled before the
	// server starts (Account.jsLimits is not exported).
	var conf strings.Builder
	conf.WriteString("accounts {\n")
	for _, a := range accounts {
		fmt.Fprintf(&conf, "  %s: { jetstream: enabled }\n", strconv.Quote(a))
	}
	conf.WriteString("}\n")
	if err := opts.ProcessConfigString(conf.String()); err != nil {
		return nil, fmt.Errorf("engine: known accounts: %w", err)
	}

	name := c.Name
	if name == "" {
		name = "throng"
	}
	opts.ServerName = c.NodeName
	opts.Cluster = server.ClusterOpts{
		Name: name,
		Host: host,
		Port: port,
		// Clients never connect over the network: do not tell them
		// about other nodes.
		NoAdvertise: true,
	}
	var user *url.Userinfo
	if c.Secret != "" {
		opts.Cluster.Username, opts.Cluster.Password = routeUser, c.Secret
		user = url.UserPassword(routeUser, c.Secret)
	}
	if c.TLS != nil {
		// The server does the handshake on every route it accepts or
		// solicits before anything else (createRoute), so a node without
		// TLS, or whose certificate the CA did not sign, never gets to
		// the route protocol. 5 s rather than the server's 2 s: a loaded
		// node's handshake (ECDSA/RSA) must not fail a route.
		opts.Cluster.TLSConfig = c.TLS
		opts.Cluster.TLSTimeout = 5
		// Nothing must let a route up unverified: the server verifies
		// accepted routes' certificates only as ClientAuth says, and with
		// InsecureSkipVerify only a warning (which app demotes, as it
		// verifies them itself) tells that solicited routes' are not.
		if c.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
			return nil, errors.New("engine: cluster TLS must require and verify the routes' client certificates")
		}
		if c.TLS.InsecureSkipVerify && c.TLS.VerifyConnection == nil {
			return nil, errors.New("engine: cluster TLS with InsecureSkipVerify needs VerifyConnection")
		}
	}
	for _, p := range c.Peers {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(p); err != nil {
			return nil, fmt.Errorf("engine: cluster peer %q: want host:port", p)
		}
		opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats-route", Host: p, User: user})
	}
	// The server starts its routes only once its client listener is up
	// (Server.Start): a clustered engine listens on loopback, on a
	// random port, behind the same authenticator as in-process clients
	// (the process's secret).
	opts.DontListen = false
	opts.Host = "127.0.0.1"
	opts.Port = server.RANDOM_PORT
	return accounts, nil
}

func readAccounts(dataDir string) ([]string, error) {
	f, err := os.Open(filepath.Join(dataDir, accountsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if a := strings.TrimSpace(sc.Text()); a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, sc.Err()
}

// rememberAccount appends the account to the data directory's list.
func (e *Engine) rememberAccount(name string) error {
	f, err := os.OpenFile(filepath.Join(e.dataDir, accountsFile), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("engine: remember account: %w", err)
	}
	if _, err := f.WriteString(name + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("engine: remember account: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("engine: remember account: %w", err)
	}
	return f.Close()
}

// waitForCluster blocks until the meta group has a leader and enough
// nodes are online to place streams with the configured replicas, or
// ctx ends (the node is asked to stop: its error wraps ctx's).
func (e *Engine) waitForCluster(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	for {
		st := e.Status()
		online := 0
		for _, n := range st.Nodes {
			if n.Online {
				online++
			}
		}
		if st.MetaLeader != "" && online >= e.replicas {
			e.log.Info("joined the cluster", "cluster", st.Cluster, "node", st.Node, "meta_leader", st.MetaLeader, "nodes_online", online, "replicas", e.replicas)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("engine: the cluster did not form in %s (meta leader %q, %d nodes online, %d needed)", timeout, st.MetaLeader, online, e.replicas)
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			e.log.Info("waiting for the cluster", "meta_leader", st.MetaLeader, "nodes_online", online, "replicas", e.replicas, "routes", len(st.Routes))
		}
		select {
		case <-ctx.Done():
			e.log.Info("stopped while waiting for the cluster", "meta_leader", st.MetaLeader, "nodes_online", online, "replicas", e.replicas)
			return fmt.Errorf("engine: stopped while waiting for the cluster: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startAnnouncements subscribes to the announcements of other nodes.
func (e *Engine) startAnnouncements() error {
	nc, err := e.Connect(SystemAccount, nats.Name("engine-accounts"))
	if err != nil {
		return err
	}
	// A starting node asks which accounts the others know (learnAccounts).
	if _, err := nc.Subscribe(accountsSubject, func(m *nats.Msg) {
		e.mu.Lock()
		names := make([]string, 0, len(e.accounts))
		for n := range e.accounts {
			names = append(names, n)
		}
		e.mu.Unlock()
		b, _ := json.Marshal(names)
		_ = m.Respond(b)
	}); err != nil {
		nc.Close()
		return err
	}
	_, err = nc.Subscribe(announceSubject, func(m *nats.Msg) {
		name := string(m.Data)
		if err := e.RegisterAccount(name); err != nil {
			e.log.Warn("register announced account", "account", name, "err", err)
			return
		}
		_ = m.Respond([]byte(e.nodeName))
	})
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		nc.Close()
		return err
	}
	e.announceConn = nc
	return nil
}

// announce tells the other nodes about an account and waits (at most
// announceTimeout) until every node online has registered it.
func (e *Engine) announce(name string) {
	nc := e.announceConn
	if nc == nil {
		return
	}
	want := map[string]bool{}
	for _, n := range e.Status().Nodes {
		if n.Online && n.Name != e.nodeName {
			want[n.Name] = true
		}
	}
	if len(want) == 0 {
		return
	}
	inbox := nc.NewInbox()
	replies := make(chan string, 64)
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		select {
		case replies <- string(m.Data):
		default:
		}
	})
	if err != nil {
		return
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(announceSubject, inbox, []byte(name)); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), announceTimeout)
	defer cancel()
	for len(want) > 0 {
		select {
		case n := <-replies:
			delete(want, n)
		case <-ctx.Done():
			missing := make([]string, 0, len(want))
			for n := range want {
				missing = append(missing, n)
			}
			e.log.Warn("account not confirmed by every node; they register it from the tenant list", "account", name, "missing", missing)
			return
		}
	}
}

// announceTimeout bounds the wait for other nodes to register an account.
const announceTimeout = 5 * time.Second

// accountsSubject is where a node asks the others for the accounts they
// know, in the system account.
const accountsSubject = "throng.engine.accounts"

// learnAccounts asks the other nodes online which accounts they know and
// registers those this node does not (remembering them in the data
// directory); it returns them. A node that joins without an account
// its peers have — a new node, or one that was down while a tenant was
// created — registers it too late for its routes: the peers sent their
// interest in the account's subjects (stream API, KV, inboxes) when the
// routes connected, and a node without the account drops it ("Unknown
// account") and is never sent it again. Requests from this node to
// streams led elsewhere then get no responders (an MQTT CONNECT on a new
// node: "session store unavailable"). Start therefore starts such a node
// again: accounts in the data directory are declared before the routes
// connect.
func (e *Engine) learnAccounts() []string {
	nc := e.announceConn
	if nc == nil {
		return nil
	}
	want := map[string]bool{}
	for _, n := range e.Status().Nodes {
		if n.Online && n.Name != e.nodeName {
			want[n.Name] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	inbox := nc.NewInbox()
	replies := make(chan []byte, 64)
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		select {
		case replies <- m.Data:
		default:
		}
	})
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(accountsSubject, inbox, nil); err != nil {
		return nil
	}
	var learnt []string
	timeout := time.After(announceTimeout)
	for got := 0; got < len(want); got++ {
		var b []byte
		select {
		case b = <-replies:
		case <-timeout:
			e.log.Warn("not every node said which accounts it knows", "asked", len(want), "answered", got)
			return learnt
		}
		var names []string
		if json.Unmarshal(b, &names) != nil {
			continue
		}
		for _, n := range names {
			// Declared before the start (data directory, system and
			// default accounts): the routes carried its interest.
			if _, err := e.srv.LookupAccount(n); err == nil {
				continue
			}
			if _, err := e.registerLocal(n); err != nil {
				e.log.Warn("register account learnt from the cluster", "account", n, "err", err)
				continue
			}
			learnt = append(learnt, n)
		}
	}
	return learnt
}

// Status is what a node knows of the cluster.
type Status struct {
	Clustered  bool          `json:"clustered"`
	Cluster    string        `json:"cluster,omitempty"`
	Node       string        `json:"node"`
	MetaLeader string        `json:"metaLeader,omitempty"`
	Replicas   int           `json:"replicas"`
	Nodes      []NodeStatus  `json:"nodes"`
	Routes     []RouteStatus `json:"routes,omitempty"`
}

// NodeStatus is one node of the JetStream meta group.
type NodeStatus struct {
	Name    string `json:"name"`
	Self    bool   `json:"self,omitempty"`
	Leader  bool   `json:"leader,omitempty"`
	Online  bool   `json:"online"`
	Current bool   `json:"current"`
	// LastSeen is how long ago the leader last heard from it.
	LastSeen string `json:"lastSeen,omitempty"`
}

// RouteStatus is one route connection to another node.
type RouteStatus struct {
	Node       string `json:"node"`
	Addr       string `json:"addr"`
	Configured bool   `json:"configured"`
	Since      string `json:"since"`
	RTT        string `json:"rtt,omitempty"`
}

// Status reports the node and, when clustered, the nodes of the meta
// group and the routes.
func (e *Engine) Status() Status {
	st := Status{Clustered: e.cluster.Enabled(), Node: e.nodeName, Replicas: e.replicas}
	if !st.Clustered {
		st.Nodes = []NodeStatus{{Name: e.nodeName, Self: true, Leader: true, Online: true, Current: true}}
		return st
	}
	if js, err := e.srv.Jsz(&server.JSzOptions{}); err == nil && js.Meta != nil {
		m := js.Meta
		st.Cluster = m.Name
		st.MetaLeader = m.Leader
		st.Nodes = append(st.Nodes, NodeStatus{Name: e.nodeName, Self: true, Leader: m.Leader == e.nodeName, Online: true, Current: e.srv.JetStreamIsCurrent()})
		for _, p := range m.Replicas {
			if p.Name == e.nodeName {
				continue
			}
			n := NodeStatus{Name: p.Name, Leader: p.Name == m.Leader, Online: !p.Offline, Current: p.Current}
			if p.Active > 0 {
				n.LastSeen = p.Active.Round(time.Millisecond).String()
			}
			st.Nodes = append(st.Nodes, n)
		}
	}
	if st.Cluster == "" {
		st.Cluster = e.srv.ClusterName()
	}
	if rz, err := e.srv.Routez(nil); err == nil {
		seen := map[string]bool{}
		for _, r := range rz.Routes {
			// Routes are pooled (several connections per node) and may
			// be per account: one line per node.
			if seen[r.RemoteName] {
				continue
			}
			seen[r.RemoteName] = true
			st.Routes = append(st.Routes, RouteStatus{
				Node: r.RemoteName, Addr: net.JoinHostPort(r.IP, strconv.Itoa(r.Port)),
				Configured: r.IsConfigured, Since: r.Uptime, RTT: r.RTT,
			})
		}
		// A node this one has a route to but whose meta-group peer it
		// has not learnt yet (just after a start: the peers of the meta
		// group are learnt a moment after the routes) is online all the
		// same; without it, lists across nodes would leave it out
		// without naming it missing (CI: TestConnectionsAcrossNodes).
		for name := range seen {
			if name != "" && name != e.nodeName && !slices.ContainsFunc(st.Nodes, func(n NodeStatus) bool { return n.Name == name }) {
				st.Nodes = append(st.Nodes, NodeStatus{Name: name, Online: true})
			}
		}
	}
	slices.SortFunc(st.Nodes, func(a, b NodeStatus) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Routes, func(a, b RouteStatus) int { return strings.Compare(a.Node, b.Node) })
	return st
}

// Ready reports whether the node may serve clients: always for a single
// node; clustered, once the meta group has a leader, this node has caught
// up with it, and the system account's streams here are current. The
// reason says what is missing.
func (e *Engine) Ready() (bool, string) {
	if !e.cluster.Enabled() {
		return e.srv.Running(), "engine stopped"
	}
	if !e.srv.Running() {
		return false, "engine stopped"
	}
	if !e.srv.JetStreamIsCurrent() {
		return false, "not caught up with the JetStream meta leader"
	}
	// 404: the account has no streams yet, nothing to catch up with.
	h := e.srv.Healthz(&server.HealthzOptions{Account: SystemAccount})
	if h.Status != "ok" && h.StatusCode != http.StatusNotFound {
		return false, h.Error
	}
	return true, ""
}
