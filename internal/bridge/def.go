package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// Kinds of bridges.
const (
	KindMQTT  = "mqtt"  // a remote MQTT broker (mqtt.go)
	KindAMQP  = "amqp"  // a remote AMQP 1.0 node (amqp.go)
	KindKafka = "kafka" // a Kafka cluster, out only (kafka.go)
)

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

// DefaultWindow is Window when none is set: enough for a remote a
// millisecond away to keep up with tens of thousands of messages a second
// (see docs/bridges.md, "Throughput").
const DefaultWindow = 64

// MaxWindow is the largest Window: the stored messages a mapping takes
// from the router ahead of the remote's acknowledgements.
const MaxWindow = outWindow

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
	// Window is how many messages an MQTT or AMQP bridge has sent to the
	// remote and not yet had acknowledged, per mapping ("out"): 1 to
	// MaxWindow, 0: DefaultWindow. Kafka always has MaxWindow.
	Window int `json:"window,omitempty"`
	// Disabled bridges are stored but do not run.
	Disabled bool      `json:"disabled,omitempty"`
	Created  time.Time `json:"created"`
}

// Remote is the other broker.
type Remote struct {
	// URL is mqtt://host:port or mqtts://host:port (also tcp://, ssl://,
	// tls://) for MQTT; amqp://host:port or amqps://host:port for AMQP;
	// kafka://host:port[,host:port…] or kafkas://… (the seed brokers) for
	// Kafka.
	URL string `json:"url"`
	// Username and Password: MQTT's CONNECT credentials, SASL PLAIN for
	// AMQP (ANONYMOUS without) and Kafka (no SASL without).
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
// RemotePrefix+T, both ways. For AMQP the remote name is a node address
// (a link's target out, its source in); for Kafka every matching local
// message goes to the Kafka topic Topic, keyed by Key.
type Mapping struct {
	Filter       string `json:"filter"`
	LocalPrefix  string `json:"localPrefix,omitempty"`
	RemotePrefix string `json:"remotePrefix,omitempty"`
	// Topic is the Kafka topic (Kafka only; required).
	Topic string `json:"topic,omitempty"`
	// Key is the Kafka record key (Kafka only): "device" (default: the
	// message's device_id property, else the publishing MQTT client id),
	// "address" (the local address), "property:<name>" (an application
	// property) or "none" (no key: Kafka's partitioner spreads them).
	Key string `json:"key,omitempty"`
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

func (b *Bridge) window() int {
	if b.Window <= 0 {
		return DefaultWindow
	}
	return b.Window
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
	switch b.Kind {
	case KindMQTT, KindAMQP, KindKafka:
	default:
		return invalid("kind %q (want mqtt, amqp or kafka)", b.Kind)
	}
	if b.Direction == "" {
		b.Direction = Out
	}
	switch b.Direction {
	case Out, In, Both:
	default:
		return invalid("direction %q (want out, in or both)", b.Direction)
	}
	if b.Kind == KindKafka && b.Direction != Out {
		return invalid("direction %q: a kafka bridge is out only", b.Direction)
	}
	if b.QoS != nil && *b.QoS != 0 && *b.QoS != 1 {
		return invalid("qos %d (want 0 or 1)", *b.QoS)
	}
	if b.BufferLimit < 0 {
		return invalid("bufferLimit must not be negative")
	}
	if b.Window < 0 || b.Window > MaxWindow {
		return invalid("window %d (want 1 to %d, or 0 for %d)", b.Window, MaxWindow, DefaultWindow)
	}
	switch b.Overflow {
	case "", OverflowKeep, OverflowDropOldest:
	default:
		return invalid("overflow %q (want keep or drop-oldest)", b.Overflow)
	}
	if _, err := b.remoteURL(); err != nil {
		return err
	}
	if _, err := b.tlsConfig(); err != nil {
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
		if err := b.validateKindMapping(i, m); err != nil {
			return err
		}
	}
	return nil
}

var kafkaTopicRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// validateKindMapping checks what a mapping needs for the bridge's kind.
func (b *Bridge) validateKindMapping(i int, m Mapping) error {
	if b.Kind != KindKafka && (m.Topic != "" || m.Key != "") {
		return invalid("mappings[%d]: topic and key are for kafka bridges", i)
	}
	switch b.Kind {
	case KindKafka:
		if !kafkaTopicRE.MatchString(m.Topic) || m.Topic == "." || m.Topic == ".." {
			return invalid("mappings[%d].topic %q (a Kafka topic: [a-zA-Z0-9._-]{1,249})", i, m.Topic)
		}
		if m.RemotePrefix != "" {
			return invalid("mappings[%d].remotePrefix: a kafka mapping names its topic", i)
		}
		switch k := m.Key; {
		case k == "", k == "device", k == "address", k == "none":
		case strings.HasPrefix(k, "property:") && len(k) > len("property:"):
		default:
			return invalid("mappings[%d].key %q (want device, address, property:<name> or none)", i, k)
		}
	case KindAMQP:
		if b.in() && address.IsWildcard(m.Filter) {
			// A link's source is one remote address.
			return invalid("mappings[%d].filter %q: an amqp bridge's in mappings name one address (no wildcards)", i, m.Filter)
		}
	}
	return nil
}

// schemes are the URL schemes of each kind: plain, TLS (with default
// ports); more names for the same (tcp, ssl, tls) map to the first two.
var schemes = map[string]struct {
	plain, tls         string
	plainPort, tlsPort string
	aliases            map[string]string
}{
	KindMQTT:  {"mqtt", "tls", "1883", "8883", map[string]string{"mqtt": "mqtt", "tcp": "mqtt", "mqtts": "tls", "ssl": "tls", "tls": "tls"}},
	KindAMQP:  {"amqp", "amqps", "5672", "5671", map[string]string{"amqp": "amqp", "amqps": "amqps"}},
	KindKafka: {"kafka", "kafkas", "9092", "9093", map[string]string{"kafka": "kafka", "kafkas": "kafkas"}},
}

func (b *Bridge) kind() string {
	if b.Kind == "" {
		return KindMQTT
	}
	return b.Kind
}

// remoteURL parses the remote URL, with the kind's default port (each
// seed broker's for Kafka).
func (b *Bridge) remoteURL() (*url.URL, error) {
	sc, ok := schemes[b.kind()]
	if !ok {
		return nil, invalid("kind %q", b.Kind)
	}
	want := fmt.Sprintf("%s://host:port or %s://host:port", sc.plain, sc.plain+"s")
	if b.kind() == KindKafka {
		want = "kafka://host:port[,host:port…] or kafkas://…"
	}
	u, err := url.Parse(b.Remote.URL)
	if err != nil || u.Host == "" {
		return nil, invalid("remote.url %q (want %s)", b.Remote.URL, want)
	}
	s, ok := sc.aliases[u.Scheme]
	if !ok {
		return nil, invalid("remote.url scheme %q (want %s)", u.Scheme, want)
	}
	u.Scheme = s
	port := sc.plainPort
	if s == sc.tls {
		port = sc.tlsPort
	}
	hosts := strings.Split(u.Host, ",")
	for i, h := range hosts {
		if h == "" {
			return nil, invalid("remote.url %q: an empty host", b.Remote.URL)
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			hosts[i] = net.JoinHostPort(strings.Trim(h, "[]"), port)
		}
	}
	if len(hosts) > 1 && b.kind() != KindKafka {
		return nil, invalid("remote.url %q: one host", b.Remote.URL)
	}
	u.Host = strings.Join(hosts, ",")
	return u, nil
}

// secure reports whether the remote URL asks for TLS.
func (b *Bridge) secure(u *url.URL) bool { return u.Scheme == schemes[b.kind()].tls }

// tlsConfig builds the TLS configuration (nil for plain TCP).
func (b *Bridge) tlsConfig() (*tls.Config, error) {
	u, err := b.remoteURL()
	if err != nil {
		return nil, err
	}
	r := &b.Remote
	if !b.secure(u) {
		if r.CA != "" || r.ClientCert != "" || r.SNI != "" {
			return nil, invalid("remote: ca, clientCert and sni need a TLS url (%s://)", schemes[b.kind()].plain+"s")
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.SNI}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
		if h, _, err := net.SplitHostPort(strings.Split(u.Host, ",")[0]); err == nil {
			cfg.ServerName = h
		}
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
