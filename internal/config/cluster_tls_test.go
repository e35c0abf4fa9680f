package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClusterTLSValidation: cluster.tls needs its three files, readable
// and matching; with it the cluster secret is optional; --check's
// problems name the setting (a missing key file above all).
func TestClusterTLSValidation(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--cluster-listen", ":6222", "--peers", "h1:6222,h2:6222"}

	c, err := Load("", []string{"THRONG_CLUSTER_TLS_CERT=" + certPath, "THRONG_CLUSTER_TLS_KEY=" + keyPath},
		append(base, "--cluster-tls-ca", certPath))
	if err != nil {
		t.Fatalf("mTLS without a secret refused: %v", err)
	}
	if c.Cluster.TLS != (ClusterTLS{Cert: certPath, Key: keyPath, CA: certPath}) {
		t.Fatalf("cluster.tls = %+v", c.Cluster.TLS)
	}
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--cluster-tls-cert", certPath, "--cluster-tls-key", filepath.Join(dir, "missing.pem"), "--cluster-tls-ca", certPath}, "cluster.tls.key: open"},
		{[]string{"--cluster-tls-cert", certPath, "--cluster-tls-key", keyPath}, "cluster.tls.ca: required"},
		{[]string{"--cluster-tls-cert", keyPath, "--cluster-tls-key", certPath, "--cluster-tls-ca", certPath}, "cluster.tls:"},
		{[]string{"--cluster-tls-cert", certPath, "--cluster-tls-key", keyPath, "--cluster-tls-ca", keyPath}, "cluster.tls.ca: " + keyPath + " holds no PEM certificate"},
		{nil, "cluster.secret: required"},
	} {
		_, err := Load("", nil, append(append([]string(nil), base...), tc.flags...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.flags, err, tc.want)
		}
	}
	// Only for a cluster.
	if _, err := Load("", nil, []string{"--cluster-tls-cert", certPath}); err == nil || !strings.Contains(err.Error(), "cluster.tls: only for a cluster") {
		t.Errorf("cluster.tls without cluster.listen: %v", err)
	}
}
