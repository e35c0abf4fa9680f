package engine

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// TestClusterTLSMustVerify: a route TLS configuration that would let a
// route up unverified is refused at start — accepted routes without a
// verified client certificate, or solicited routes with Go's verification
// off (InsecureSkipVerify) and none of the caller's (VerifyConnection),
// which nats-server only warns about and app logs at debug.
func TestClusterTLSMustVerify(t *testing.T) {
	verify := func(tls.ConnectionState) error { return nil }
	for _, tc := range []struct {
		name string
		conf *tls.Config
		want string // "" for accepted
	}{
		{"verified both ways", &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}, ""},
		{"own verification", &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, InsecureSkipVerify: true, VerifyConnection: verify}, ""},
		{"client certificate not verified", &tls.Config{ClientAuth: tls.RequireAnyClientCert}, "client certificates"},
		{"no client certificate", &tls.Config{}, "client certificates"},
		{"nothing verifies solicited routes", &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, InsecureSkipVerify: true}, "VerifyConnection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Cluster{NodeName: "n0", Listen: "127.0.0.1:0", Peers: []string{"127.0.0.1:6223"}, TLS: tc.conf}
			_, err := clusterOptions(&server.Options{}, c, t.TempDir())
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error about %s", err, tc.want)
			}
		})
	}
}
