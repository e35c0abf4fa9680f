package config

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParseYAML feeds arbitrary bytes to the configuration file parser and
// the validation that Load runs after it. No input may panic or hang; an
// input is either refused with an error or gives a configuration whose
// printed form (serve --check) parses back to the same configuration.
func FuzzParseYAML(f *testing.F) {
	for _, s := range []string{
		"",
		"dataDir: /var/lib/throng\nlisteners:\n  amqp: \":5672\"\n  mqtt: 127.0.0.1:1883\n  admin: \"\"\n",
		"log:\n  format: json\n  level: debug\nengine:\n  syncAlways: true\n  maxStore: 10GiB\n  maxMemory: 512MB\n",
		"maxMessageSize: 1MiB\nanonymous: false\nadminPassword: secret\n",
		"debug:\n  pprof: 127.0.0.1:6060\n",
		"tls:\n  cert: /etc/throng/tls.crt\n  key: /etc/throng/tls.key\n  clientCA: /etc/throng/ca.pem\n",
		"listeners:\n  amqp: :5672\n  amqps: :5672\n",
		"maxMessageSize: 1\n",
		"dataDir: [1, 2]\n",
		"unknownKey: 1\n",
		"a: &a [*a]\n",
		"engine: {maxStore: -1}\n",
		"---\ndataDir: x\n---\ndataDir: y\n",
		"cluster:\n  listen: :6222\n  peers: [h1:6222, \"h2:6222,h3:6222\"]\n  secret: s\n  replicas: 2\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Default()
		if err := c.parseYAML(b); err != nil {
			return
		}
		// Validate reads the TLS files: keep the fuzzer away from the real
		// file system (a path like /dev/zero would read forever), while
		// still taking the "file missing" branches.
		for _, p := range []*string{&c.TLS.Cert, &c.TLS.Key, &c.TLS.ClientCA} {
			if *p != "" {
				*p = filepath.Join("/nonexistent-throng-fuzz", filepath.Base(*p))
			}
		}
		if err := c.Validate(); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		out, err := c.YAML()
		if err != nil {
			t.Fatalf("valid configuration does not print: %v", err)
		}
		back := Default()
		if err := back.parseYAML(out); err != nil {
			t.Fatalf("printed configuration does not parse: %v\n%s", err, out)
		}
		if want := c.Redacted(); !reflect.DeepEqual(back, want) {
			t.Fatalf("printed configuration parses to another one:\n%+v\n%+v\n%s", back, want, out)
		}
	})
}
