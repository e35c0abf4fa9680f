package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// Kinds of bridges. Only MQTT is built (issue 17 also asks for AMQP 1.0
// links and Kafka).
const KindMQTT = "mqtt"

// Directions.
const (
	Out  = "out"  // local → remote
	In   = "in"   // remote → local
	Both = "both" // both
)

// Overflow policies, applied when more than BufferLimit messages wait
// for the remote (out).
const (
	// OverflowKeep keeps storing them (the durable subscription grows;
	// the bridge reports "overflow" and the metric counts the lag).
	OverflowKeep = "keep"
	// OverflowDropOldest skips the oldest waiting ones (acknowledged
	// locally unsent, counted as dropped) until the lag is under the
	// limit again.
	OverflowDropOldest = "drop-oldest"
)

// DefaultBufferLimit is BufferLimit when none is set.
const DefaultBufferLimit = 100_000

// Bridge is a bridge definition.
type Bridge struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	Remote    Remote    `json:"remote"`
	Direction string    `json:"direction"`
	Mappings  []Mapping `json:"mappings"`
	// QoS of the remote publishes and subscriptions: 1 (default; at
	// least once) or 0.
	QoS *int `json:"qos,omitempty"`
	// BufferLimit is how many messages may wait for the remote ("out")
	// before Overflow applies; 0: DefaultBufferLimit.
	BufferLimit int    `json:"bufferLimit,omitempty"`
	Overflow    string `json:"overflow,omitempty"`
	// Disabled bridges are stored but do not run.
	Disabled bool      `json:"disabled,omitempty"`
	Created  time.Time `json:"created"`
}

// Remote is the other broker.
type Remote struct {
	// URL is mqtt://host:port or mqtts://host:port (also tcp://, ssl://,
	// tls://).
	URL      string `json:"url"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// ClientID on the remote; default "throng-<tenant>-<bridge>". The
	// remote session (clean start false) is kept under it.
	ClientID string `json:"clientId,omitempty"`
	// CA (PEM) verifies the remote's certificate instead of the system
	// roots; ClientCert and ClientKey (PEM) authenticate throng; SNI is
	// the server name sent and verified (default: the URL's host).
	CA         string `json:"ca,omitempty"`
	ClientCert string `json:"clientCert,omitempty"`
	ClientKey  string `json:"clientKey,omitempty"`
	SNI        string `json:"sni,omitempty"`
}

// Mapping forwards the topics matching Filter, as mosquitto's "topic
// <pattern> <direction> <qos> <local prefix> <remote prefix>": a local
// topic LocalPrefix+T (T matching Filter) is the remote topic
// RemotePrefix+T, both ways.
type Mapping struct {
	Filter       string `json:"filter"`
	LocalPrefix  string `json:"localPrefix,omitempty"`
	RemotePrefix string `json:"remotePrefix,omitempty"`
}

// LocalFilter is the filter of the local subscription ("out").
func (m Mapping) LocalFilter() string { return m.LocalPrefix + m.Filter }

// RemoteFilter is the filter of the remote subscription ("in").
func (m Mapping) RemoteFilter() string { return m.RemotePrefix + m.Filter }

// ToRemote maps a local topic; false if it is not this mapping's.
func (m Mapping) ToRemote(topic string) (string, bool) {
	t, ok := strings.CutPrefix(topic, m.LocalPrefix)
	if !ok || !address.Match(m.Filter, t) {
		return "", false
	}
	return m.RemotePrefix + t, true
}

// ToLocal maps a remote topic; false if it is not this mapping's.
func (m Mapping) ToLocal(topic string) (string, bool) {
	t, ok := strings.CutPrefix(topic, m.RemotePrefix)
	if !ok || !address.Match(m.Filter, t) {
		return "", false
	}
	return m.LocalPrefix + t, true
}

// Effective QoS, limit and policy.
func (b *Bridge) qos() byte {
	if b.QoS == nil {
		return 1
	}
	return byte(*b.QoS)
}

func (b *Bridge) bufferLimit() int {
	if b.BufferLimit <= 0 {
		return DefaultBufferLimit
	}
	return b.BufferLimit
}

func (b *Bridge) overflow() string {
	if b.Overflow == "" {
		return OverflowKeep
	}
	return b.Overflow
}

func (b *Bridge) out() bool { return b.Direction == Out || b.Direction == Both }
func (b *Bridge) in() bool  { return b.Direction == In || b.Direction == Both }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", tenant.ErrInvalid, fmt.Sprintf(format, a...))
}

// Validate checks a definition and fills its defaults (kind, direction).
func (b *Bridge) Validate() error {
	if !nameRE.MatchString(b.Name) {
		return invalid("bridge name %q (want [a-z0-9][a-z0-9_-]{0,62})", b.Name)
	}
	if b.Kind == "" {
		b.Kind = KindMQTT
	}
	if b.Kind != KindMQTT {
		return invalid("kind %q (only %q is built)", b.Kind, KindMQTT)
	}
	if b.Direction == "" {
		b.Direction = Out
	}
	switch b.Direction {
	case Out, In, Both:
	default:
		return invalid("direction %q (want out, in or both)", b.Direction)
	}
	if b.QoS != nil && *b.QoS != 0 && *b.QoS != 1 {
		return invalid("qos %d (want 0 or 1)", *b.QoS)
	}
	if b.BufferLimit < 0 {
		return invalid("bufferLimit must not be negative")
	}
	switch b.Overflow {
	case "", OverflowKeep, OverflowDropOldest:
	default:
		return invalid("overflow %q (want keep or drop-oldest)", b.Overflow)
	}
	if _, err := b.Remote.url(); err != nil {
		return err
	}
	if _, err := b.Remote.tlsConfig(); err != nil {
		return err
	}
	if len(b.Mappings) == 0 {
		return invalid("mappings: at least one")
	}
	for i, m := range b.Mappings {
		if err := address.ValidateFilter(m.Filter); err != nil {
			return invalid("mappings[%d].filter: %v", i, err)
		}
		for _, f := range []string{m.LocalFilter(), m.RemoteFilter()} {
			if err := address.ValidateFilter(f); err != nil {
				return invalid("mappings[%d]: %v", i, err)
			}
		}
		if strings.HasPrefix(m.LocalFilter(), "$") {
			return invalid("mappings[%d]: local filter %q: '$' topics are not bridged", i, m.LocalFilter())
		}
	}
	return nil
}

// url parses the remote URL.
func (r *Remote) url() (*url.URL, error) {
	u, err := url.Parse(r.URL)
	if err != nil || u.Host == "" {
		return nil, invalid("remote.url %q (want mqtt://host:port or mqtts://host:port)", r.URL)
	}
	switch u.Scheme {
	case "mqtt", "tcp":
		u.Scheme = "mqtt"
	case "mqtts", "ssl", "tls":
		u.Scheme = "tls"
	default:
		return nil, invalid("remote.url scheme %q (want mqtt or mqtts)", u.Scheme)
	}
	if u.Port() == "" {
		if u.Scheme == "tls" {
			u.Host += ":8883"
		} else {
			u.Host += ":1883"
		}
	}
	return u, nil
}

// tlsConfig builds the TLS configuration (nil for plain TCP).
func (r *Remote) tlsConfig() (*tls.Config, error) {
	u, err := r.url()
	if err != nil {
		return nil, err
	}
	if u.Scheme != "tls" {
		if r.CA != "" || r.ClientCert != "" || r.SNI != "" {
			return nil, invalid("remote: ca, clientCert and sni need an mqtts:// url")
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.SNI}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	if r.CA != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(r.CA)) {
			return nil, invalid("remote.ca: no PEM certificate")
		}
		cfg.RootCAs = pool
	}
	if (r.ClientCert == "") != (r.ClientKey == "") {
		return nil, invalid("remote: clientCert and clientKey go together")
	}
	if r.ClientCert != "" {
		c, err := tls.X509KeyPair([]byte(r.ClientCert), []byte(r.ClientKey))
		if err != nil {
			return nil, invalid("remote.clientCert/clientKey: %v", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// Redacted returns a copy without secrets (password, client key), for
// answers and logs.
func (b *Bridge) Redacted() *Bridge {
	c := *b
	if c.Remote.Password != "" {
		c.Remote.Password = "********"
	}
	if c.Remote.ClientKey != "" {
		c.Remote.ClientKey = "********"
	}
	c.Mappings = append([]Mapping(nil), b.Mappings...)
	return &c
}
