package app_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TLS hardening (issue 14, "TLS"): the certificate is reloaded when its
// files change (new handshakes get the new one, established connections
// stay), TLS below 1.2 is refused by default, the cipher suites are
// configurable, and client certificates revoked by tls.crl are refused
// (the list reloaded in the same way).

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate (PEM) and its key (PEM) signed by the CA.
func (ca *testCA) issue(t *testing.T, serial int64, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

// crl returns a PEM revocation list of the CA revoking serials.
func (ca *testCA) crl(t *testing.T, number int64, serials ...int64) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: entries,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// writeFresh writes a file and moves its modification time forward, so a
// rewrite within the file system's time granularity is seen as a change.
func writeFresh(t *testing.T, path string, b []byte, age time.Duration) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	mt := time.Now().Add(age)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
}

// mqttsHello makes a TLS connection and an MQTT CONNECT; it returns the
// connection, the server certificate's serial and the error.
func mqttsHello(addr string, conf *tls.Config) (net.Conn, *big.Int, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return nil, nil, err
	}
	serial := c.ConnectionState().PeerCertificates[0].SerialNumber
	// With TLS 1.3 the server checks the client's certificate after the
	// client's handshake is done: its refusal arrives at the first read.
	if rc, err := mqttHello(c); err != nil || rc != 0 {
		c.Close()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, serial, err
	}
	return c, serial, nil
}

func TestTLSHardening(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	caFile, crlFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "crl.pem")
	cA, kA := ca.issue(t, 100, "server A", true)
	writeFresh(t, certFile, cA, -2*time.Hour)
	writeFresh(t, keyFile, kA, -2*time.Hour)
	writeFresh(t, caFile, ca.pem, -2*time.Hour)
	writeFresh(t, crlFile, ca.crl(t, 1, 201), -2*time.Hour) // revokes client 201

	cfg := testConfig(t, t.TempDir())
	cfg.Listeners.MQTTS = "127.0.0.1:0"
	cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.ClientCA, cfg.TLS.CRL = certFile, keyFile, caFile, crlFile
	cfg.TLS.Ciphers = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
	r := start(t, cfg)
	addr := r.app.ListenerAddr("mqtts").String()

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	clientCert := func(serial int64) tls.Certificate {
		c, k := ca.issue(t, serial, "client", false)
		kp, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	good, revoked, later := clientCert(200), clientCert(201), clientCert(202)
	conf := func(cert tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}}
	}

	// A valid client certificate: served certificate A.
	established, serial, err := mqttsHello(addr, conf(good))
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()
	if serial.Int64() != 100 {
		t.Fatalf("served serial %v, want 100", serial)
	}
	// A revoked one: refused.
	if c, _, err := mqttsHello(addr, conf(revoked)); err == nil {
		c.Close()
		t.Fatal("a revoked client certificate was accepted")
	} else {
		t.Logf("revoked client certificate: %v", err)
	}

	// TLS 1.1 is refused by default (tls.minVersion 1.2).
	old := conf(good)
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, err := tls.Dial("tcp", addr, old); err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	// TLS 1.2 with a suite outside tls.ciphers is refused, with the
	// configured one accepted (TLS 1.3 suites are not configurable).
	tls12 := conf(good)
	tls12.MaxVersion = tls.VersionTLS12
	tls12.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
	if c, err := tls.Dial("tcp", addr, tls12); err == nil {
		c.Close()
		t.Fatal("a cipher suite outside tls.ciphers was accepted")
	}
	tls12.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	if c, _, err := mqttsHello(addr, tls12); err != nil {
		t.Fatalf("TLS 1.2 with the configured suite: %v", err)
	} else {
		c.Close()
	}

	// A renewed certificate and a new revocation list: new handshakes see
	// them (the CRL is looked at again at most once a second).
	cB, kB := ca.issue(t, 101, "server B", true)
	writeFresh(t, keyFile, kB, 0)
	writeFresh(t, certFile, cB, 0)
	writeFresh(t, crlFile, ca.crl(t, 2, 201, 202), 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, serial, err := mqttsHello(addr, conf(good))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if serial.Int64() == 101 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving serial %v after the files changed", serial)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		c, _, err := mqttsHello(addr, conf(later))
		if err != nil {
			break // 202 is revoked now
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the new revocation list was not applied")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The connection made before the renewal is still served: PINGREQ,
	// PINGRESP.
	_ = established.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := established.Write([]byte{0xC0, 0}); err != nil {
		t.Fatal(err)
	}
	var pong [2]byte
	if _, err := io.ReadFull(established, pong[:]); err != nil || pong[0] != 0xD0 {
		t.Fatalf("established connection after the renewal: % x %v", pong, err)
	}
	if !strings.Contains(r.logs.String(), "tls.crl loaded") {
		t.Error("no log line for the revocation list")
	}
}
