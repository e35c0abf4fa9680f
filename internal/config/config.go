// Package config is throng's typed configuration tree: defaults, validation
// and loading from a YAML file, THRONG_* environment variables and
// command-line flags, in that order of increasing precedence.
//
// Every setting is described once, in the settings table (settings.go),
// which names its YAML key, flag and environment variable; loading, flag
// registration and the reference in docs/operations.md follow that table.
// The package does no I/O beyond reading the config file and checking that
// TLS files are readable.
package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/throngmq/throng/internal/message"
)

// Config is the whole configuration of a throng node.
type Config struct {
	// DataDir holds the engine's file store (DataDir/jetstream).
	DataDir   string    `yaml:"dataDir"`
	Listeners Listeners `yaml:"listeners"`
	TLS       TLS       `yaml:"tls"`
	// AdminPassword is the password of the platform administrator "admin"
	// in the default tenant. Empty: on first start a password is generated
	// and printed once; afterwards the stored hash is kept. Set: the stored
	// hash is kept in sync with it at every start.
	AdminPassword string `yaml:"adminPassword"`
	Log           Log    `yaml:"log"`
	Engine        Engine `yaml:"engine"`
	Debug         Debug  `yaml:"debug"`
	// Anonymous allows connections without credentials from loopback
	// addresses, into the default tenant only.
	Anonymous bool `yaml:"anonymous"`
	// MaxMessageSize is the largest message a client may send on any
	// protocol (AMQP max-message-size, MQTT maximum packet size less
	// room for the topic and properties), at most 256 MiB. A tenant's
	// own maxMessageSize limit, when set, replaces it for that tenant.
	MaxMessageSize ByteSize    `yaml:"maxMessageSize"`
	MQTT           MQTT        `yaml:"mqtt"`
	Connections    Connections `yaml:"connections"`
	Cluster        Cluster     `yaml:"cluster"`
	Metrics        Metrics     `yaml:"metrics"`
}

// Metrics holds settings of /metrics (docs/operations.md).
type Metrics struct {
	// AddressSeries is how many addresses a node may have and still
	// export per-address series (backlog, messages in and out); above
	// it they are left out. Zero: 200; negative: never.
	AddressSeries int `yaml:"addressSeries"`
}

// MQTT holds settings of the MQTT front-end only.
type MQTT struct {
	// MaxKeepAlive caps the keep-alive a client may ask for (whole
	// seconds, at most 65535s); MQTT 5 clients asking for more, or for
	// none, are told it as Server Keep Alive in CONNACK, 3.1.1 clients
	// are held to it. Zero: no maximum.
	MaxKeepAlive Duration `yaml:"maxKeepAlive"`
	// MaxQueuedMessages bounds, per live subscription (a clean session's
	// QoS 1/2 subscription, or the live half of a persistent one), the
	// QoS 1/2 messages that went out unstored and wait on this node
	// because the subscriber is behind. Until it is reached, publishers
	// on this node wait for their PUBACKs (back-pressure); beyond it
	// QueueOverflow applies. As mosquitto's max_queued_messages.
	MaxQueuedMessages int `yaml:"maxQueuedMessages"`
	// QueueOverflow is what happens to a message beyond MaxQueuedMessages:
	// "drop" (dropped and counted) or "disconnect" (dropped, counted, and
	// the subscriber disconnected, with reason 0x97 on MQTT 5).
	QueueOverflow string `yaml:"queueOverflow"`
}

// Defaults of MQTT. DefaultMaxQueuedMessages equals the router's
// DefaultLiveQueue.
const (
	DefaultMaxQueuedMessages = 100000
	DefaultQueueOverflow     = "drop"
)

// Connections bounds what clients get before and while they send: the
// same limits apply to MQTT and AMQP, each front-end counting its own
// connections.
type Connections struct {
	// HandshakeTimeout bounds the time from accept to an authenticated
	// connection (MQTT CONNECT; AMQP protocol header, SASL and open).
	HandshakeTimeout Duration `yaml:"handshakeTimeout"`
	// ReadTimeout bounds the time a started packet or frame may take to
	// arrive whole; keep-alive and idle-time-out count complete ones.
	ReadTimeout Duration `yaml:"readTimeout"`
	// MaxHandshakes bounds the connections in their handshake at once,
	// per front-end; a listener accepts no more until one finishes.
	MaxHandshakes int `yaml:"maxHandshakes"`
	// HandshakeMemory bounds the bytes the connections in their
	// handshake may buffer, per front-end; a connection that would
	// exceed it is closed.
	HandshakeMemory ByteSize `yaml:"handshakeMemory"`

	// Abuse resistance (internal/guard, docs/security.md "Abuse"), on
	// every listener of the node together. Zero turns a limit off.
	//
	// RatePerSource is the new connections one source address may open
	// per second, BurstPerSource how many at once (0: twice the rate).
	RatePerSource  int `yaml:"ratePerSource"`
	BurstPerSource int `yaml:"burstPerSource"`
	// MaxHalfOpen bounds the connections in their handshake on the node
	// (all protocols), MaxHalfOpenPerSource those of one source address;
	// beyond them new connections are refused at once (unlike
	// MaxHandshakes, where the listener waits).
	MaxHalfOpen          int `yaml:"maxHalfOpen"`
	MaxHalfOpenPerSource int `yaml:"maxHalfOpenPerSource"`
	// UnlimitedSources are addresses or prefixes, comma-separated, that
	// the per-source limits and the login backoff per source do not
	// apply to (local tools, a load balancer that hides the clients'
	// addresses).
	UnlimitedSources string `yaml:"unlimitedSources"`
	// LoginBackoff is the longest delay of a refused login after
	// repeated failures of a user or source address (0: off).
	LoginBackoff Duration `yaml:"loginBackoff"`
}

// Defaults of Connections.
const (
	DefaultHandshakeTimeout = Duration(10 * time.Second)
	DefaultReadTimeout      = Duration(30 * time.Second)
	DefaultMaxHandshakes    = 4096
	DefaultHandshakeMemory  = ByteSize(32 << 20)

	DefaultRatePerSource        = 200
	DefaultBurstPerSource       = 400
	DefaultMaxHalfOpen          = 4096
	DefaultMaxHalfOpenPerSource = 256
	DefaultUnlimitedSources     = "127.0.0.0/8, ::1"
	DefaultLoginBackoff         = Duration(5 * time.Second)
)

// DefaultMaxMessageSize is the default of Config.MaxMessageSize (DESIGN.md
// section 10).
const DefaultMaxMessageSize = 64 << 20

// Listeners are the network addresses ("host:port", ":port") throng
// listens on; an empty address disables the listener.
type Listeners struct {
	AMQP          string `yaml:"amqp"`
	AMQPS         string `yaml:"amqps"`
	AMQPWebSocket string `yaml:"amqpWebSocket"`
	MQTT          string `yaml:"mqtt"`
	MQTTS         string `yaml:"mqtts"`
	MQTTWebSocket string `yaml:"mqttWebSocket"`
	HTTP          string `yaml:"http"`
	HTTPS         string `yaml:"https"`
	Admin         string `yaml:"admin"`
}

// TLS names the PEM files used by the TLS listeners.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA, if set, is the CA bundle that client certificates are
	// verified against (they are then requested, not required).
	ClientCA string `yaml:"clientCA"`
	// MinVersion is the lowest TLS version accepted: 1.0, 1.1, 1.2
	// (default) or 1.3.
	MinVersion string `yaml:"minVersion"`
	// Ciphers are the TLS 1.0-1.2 cipher suites offered, by their Go
	// (IANA) names, comma-separated; empty: Go's defaults. TLS 1.3
	// suites are not configurable.
	Ciphers string `yaml:"ciphers"`
	// CRL is a PEM or DER certificate revocation list (or several PEM
	// ones in one file): client certificates it revokes are refused,
	// users' and devices' alike. Reloaded when the file changes.
	CRL string `yaml:"crl"`
}

// Enabled reports whether a certificate is configured.
func (t TLS) Enabled() bool { return t.Cert != "" }

// Log configures structured logging.
type Log struct {
	// Format is "text" or "json".
	Format string `yaml:"format"`
	// Level is "debug", "info", "warn" or "error".
	Level string `yaml:"level"`
	// Audit is where the audit log goes (logins, refusals, permission
	// denials, admin changes; docs/security.md): "stderr" (with the
	// diagnostic log, in its format, whatever its level), "off", or a
	// file that gets JSON lines, appended. Empty is off.
	Audit string `yaml:"audit"`
}

// Engine configures the embedded NATS JetStream engine.
type Engine struct {
	// SyncAlways fsyncs every write batch before a message is acknowledged;
	// otherwise stored messages survive a process kill but not a power loss.
	SyncAlways bool `yaml:"syncAlways"`
	// MaxStore and MaxMemory bound JetStream's disk and memory use; zero
	// lets the engine choose.
	MaxStore  ByteSize `yaml:"maxStore"`
	MaxMemory ByteSize `yaml:"maxMemory"`
	// DiskFreeLimit: while the data directory's file system has less free
	// space, new stored messages are refused (resource-limit-exceeded,
	// MQTT 0x97) so the engine never hits a full disk. Zero: 5% of the file
	// system, between 1 MiB and 256 MiB; -1 disables the guard.
	DiskFreeLimit ByteSize `yaml:"diskFreeLimit"`
}

// Debug holds settings for diagnosing a running node.
type Debug struct {
	// Pprof is the listen address of Go's net/http/pprof handlers
	// (/debug/pprof/). Unauthenticated: bind it to loopback. Empty disables.
	Pprof string `yaml:"pprof"`
}

// Default returns the configuration used when nothing is set.
func Default() *Config {
	return &Config{
		DataDir: "./data",
		Listeners: Listeners{
			AMQP:  ":5672",
			AMQPS: ":5671",
			MQTT:  ":1883",
			MQTTS: ":8883",
			HTTP:  ":8080",
			HTTPS: ":8443",
			Admin: ":8161",
		},
		Log:            Log{Format: "text", Level: "info", Audit: "stderr"},
		Anonymous:      true,
		MaxMessageSize: DefaultMaxMessageSize,
		MQTT:           MQTT{MaxQueuedMessages: DefaultMaxQueuedMessages, QueueOverflow: DefaultQueueOverflow},
		Connections: Connections{
			HandshakeTimeout: DefaultHandshakeTimeout,
			ReadTimeout:      DefaultReadTimeout,
			MaxHandshakes:    DefaultMaxHandshakes,
			HandshakeMemory:  DefaultHandshakeMemory,

			RatePerSource:        DefaultRatePerSource,
			BurstPerSource:       DefaultBurstPerSource,
			MaxHalfOpen:          DefaultMaxHalfOpen,
			MaxHalfOpenPerSource: DefaultMaxHalfOpenPerSource,
			UnlimitedSources:     DefaultUnlimitedSources,
			LoginBackoff:         DefaultLoginBackoff,
		},
		TLS: TLS{MinVersion: "1.2"},
	}
}

// Clone returns a deep copy.
func (c *Config) Clone() *Config {
	cp := *c
	cp.Cluster.Peers = append(List(nil), c.Cluster.Peers...)
	return &cp
}

// Named returns the listeners with their setting names, in a fixed order.
func (l Listeners) Named() []NamedListener {
	return []NamedListener{
		{"amqp", l.AMQP, false},
		{"amqps", l.AMQPS, true},
		{"amqpWebSocket", l.AMQPWebSocket, false},
		{"mqtt", l.MQTT, false},
		{"mqtts", l.MQTTS, true},
		{"mqttWebSocket", l.MQTTWebSocket, false},
		{"http", l.HTTP, false},
		{"https", l.HTTPS, true},
		{"admin", l.Admin, false},
	}
}

// NamedListener is one listener setting.
type NamedListener struct {
	Name string
	Addr string
	TLS  bool // always served over TLS
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid configuration")

// Validate checks the configuration; the error lists every problem found.
func (c *Config) Validate() error {
	if errs := c.problems(); len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// problems lists every problem Validate reports.
func (c *Config) problems() []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if strings.TrimSpace(c.DataDir) == "" {
		bad("dataDir: must not be empty")
	}
	type bound struct {
		name, host string
		port       int
	}
	var used []bound
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	for _, l := range c.Listeners.Named() {
		if l.Addr == "" {
			continue
		}
		host, port, err := checkListenAddr(l.Addr)
		if err != nil {
			bad("listeners.%s: %v", l.Name, err)
			continue
		}
		if port == 0 {
			continue // each :0 gets its own free port
		}
		for _, u := range used {
			if u.port == port && (u.host == host || wildcard(u.host) || wildcard(host)) {
				bad("listeners.%s: port %d is also used by listeners.%s", l.Name, port, u.name)
			}
		}
		used = append(used, bound{l.Name, host, port})
	}
	switch {
	case (c.TLS.Cert == "") != (c.TLS.Key == ""):
		bad("tls: cert and key must be given together")
	case c.TLS.Cert != "":
		if err := readable(c.TLS.Cert); err != nil {
			bad("tls.cert: %v", err)
		}
		if err := readable(c.TLS.Key); err != nil {
			bad("tls.key: %v", err)
		}
		if len(errs) == 0 {
			if _, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key); err != nil {
				bad("tls: %v", err)
			}
		}
	}
	if c.TLS.ClientCA != "" {
		if b, err := os.ReadFile(c.TLS.ClientCA); err != nil {
			bad("tls.clientCA: %v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(b) {
			bad("tls.clientCA: %s holds no PEM certificate", c.TLS.ClientCA)
		}
	}
	if _, err := TLSVersion(c.TLS.MinVersion); err != nil {
		bad("tls.minVersion: %v", err)
	}
	if _, err := CipherSuites(c.TLS.Ciphers); err != nil {
		bad("tls.ciphers: %v", err)
	}
	if c.TLS.CRL != "" {
		if b, err := os.ReadFile(c.TLS.CRL); err != nil {
			bad("tls.crl: %v", err)
		} else if _, err := ParseCRLs(b); err != nil {
			bad("tls.crl: %s: %v", c.TLS.CRL, err)
		}
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format: %q (want text or json)", c.Log.Format)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "warning", "error":
	default:
		bad("log.level: %q (want debug, info, warn or error)", c.Log.Level)
	}
	if c.Engine.MaxStore < 0 {
		bad("engine.maxStore: must not be negative")
	}
	if c.Engine.DiskFreeLimit < -1 {
		bad("engine.diskFreeLimit: must be a size, 0 (default) or -1 (off)")
	}
	if c.Engine.MaxMemory < 0 {
		bad("engine.maxMemory: must not be negative")
	}
	if k := time.Duration(c.MQTT.MaxKeepAlive); k < 0 || k > 65535*time.Second || k%time.Second != 0 {
		bad("mqtt.maxKeepAlive: %s must be whole seconds from 0 to 65535s", c.MQTT.MaxKeepAlive)
	}
	if c.MQTT.MaxQueuedMessages <= 0 {
		bad("mqtt.maxQueuedMessages: %d must be positive", c.MQTT.MaxQueuedMessages)
	}
	switch c.MQTT.QueueOverflow {
	case "drop", "disconnect":
	default:
		bad("mqtt.queueOverflow: %q (want drop or disconnect)", c.MQTT.QueueOverflow)
	}
	if c.Connections.HandshakeTimeout <= 0 {
		bad("connections.handshakeTimeout: must be positive")
	}
	if c.Connections.ReadTimeout <= 0 {
		bad("connections.readTimeout: must be positive")
	}
	if c.Connections.MaxHandshakes <= 0 {
		bad("connections.maxHandshakes: must be positive")
	}
	if c.Connections.HandshakeMemory < 64<<10 {
		bad("connections.handshakeMemory: %s must be at least 64KiB", c.Connections.HandshakeMemory)
	}
	if c.Connections.RatePerSource < 0 || c.Connections.BurstPerSource < 0 {
		bad("connections.ratePerSource, burstPerSource: must not be negative (0: off, default)")
	}
	if c.Connections.MaxHalfOpen < 0 || c.Connections.MaxHalfOpenPerSource < 0 {
		bad("connections.maxHalfOpen, maxHalfOpenPerSource: must not be negative (0: off)")
	}
	if _, err := Prefixes(c.Connections.UnlimitedSources); err != nil {
		bad("connections.unlimitedSources: %v", err)
	}
	if c.Connections.LoginBackoff < 0 {
		bad("connections.loginBackoff: must not be negative (0: off)")
	}
	if c.MaxMessageSize < 1<<10 || c.MaxMessageSize > message.MaxSize {
		bad("maxMessageSize: %s must be from 1KiB to 256MiB", c.MaxMessageSize)
	}
	errs = append(errs, c.Cluster.problems()...)
	return errs
}

// checkListenAddr checks "host:port" where host may be empty, an IP or a
// host name and port is a number in 0..65535 (0 picks a free port).
func checkListenAddr(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q: want host:port or :port", addr)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	if strings.ContainsAny(host, " /\\") {
		return "", 0, fmt.Errorf("%q: bad host", addr)
	}
	return host, port, nil
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// Redacted returns a copy with secrets replaced, for printing and logging.
func (c *Config) Redacted() *Config {
	cp := c.Clone()
	if cp.AdminPassword != "" {
		cp.AdminPassword = "REDACTED"
	}
	if cp.Cluster.Secret != "" {
		cp.Cluster.Secret = "REDACTED"
	}
	return cp
}

// YAML renders the configuration with secrets redacted.
func (c *Config) YAML() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c.Redacted()); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Prefixes parses a comma-separated list of IP addresses and prefixes
// ("127.0.0.1, 10.0.0.0/8, ::1").
func Prefixes(s string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if a, err := netip.ParseAddr(f); err == nil {
			ps = append(ps, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or prefix (e.g. 10.0.0.0/8)", f)
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}

// TLSVersion parses a TLS version: "1.0", "1.1", "1.2", "1.3" (a "TLS"
// prefix is allowed); empty is 1.2.
func TLSVersion(s string) (uint16, error) {
	v := strings.TrimPrefix(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "tls"), "v")
	switch strings.TrimSpace(v) {
	case "1.0", "10":
		return tls.VersionTLS10, nil
	case "1.1", "11":
		return tls.VersionTLS11, nil
	case "", "1.2", "12":
		return tls.VersionTLS12, nil
	case "1.3", "13":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%q (want 1.0, 1.1, 1.2 or 1.3)", s)
}

// CipherSuites parses comma-separated cipher suite names as crypto/tls
// names them (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ...); empty: nil,
// Go's defaults. TLS 1.3 suites are refused: they are not configurable.
func CipherSuites(s string) ([]uint16, error) {
	known := map[string]uint16{}
	for _, c := range tls.CipherSuites() {
		known[c.Name] = c.ID
	}
	for _, c := range tls.InsecureCipherSuites() {
		known[c.Name] = c.ID
	}
	var ids []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		id, ok := known[f]
		if !ok {
			return nil, fmt.Errorf("unknown cipher suite %q (names as in Go's crypto/tls, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)", f)
		}
		if id == tls.TLS_AES_128_GCM_SHA256 || id == tls.TLS_AES_256_GCM_SHA384 || id == tls.TLS_CHACHA20_POLY1305_SHA256 {
			return nil, fmt.Errorf("%s is a TLS 1.3 suite: TLS 1.3 suites are not configurable", f)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// ParseCRLs parses one DER certificate revocation list or any number of
// PEM ones ("X509 CRL" blocks).
func ParseCRLs(b []byte) ([]*x509.RevocationList, error) {
	var crls []*x509.RevocationList
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "X509 CRL" {
			continue
		}
		crl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return nil, err
		}
		crls = append(crls, crl)
	}
	if len(crls) > 0 {
		return crls, nil
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, errors.New("no PEM X509 CRL block and not a DER CRL")
	}
	return []*x509.RevocationList{crl}, nil
}
