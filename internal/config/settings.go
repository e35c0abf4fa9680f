package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Setting describes one configuration setting: where it lives in the YAML
// tree, its flag and environment variable, and how to read and write it as
// a string. The table is the single source for loading, flags and docs.
type Setting struct {
	Key   string // YAML path, dot-separated ("listeners.amqp")
	Flag  string // command-line flag without dashes ("amqp")
	Env   string // environment variable ("THRONG_AMQP")
	Bool  bool   // a boolean flag (may be given without a value)
	Usage string
	get   func(*Config) string
	set   func(*Config, string) error
}

// Get returns the setting's value in c as a string.
func (s Setting) Get(c *Config) string { return s.get(c) }

// Set parses v into the setting in c.
func (s Setting) Set(c *Config, v string) error { return s.set(c, v) }

func str(key, flag, env, usage string, p func(*Config) *string) Setting {
	return Setting{Key: key, Flag: flag, Env: env, Usage: usage,
		get: func(c *Config) string { return *p(c) },
		set: func(c *Config, v string) error { *p(c) = v; return nil },
	}
}

func boolean(key, flag, env, usage string, p func(*Config) *bool) Setting {
	return Setting{Key: key, Flag: flag, Env: env, Bool: true, Usage: usage,
		get: func(c *Config) string { return strconv.FormatBool(*p(c)) },
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not a boolean", v)
			}
			*p(c) = b
			return nil
		},
	}
}

func size(key, flag, env, usage string, p func(*Config) *ByteSize) Setting {
	return Setting{Key: key, Flag: flag, Env: env, Usage: usage,
		get: func(c *Config) string { return p(c).String() },
		set: func(c *Config, v string) error { return p(c).UnmarshalText([]byte(v)) },
	}
}

func duration(key, flag, env, usage string, p func(*Config) *Duration) Setting {
	return Setting{Key: key, Flag: flag, Env: env, Usage: usage,
		get: func(c *Config) string { return p(c).String() },
		set: func(c *Config, v string) error { return p(c).UnmarshalText([]byte(v)) },
	}
}

func integer(key, flag, env, usage string, p func(*Config) *int) Setting {
	return Setting{Key: key, Flag: flag, Env: env, Usage: usage,
		get: func(c *Config) string { return strconv.Itoa(*p(c)) },
		set: func(c *Config, v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("%q is not a whole number", v)
			}
			*p(c) = n
			return nil
		},
	}
}

// Settings lists every setting, in documentation order.
var Settings = []Setting{
	str("dataDir", "data-dir", "THRONG_DATA_DIR", "directory of the message store and platform state",
		func(c *Config) *string { return &c.DataDir }),
	str("listeners.amqp", "amqp", "THRONG_AMQP", "AMQP 1.0 listen address (empty disables)",
		func(c *Config) *string { return &c.Listeners.AMQP }),
	str("listeners.amqps", "amqps", "THRONG_AMQPS", "AMQP 1.0 over TLS listen address (empty disables)",
		func(c *Config) *string { return &c.Listeners.AMQPS }),
	str("listeners.amqpWebSocket", "amqp-ws", "THRONG_AMQP_WS", "AMQP 1.0 over WebSocket listen address (empty disables)",
		func(c *Config) *string { return &c.Listeners.AMQPWebSocket }),
	str("listeners.mqtt", "mqtt", "THRONG_MQTT", "MQTT listen address (empty disables)",
		func(c *Config) *string { return &c.Listeners.MQTT }),
	str("listeners.mqtts", "mqtts", "THRONG_MQTTS", "MQTT over TLS listen address (empty disables)",
		func(c *Config) *string { return &c.Listeners.MQTTS }),
	str("listeners.mqttWebSocket", "mqtt-ws", "THRONG_MQTT_WS", "MQTT over WebSocket listen address (empty disables)",
		func(c *Config) *string { return &c.Listeners.MQTTWebSocket }),
	str("listeners.http", "http", "THRONG_HTTP", "HTTP device and REST messaging listen address (empty disables)",
		func(c *Config) *string { return &c.Listeners.HTTP }),
	str("listeners.https", "https", "THRONG_HTTPS", "HTTP device adapter over TLS listen address (empty disables)",
		func(c *Config) *string { return &c.Listeners.HTTPS }),
	str("listeners.admin", "admin", "THRONG_ADMIN", "admin REST API listen address (empty disables)",
		func(c *Config) *string { return &c.Listeners.Admin }),
	str("tls.cert", "tls-cert", "THRONG_TLS_CERT", "PEM certificate (chain) for the TLS listeners",
		func(c *Config) *string { return &c.TLS.Cert }),
	str("tls.key", "tls-key", "THRONG_TLS_KEY", "PEM private key for tls.cert",
		func(c *Config) *string { return &c.TLS.Key }),
	str("tls.clientCA", "tls-client-ca", "THRONG_TLS_CLIENT_CA", "PEM CA bundle for client certificates",
		func(c *Config) *string { return &c.TLS.ClientCA }),
	str("tls.minVersion", "tls-min-version", "THRONG_TLS_MIN_VERSION", "lowest TLS version accepted: 1.0, 1.1, 1.2 or 1.3",
		func(c *Config) *string { return &c.TLS.MinVersion }),
	str("tls.ciphers", "tls-ciphers", "THRONG_TLS_CIPHERS", "TLS 1.0-1.2 cipher suites, comma-separated crypto/tls names (empty: Go's defaults)",
		func(c *Config) *string { return &c.TLS.Ciphers }),
	str("tls.crl", "tls-crl", "THRONG_TLS_CRL", "PEM or DER certificate revocation list: client certificates it lists are refused (reloaded when the file changes)",
		func(c *Config) *string { return &c.TLS.CRL }),
	str("adminPassword", "admin-password", "THRONG_ADMIN_PASSWORD", "password of the platform administrator 'admin' (empty: generate once)",
		func(c *Config) *string { return &c.AdminPassword }),
	str("log.format", "log-format", "THRONG_LOG_FORMAT", "log format: text or json",
		func(c *Config) *string { return &c.Log.Format }),
	str("log.level", "log-level", "THRONG_LOG_LEVEL", "log level: debug, info, warn or error",
		func(c *Config) *string { return &c.Log.Level }),
	str("log.audit", "audit-log", "THRONG_AUDIT_LOG", "audit log of logins, refusals, permission denials and admin changes: stderr, a file (JSON lines, appended), or off (or empty)",
		func(c *Config) *string { return &c.Log.Audit }),
	boolean("engine.syncAlways", "sync-always", "THRONG_SYNC_ALWAYS", "fsync every write batch before acknowledging",
		func(c *Config) *bool { return &c.Engine.SyncAlways }),
	size("engine.maxStore", "max-store", "THRONG_MAX_STORE", "maximum disk used by the store, e.g. 10GiB (0: engine default)",
		func(c *Config) *ByteSize { return &c.Engine.MaxStore }),
	size("engine.diskFreeLimit", "disk-free-limit", "THRONG_DISK_FREE_LIMIT", "free disk space below which new stored messages are refused, e.g. 1GiB (0: 5% of the file system, 1 MiB to 256 MiB; -1: off)",
		func(c *Config) *ByteSize { return &c.Engine.DiskFreeLimit }),
	size("engine.maxMemory", "max-memory", "THRONG_MAX_MEMORY", "maximum memory used by in-memory streams, e.g. 1GiB (0: engine default)",
		func(c *Config) *ByteSize { return &c.Engine.MaxMemory }),
	str("debug.pprof", "pprof", "THRONG_PPROF", "listen address of the unauthenticated /debug/pprof/ profiling endpoints, e.g. 127.0.0.1:6060 (empty disables)",
		func(c *Config) *string { return &c.Debug.Pprof }),
	boolean("anonymous", "anonymous", "THRONG_ANONYMOUS", "allow anonymous connections from loopback to the default tenant",
		func(c *Config) *bool { return &c.Anonymous }),
	duration("mqtt.maxKeepAlive", "mqtt-max-keep-alive", "THRONG_MQTT_MAX_KEEP_ALIVE", "maximum MQTT keep-alive, e.g. 60s; MQTT 5 clients asking for more or none are told it in CONNACK (0: no maximum)",
		func(c *Config) *Duration { return &c.MQTT.MaxKeepAlive }),
	integer("mqtt.maxQueuedMessages", "mqtt-max-queued-messages", "THRONG_MQTT_MAX_QUEUED_MESSAGES", "QoS 1/2 messages that may wait on this node for one live MQTT subscription that is behind (publishers wait meanwhile); beyond it mqtt.queueOverflow applies",
		func(c *Config) *int { return &c.MQTT.MaxQueuedMessages }),
	integer("metrics.addressSeries", "metrics-address-series", "THRONG_METRICS_ADDRESS_SERIES", "addresses a node may have and still export per-address series on /metrics (0: 200; negative: never)",
		func(c *Config) *int { return &c.Metrics.AddressSeries }),
	str("mqtt.queueOverflow", "mqtt-queue-overflow", "THRONG_MQTT_QUEUE_OVERFLOW", "what happens beyond mqtt.maxQueuedMessages: drop (counted) or disconnect (counted, subscriber disconnected with 0x97)",
		func(c *Config) *string { return &c.MQTT.QueueOverflow }),
	duration("connections.handshakeTimeout", "handshake-timeout", "THRONG_HANDSHAKE_TIMEOUT", "time from accept to an authenticated MQTT or AMQP connection",
		func(c *Config) *Duration { return &c.Connections.HandshakeTimeout }),
	duration("connections.readTimeout", "read-timeout", "THRONG_READ_TIMEOUT", "time a started MQTT packet or AMQP frame may take to arrive whole",
		func(c *Config) *Duration { return &c.Connections.ReadTimeout }),
	integer("connections.maxHandshakes", "max-handshakes", "THRONG_MAX_HANDSHAKES", "connections in their handshake at once, per protocol; more wait to be accepted",
		func(c *Config) *int { return &c.Connections.MaxHandshakes }),
	size("connections.handshakeMemory", "handshake-memory", "THRONG_HANDSHAKE_MEMORY", "bytes buffered by connections in their handshake, per protocol; beyond it a connection is closed",
		func(c *Config) *ByteSize { return &c.Connections.HandshakeMemory }),
	str("cluster.name", "cluster-name", "THRONG_CLUSTER_NAME", "cluster name, the same on every node (default throng)",
		func(c *Config) *string { return &c.Cluster.Name }),
	str("cluster.listen", "cluster-listen", "THRONG_CLUSTER_LISTEN", "route listen address of this node, e.g. :6222 (empty: a single node)",
		func(c *Config) *string { return &c.Cluster.Listen }),
	Setting{Key: "cluster.peers", Flag: "peers", Env: "THRONG_PEERS", Usage: "route addresses of the cluster's nodes, comma-separated host:port (this node may be among them)",
		get: func(c *Config) string { return c.Cluster.Peers.String() },
		set: func(c *Config, v string) error { return c.Cluster.Peers.UnmarshalText([]byte(v)) }},
	str("cluster.nodeName", "node-name", "THRONG_NODE_NAME", "this node's unique and stable name (default: the host name)",
		func(c *Config) *string { return &c.Cluster.NodeName }),
	str("cluster.secret", "cluster-secret", "THRONG_CLUSTER_SECRET", "shared secret authenticating the routes between nodes (required when clustered)",
		func(c *Config) *string { return &c.Cluster.Secret }),
	integer("cluster.replicas", "replicas", "THRONG_REPLICAS", "replicas of every stream and bucket (0: min(3, nodes))",
		func(c *Config) *int { return &c.Cluster.Replicas }),
	str("cluster.tls.cert", "cluster-tls-cert", "THRONG_CLUSTER_TLS_CERT", "PEM certificate of this node for the routes between nodes (mutual TLS, with cluster.tls.key and .ca)",
		func(c *Config) *string { return &c.Cluster.TLS.Cert }),
	str("cluster.tls.key", "cluster-tls-key", "THRONG_CLUSTER_TLS_KEY", "PEM private key of cluster.tls.cert",
		func(c *Config) *string { return &c.Cluster.TLS.Key }),
	str("cluster.tls.ca", "cluster-tls-ca", "THRONG_CLUSTER_TLS_CA", "PEM CA bundle the other nodes' route certificates are verified against",
		func(c *Config) *string { return &c.Cluster.TLS.CA }),
	integer("connections.ratePerSource", "rate-per-source", "THRONG_RATE_PER_SOURCE", "new connections per second one source address may open, all listeners together (0: off)",
		func(c *Config) *int { return &c.Connections.RatePerSource }),
	integer("connections.burstPerSource", "burst-per-source", "THRONG_BURST_PER_SOURCE", "new connections one source address may open at once (0: twice the rate)",
		func(c *Config) *int { return &c.Connections.BurstPerSource }),
	integer("connections.maxHalfOpen", "max-half-open", "THRONG_MAX_HALF_OPEN", "connections in their handshake on the node, all protocols; beyond it new ones are refused (0: off)",
		func(c *Config) *int { return &c.Connections.MaxHalfOpen }),
	integer("connections.maxHalfOpenPerSource", "max-half-open-per-source", "THRONG_MAX_HALF_OPEN_PER_SOURCE", "connections in their handshake from one source address; beyond it new ones are refused (0: off)",
		func(c *Config) *int { return &c.Connections.MaxHalfOpenPerSource }),
	str("connections.unlimitedSources", "unlimited-sources", "THRONG_UNLIMITED_SOURCES", "addresses and prefixes, comma-separated, exempt from the per-source limits and login backoff (empty: none)",
		func(c *Config) *string { return &c.Connections.UnlimitedSources }),
	duration("connections.loginBackoff", "login-backoff", "THRONG_LOGIN_BACKOFF", "longest delay of a refused login after repeated failures of a user or source address (0: off)",
		func(c *Config) *Duration { return &c.Connections.LoginBackoff }),
	size("maxMessageSize", "max-message-size", "THRONG_MAX_MESSAGE_SIZE", "largest message a client may send, e.g. 128MiB (at most 256MiB; a tenant's maxMessageSize limit replaces it)",
		func(c *Config) *ByteSize { return &c.MaxMessageSize }),
}

// ByteSize is a number of bytes; it reads "1024", "512KiB", "10MB",
// "2GiB" (binary and decimal suffixes, case-insensitive, optional "B") and
// writes the shortest exact binary form.
type ByteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"ki", 1 << 10}, {"mi", 1 << 20}, {"gi", 1 << 30}, {"ti", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
	{"b", 1},
}

// UnmarshalText parses a size.
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.ToLower(strings.TrimSpace(string(text)))
	if s == "" {
		*b = 0
		return nil
	}
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult = u.mult
			s = strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || (n != 0 && (n*mult)/mult != n) {
		return fmt.Errorf("invalid size %q (want e.g. 1048576, 512MiB, 10GB)", string(text))
	}
	*b = ByteSize(n * mult)
	return nil
}

// MarshalText writes the size.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// MarshalYAML writes sizes without a unit as plain numbers, not strings.
func (b ByteSize) MarshalYAML() (any, error) {
	if s := b.String(); strings.HasSuffix(s, "B") {
		return s, nil
	}
	return int64(b), nil
}

func (b ByteSize) String() string {
	n := int64(b)
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// Duration is a time span; it reads Go durations ("60s", "1m30s", and "0")
// and writes them the same way.
type Duration time.Duration

// UnmarshalText parses a duration.
func (d *Duration) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if s == "" || s == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 60s, 1m30s)", string(text))
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Duration) String() string {
	if d == 0 {
		return "0"
	}
	return time.Duration(d).String()
}
