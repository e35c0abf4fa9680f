package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	if c.Listeners.Admin != ":8161" || c.Listeners.AMQP != ":5672" || c.DataDir != "./data" || !c.Anonymous {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "throng.yaml", `
dataDir: /from/file
listeners:
  amqp: ":1111"
  mqtt: ":2222"
  http: ":3333"
log:
  format: json
engine:
  maxStore: 10GiB
`)
	env := []string{
		"PATH=/usr/bin",
		"THRONG_MQTT=:4444",
		"THRONG_HTTP=:5555",
		"THRONG_SYNC_ALWAYS=true",
		"THRONG_SERVER=http://ignored", // a CLI variable, not a setting
	}
	args := []string{"--http", ":6666", "--anonymous=false", "--max-memory", "512MiB"}
	c, err := Load(file, env, args)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"dataDir (file)", c.DataDir, "/from/file"},
		{"amqp (file)", c.Listeners.AMQP, ":1111"},
		{"mqtt (env over file)", c.Listeners.MQTT, ":4444"},
		{"http (flag over env over file)", c.Listeners.HTTP, ":6666"},
		{"admin (default)", c.Listeners.Admin, ":8161"},
		{"log.format (file)", c.Log.Format, "json"},
		{"log.level (default)", c.Log.Level, "info"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %q, want %q", ck.name, ck.got, ck.want)
		}
	}
	if !c.Engine.SyncAlways {
		t.Error("syncAlways from env not applied")
	}
	if c.Anonymous {
		t.Error("--anonymous=false not applied")
	}
	if c.Engine.MaxStore != 10<<30 || c.Engine.MaxMemory != 512<<20 {
		t.Errorf("sizes = %d, %d", c.Engine.MaxStore, c.Engine.MaxMemory)
	}
}

func TestEmptyValueDisablesListener(t *testing.T) {
	c, err := Load("", []string{"THRONG_AMQPS="}, []string{"--mqtts", ""})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners.AMQPS != "" || c.Listeners.MQTTS != "" {
		t.Fatalf("listeners not disabled: %+v", c.Listeners)
	}
}

func TestEveryFlagAndEnvVariable(t *testing.T) {
	// Each setting's flag and variable must reach its field.
	for _, s := range Settings {
		val := "127.0.0.1:9"
		switch {
		case s.Bool:
			val = boolString(!mustBool(s.Get(Default())))
		case strings.HasPrefix(s.Key, "engine.max"), s.Key == "engine.diskFreeLimit", s.Key == "maxMessageSize", s.Key == "connections.handshakeMemory":
			val = "3MiB"
		case s.Key == "mqtt.maxKeepAlive", strings.HasSuffix(s.Key, "Timeout"), s.Key == "connections.loginBackoff":
			val = "1m30s"
		case s.Key == "connections.maxHandshakes", s.Key == "mqtt.maxQueuedMessages", s.Key == "metrics.addressSeries",
			s.Key == "connections.ratePerSource", s.Key == "connections.burstPerSource",
			s.Key == "connections.maxHalfOpen", s.Key == "connections.maxHalfOpenPerSource":
			val = "7"
		case s.Key == "connections.unlimitedSources":
			val = "10.0.0.0/8"
		case s.Key == "mqtt.queueOverflow":
			val = "disconnect"
		case s.Key == "log.format":
			val = "json"
		case s.Key == "log.level":
			val = "debug"
		case s.Key == "dataDir" || s.Key == "adminPassword":
			val = "x"
		case strings.HasPrefix(s.Key, "tls."), strings.HasPrefix(s.Key, "cluster.tls."):
			continue // needs files; covered by TestTLSValidation, TestClusterTLSValidation
		case s.Key == "cluster.name" || s.Key == "cluster.nodeName":
			val = "node-1"
		case s.Key == "cluster.replicas":
			val = "3"
		}
		// A cluster setting is valid only in a cluster.
		var extra []string
		if strings.HasPrefix(s.Key, "cluster.") && s.Key != "cluster.listen" {
			extra = append(extra, "--cluster-listen=:6222")
		}
		if strings.HasPrefix(s.Key, "cluster.") && s.Key != "cluster.secret" {
			extra = append(extra, "--cluster-secret=s")
		}
		if strings.HasPrefix(s.Key, "cluster.") && s.Key != "cluster.peers" {
			extra = append(extra, "--peers=127.0.0.1:9")
		}
		c := Default()
		if err := c.applyEnv([]string{s.Env + "=" + val}); err != nil {
			t.Fatalf("%s: %v", s.Env, err)
		}
		if got := s.Get(c); got != val {
			t.Errorf("env %s: got %q want %q", s.Env, got, val)
		}
		c2, err := Build("", nil, flagsFor(t, append(extra, "--"+s.Flag+"="+val)...))
		if err != nil {
			t.Fatalf("--%s: %v", s.Flag, err)
		}
		if got := s.Get(c2); got != val {
			t.Errorf("flag --%s: got %q want %q", s.Flag, got, val)
		}
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func mustBool(s string) bool { return s == "true" }

func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func flagsFor(t *testing.T, args ...string) *Flags {
	t.Helper()
	fs := newFlagSet()
	fl := BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fl
}

func TestValidation(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"empty data dir", func(c *Config) { c.DataDir = "" }, "dataDir"},
		{"listener without port", func(c *Config) { c.Listeners.AMQP = "localhost" }, "listeners.amqp"},
		{"listener port not a number", func(c *Config) { c.Listeners.MQTT = ":mqtt" }, "listeners.mqtt"},
		{"listener port too big", func(c *Config) { c.Listeners.Admin = ":70000" }, "listeners.admin"},
		{"same port twice", func(c *Config) { c.Listeners.HTTP = ":8161" }, "port 8161"},
		{"same port wildcard and host", func(c *Config) { c.Listeners.HTTP = "127.0.0.1:8161" }, "port 8161"},
		{"cert without key", func(c *Config) { c.TLS.Cert = "/x.pem" }, "cert and key"},
		{"key without cert", func(c *Config) { c.TLS.Key = "/x.pem" }, "cert and key"},
		{"unreadable cert", func(c *Config) { c.TLS.Cert, c.TLS.Key = "/nonexistent/c.pem", "/nonexistent/k.pem" }, "tls.cert"},
		{"unreadable client CA", func(c *Config) { c.TLS.ClientCA = "/nonexistent/ca.pem" }, "tls.clientCA"},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"negative store", func(c *Config) { c.Engine.MaxStore = -1 }, "engine.maxStore"},
		{"message size over 256MiB", func(c *Config) { c.MaxMessageSize = 256<<20 + 1 }, "maxMessageSize"},
		{"message size zero", func(c *Config) { c.MaxMessageSize = 0 }, "maxMessageSize"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mod(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// Two :0 listeners and distinct hosts on one port are fine.
	c := Default()
	c.Listeners.AMQP, c.Listeners.MQTT = "127.0.0.1:0", "127.0.0.1:0"
	c.Listeners.HTTP, c.Listeners.Admin = "127.0.0.1:9000", "127.0.0.2:9000"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	unknown := writeFile(t, "bad.yaml", "listeners:\n  amqpp: ':1'\n")
	if _, err := Load(unknown, nil, nil); err == nil || !strings.Contains(err.Error(), "amqpp") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil, nil); err == nil {
		t.Fatal("missing file accepted")
	}
	if _, err := Load("", []string{"THRONG_SYNC_ALWAYS=perhaps"}, nil); err == nil || !strings.Contains(err.Error(), "THRONG_SYNC_ALWAYS") {
		t.Fatalf("bad env bool: %v", err)
	}
	if _, err := Load("", []string{"THRONG_MAX_STORE=lots"}, nil); err == nil {
		t.Fatal("bad env size accepted")
	}
	if _, err := Load("", nil, []string{"--max-store", "lots"}); err == nil {
		t.Fatal("bad flag size accepted")
	}
	if _, err := Load("", nil, []string{"--no-such-flag"}); err == nil {
		t.Fatal("unknown flag accepted")
	}
	if _, err := Load("", nil, []string{"--log-format", "xml"}); err == nil {
		t.Fatal("validation not applied by Load")
	}
	empty := writeFile(t, "empty.yaml", "")
	if _, err := Load(empty, nil, nil); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1024": 1024, "1KiB": 1024, "1k": 1000, "10MB": 10e6, "2GiB": 2 << 30, "3 gi": 3 << 30, "7b": 7, "": 0,
	} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil || int64(b) != want {
			t.Errorf("%q → %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"x", "1.5GiB", "-", "99999999999999TiB"} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	if s := ByteSize(3 << 30).String(); s != "3GiB" {
		t.Errorf("String = %s", s)
	}
	if s := ByteSize(1000).String(); s != "1000" {
		t.Errorf("String = %s", s)
	}
}

func TestYAMLRoundTripRedacted(t *testing.T) {
	c := Default()
	c.AdminPassword = "s3cret"
	c.Engine.MaxStore = 5 << 30
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret") || !strings.Contains(string(out), "adminPassword: REDACTED") {
		t.Fatalf("password not redacted:\n%s", out)
	}
	if c.AdminPassword != "s3cret" {
		t.Fatal("Redacted modified the original")
	}
	// The printed form loads back into the same settings.
	var back Config
	if err := yaml.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	back.AdminPassword = c.AdminPassword
	if !reflect.DeepEqual(back, *c) {
		t.Fatalf("round trip differs:\n%+v\n%+v", back, *c)
	}
}

func TestTLSValidation(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)

	c, err := Load("", []string{"THRONG_TLS_CERT=" + certPath, "THRONG_TLS_KEY=" + keyPath}, []string{"--tls-client-ca", certPath})
	if err != nil {
		t.Fatal(err)
	}
	if !c.TLS.Enabled() || c.TLS.ClientCA != certPath {
		t.Fatalf("tls = %+v", c.TLS)
	}
	// Cert and key swapped: both readable, but not a key pair.
	if _, err := Load("", nil, []string{"--tls-cert", keyPath, "--tls-key", certPath}); err == nil {
		t.Fatal("swapped cert and key accepted")
	}
	// A client CA file without certificates.
	if _, err := Load("", nil, []string{"--tls-client-ca", keyPath}); err == nil {
		t.Fatal("client CA without certificates accepted")
	}
}

// TestDocumented keeps the reference in docs/operations.md complete.
func TestMaxMessageSize(t *testing.T) {
	if Default().MaxMessageSize != 64<<20 {
		t.Fatalf("default %s, want 64MiB", Default().MaxMessageSize)
	}
	c, err := Load("", []string{"THRONG_MAX_MESSAGE_SIZE=128MiB"}, nil)
	if err != nil || c.MaxMessageSize != 128<<20 {
		t.Fatalf("env: %v, %v", c, err)
	}
	c, err = Load("", nil, []string{"--max-message-size", "256MiB"})
	if err != nil || c.MaxMessageSize != 256<<20 {
		t.Fatalf("flag 256MiB: %v", err)
	}
	if _, err := Load("", nil, []string{"--max-message-size", "257MiB"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("257MiB accepted: %v", err)
	}
}

func TestDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatalf("docs/operations.md: %v", err)
	}
	for _, s := range Settings {
		row := "| `" + s.Key + "` | `--" + s.Flag + "` | `" + s.Env + "` |"
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/operations.md lacks the row for %s (%q)", s.Key, row)
		}
	}
}

// TestConnectionLimits: mqtt.maxKeepAlive (issue 10 item 11) and the
// connections.* limits (issue 11 items 4 and 5) from YAML, environment
// and flags, with their defaults and validation.
func TestConnectionLimits(t *testing.T) {
	d := Default()
	if d.MQTT.MaxKeepAlive != 0 || d.Connections != (Connections{HandshakeTimeout: Duration(10 * time.Second),
		ReadTimeout: Duration(30 * time.Second), MaxHandshakes: 4096, HandshakeMemory: 32 << 20,
		RatePerSource: 200, BurstPerSource: 400, MaxHalfOpen: 4096, MaxHalfOpenPerSource: 256,
		UnlimitedSources: "127.0.0.0/8, ::1", LoginBackoff: Duration(5 * time.Second)}) {
		t.Fatalf("defaults %+v %+v", d.MQTT, d.Connections)
	}
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte("mqtt:\n  maxKeepAlive: 60s\nconnections:\n  readTimeout: 5s\n  maxHandshakes: 100\n  handshakeMemory: 1MiB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(f, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.MQTT.MaxKeepAlive) != time.Minute || time.Duration(c.Connections.ReadTimeout) != 5*time.Second ||
		c.Connections.MaxHandshakes != 100 || c.Connections.HandshakeMemory != 1<<20 {
		t.Fatalf("from YAML: %+v %+v", c.MQTT, c.Connections)
	}
	c, err = Load(f, []string{"THRONG_MQTT_MAX_KEEP_ALIVE=2m"}, []string{"--read-timeout", "1s"})
	if err != nil || time.Duration(c.MQTT.MaxKeepAlive) != 2*time.Minute || time.Duration(c.Connections.ReadTimeout) != time.Second {
		t.Fatalf("env and flag: %+v %+v %v", c.MQTT, c.Connections, err)
	}
	y, err := c.YAML()
	if err != nil || !strings.Contains(string(y), "maxKeepAlive: 2m0s") {
		t.Fatalf("printed config:\n%s %v", y, err)
	}
	for _, bad := range [][]string{{"--mqtt-max-keep-alive", "1.5s"}, {"--mqtt-max-keep-alive", "70000s"},
		{"--read-timeout", "0"}, {"--max-handshakes", "0"}, {"--handshake-memory", "1KiB"}} {
		if _, err := Load("", nil, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v accepted: %v", bad, err)
		}
	}
}

// TestMQTTQueueSettings (issue 11 item 2): mqtt.maxQueuedMessages and
// mqtt.queueOverflow from their defaults, YAML, environment and flags,
// printed back, and validated.
func TestMQTTQueueSettings(t *testing.T) {
	d := Default()
	if d.MQTT.MaxQueuedMessages != 100000 || d.MQTT.QueueOverflow != "drop" {
		t.Fatalf("defaults %+v", d.MQTT)
	}
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte("mqtt:\n  maxQueuedMessages: 500\n  queueOverflow: disconnect\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(f, nil, nil)
	if err != nil || c.MQTT.MaxQueuedMessages != 500 || c.MQTT.QueueOverflow != "disconnect" {
		t.Fatalf("from YAML: %+v %v", c.MQTT, err)
	}
	c, err = Load(f, []string{"THRONG_MQTT_MAX_QUEUED_MESSAGES=20"}, []string{"--mqtt-queue-overflow", "drop"})
	if err != nil || c.MQTT.MaxQueuedMessages != 20 || c.MQTT.QueueOverflow != "drop" {
		t.Fatalf("env and flag: %+v %v", c.MQTT, err)
	}
	y, err := c.YAML()
	if err != nil || !strings.Contains(string(y), "maxQueuedMessages: 20") || !strings.Contains(string(y), "queueOverflow: drop") {
		t.Fatalf("printed config:\n%s %v", y, err)
	}
	// The printed configuration loads back to the same values.
	f2 := filepath.Join(t.TempDir(), "printed.yaml")
	if err := os.WriteFile(f2, y, 0o600); err != nil {
		t.Fatal(err)
	}
	if c2, err := Load(f2, nil, nil); err != nil || c2.MQTT != c.MQTT {
		t.Fatalf("round trip: %+v, want %+v (%v)", c2.MQTT, c.MQTT, err)
	}
	for _, bad := range [][]string{{"--mqtt-max-queued-messages", "0"}, {"--mqtt-max-queued-messages", "-1"},
		{"--mqtt-max-queued-messages", "many"}, {"--mqtt-queue-overflow", "block"}, {"--mqtt-queue-overflow", ""}} {
		if _, err := Load("", nil, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v accepted: %v", bad, err)
		}
	}
	if _, err := Load("", []string{"THRONG_MQTT_QUEUE_OVERFLOW=Drop"}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("queueOverflow Drop accepted: %v", err)
	}
}

// TestClusterSettings (issue 16): the cluster section from YAML (peers
// as a list or a comma-separated string), flags and environment, and its
// validation.
func TestClusterSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "throng.yaml")
	if err := os.WriteFile(file, []byte("cluster:\n  name: c1\n  listen: \":6222\"\n  peers:\n    - h1:6222\n    - h2:6222\n  secret: s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cluster.Enabled() || c.Cluster.Name != "c1" || !reflect.DeepEqual(c.Cluster.Peers, List{"h1:6222", "h2:6222"}) {
		t.Fatalf("cluster from YAML: %+v", c.Cluster)
	}
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret") {
		t.Fatalf("cluster secret printed:\n%s", out)
	}
	c, err = Load("", []string{"THRONG_CLUSTER_LISTEN=:6222", "THRONG_PEERS=h1:6222, h2:6222,h3:6222", "THRONG_CLUSTER_SECRET=x"},
		[]string{"--node-name", "n2", "--replicas", "1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Cluster.Peers) != 3 || c.Cluster.NodeName != "n2" || c.Cluster.Replicas != 1 {
		t.Fatalf("cluster from env and flags: %+v", c.Cluster)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--peers", "h1:6222"}, "cluster.peers: given without cluster.listen"},
		{[]string{"--cluster-listen", ":6222"}, "cluster.secret: required"},
		{[]string{"--cluster-listen", ":6222", "--cluster-secret", "x", "--peers", "h1"}, `cluster.peers: "h1"`},
		{[]string{"--cluster-listen", ":0", "--cluster-secret", "x", "--peers", "h1:6222"}, "fixed port"},
		{[]string{"--cluster-listen", ":6222", "--cluster-secret", "x"}, "cluster.peers: required"},
		{[]string{"--cluster-listen", ":6222", "--cluster-secret", "x", "--peers", "h1:6222", "--replicas", "7"}, "cluster.replicas: 7"},
		{[]string{"--cluster-listen", ":6222", "--cluster-secret", "x", "--peers", "h1:6222", "--node-name", "a b"}, "cluster.nodeName"},
	} {
		_, err := Load("", nil, tc.args)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
