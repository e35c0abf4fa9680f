package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Cluster joins this node to others (docs/cluster.md). With Listen empty
// the node is a single node, as without this section.
type Cluster struct {
	// Name is the cluster's name, the same on every node (default
	// "throng").
	Name string `yaml:"name"`
	// Listen is the host:port other nodes' routes connect to, e.g.
	// ":6222". Empty: not clustered.
	Listen string `yaml:"listen"`
	// Peers are the route addresses of the nodes (host:port), this one
	// may be among them; the same list on every node is simplest.
	Peers List `yaml:"peers"`
	// NodeName is this node's unique, stable name (default: the host
	// name).
	NodeName string `yaml:"nodeName"`
	// Secret authenticates the routes between nodes: a node without it
	// cannot join. Required when clustered.
	Secret string `yaml:"secret"`
	// Replicas is the replica count of every stream and bucket; 0 picks
	// min(3, nodes).
	Replicas int `yaml:"replicas"`
	// TLS, when set, encrypts the routes between nodes and authenticates
	// them with certificates (mutual TLS).
	TLS ClusterTLS `yaml:"tls"`
}

// ClusterTLS configures mutual TLS on the routes between nodes: every
// route is TLS, each side presents Cert and verifies the other's against
// CA (a node without a certificate from CA cannot join; plain routes are
// refused). The node's certificate serves as server and as client
// certificate, so it needs both extended key usages (or none), and a
// subject alternative name for the host this node is reached by in the
// others' peer lists.
type ClusterTLS struct {
	Cert string `yaml:"cert"` // PEM certificate (chain) of this node
	Key  string `yaml:"key"`  // its PEM private key
	CA   string `yaml:"ca"`   // PEM bundle the other nodes' certificates are verified against
}

// Enabled reports whether route TLS is configured.
func (t ClusterTLS) Enabled() bool { return t.Cert != "" || t.Key != "" || t.CA != "" }

func (t ClusterTLS) problems() []error {
	var errs []error
	if !t.Enabled() {
		return nil
	}
	n := len(errs)
	for _, f := range []struct{ key, path string }{{"cert", t.Cert}, {"key", t.Key}, {"ca", t.CA}} {
		if f.path == "" {
			errs = append(errs, fmt.Errorf("cluster.tls.%s: required with the other cluster.tls files (routes use mutual TLS)", f.key))
		} else if err := readable(f.path); err != nil {
			errs = append(errs, fmt.Errorf("cluster.tls.%s: %v", f.key, err))
		}
	}
	if len(errs) > n {
		return errs
	}
	if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
		errs = append(errs, fmt.Errorf("cluster.tls: %v", err))
	}
	if b, err := os.ReadFile(t.CA); err != nil {
		errs = append(errs, fmt.Errorf("cluster.tls.ca: %v", err))
	} else if !x509.NewCertPool().AppendCertsFromPEM(b) {
		errs = append(errs, fmt.Errorf("cluster.tls.ca: %s holds no PEM certificate", t.CA))
	}
	return errs
}

// Enabled reports whether the node is clustered.
func (c Cluster) Enabled() bool { return c.Listen != "" }

// List is a list of strings: in YAML a sequence or one comma-separated
// string, in flags and environment variables comma-separated.
type List []string

// UnmarshalYAML reads a sequence of strings or a comma-separated string.
func (l *List) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.SequenceNode:
		var out []string
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("want a list of host:port strings")
			}
			out = append(out, c.Value)
		}
		*l = out
		return nil
	case yaml.ScalarNode:
		return l.UnmarshalText([]byte(n.Value))
	}
	return fmt.Errorf("want a list of host:port strings")
}

// UnmarshalText reads a comma-separated list; blanks are dropped.
func (l *List) UnmarshalText(b []byte) error {
	var out []string
	for _, p := range strings.Split(string(b), ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	*l = out
	return nil
}

func (l List) String() string { return strings.Join(l, ",") }

func (c Cluster) problems() []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if !c.Enabled() {
		if len(c.Peers) > 0 {
			bad("cluster.peers: given without cluster.listen (the node's own route listener)")
		}
		if c.Replicas != 0 {
			bad("cluster.replicas: only for a cluster (set cluster.listen)")
		}
		if c.TLS.Enabled() {
			bad("cluster.tls: only for a cluster (set cluster.listen)")
		}
		return errs
	}
	if _, port, err := checkListenAddr(c.Listen); err != nil {
		bad("cluster.listen: %v", err)
	} else if port == 0 && len(c.Peers) > 0 {
		bad("cluster.listen: %q: the other nodes' peer lists need a fixed port", c.Listen)
	}
	if len(c.Peers) == 0 {
		bad("cluster.peers: required when clustered (list every node, this one included)")
	}
	for _, p := range c.Peers {
		if h, _, err := checkListenAddr(p); err != nil || h == "" || strings.Contains(p, ",") {
			bad("cluster.peers: %q: want host:port", p)
		}
	}
	if c.Secret == "" && !c.TLS.Enabled() {
		bad("cluster.secret: required when clustered without cluster.tls (it authenticates the routes between nodes)")
	}
	errs = append(errs, c.TLS.problems()...)
	if c.Name != "" && !clusterNameRE.MatchString(c.Name) {
		bad("cluster.name: %q: letters, digits, '-' and '_' only", c.Name)
	}
	if c.NodeName != "" && !clusterNameRE.MatchString(c.NodeName) {
		bad("cluster.nodeName: %q: letters, digits, '.', '-' and '_' only", c.NodeName)
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		bad("cluster.replicas: %d must be from 1 to 5, or 0 (min(3, nodes))", c.Replicas)
	}
	return errs
}

var clusterNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
