package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/config"
)

// routeCA signs route certificates for TestRouteTLSConfig.
type routeCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newRouteCA(t *testing.T) *routeCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "route CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &routeCA{cert: cert, key: key}
}

// write writes a node certificate with the serial, and its key, to
// cert and key, with the given modification time.
func (ca *routeCA) write(t *testing.T, serial int64, cert, key string, mtime time.Time) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "node"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	for _, f := range []struct {
		path string
		b    []byte
	}{{cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, {key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})}} {
		if err := os.WriteFile(f.path, f.b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f.path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// handshake runs a route's TLS handshake between two nodes' configs
// (the client side as nats-server's: a clone with the peer's host name)
// over loopback TCP (a net.Pipe would block on a side's last write,
// e.g. an alert or session ticket nobody reads).
func handshake(server, client *tls.Config) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		errc <- tls.Server(conn, server).Handshake()
	}()
	c := client.Clone()
	c.ServerName = "localhost"
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, c)
	cerr := tc.Handshake()
	if cerr == nil {
		// TLS 1.3: the client is done before the server has checked its
		// certificate; a read gets the server's verdict: an alert, or
		// the end of the connection the server closes once done.
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := tc.Read(make([]byte, 1)); err != nil && !isTimeout(err) && !errors.Is(err, io.EOF) {
			cerr = err
		}
	}
	conn.Close()
	serr := <-errc
	if cerr != nil {
		return cerr
	}
	return serr
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func serial(t *testing.T, get func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) int64 {
	t.Helper()
	c, err := get(nil)
	if err != nil {
		t.Fatal(err)
	}
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x.SerialNumber.Int64()
}

// TestRouteTLSConfig: the route TLS configuration is mutual (a node with
// a certificate from another CA fails the handshake either way round),
// and the node's certificate is read again when its files change and on
// Reload (SIGHUP) when they changed without a new modification time.
func TestRouteTLSConfig(t *testing.T) {
	dir := t.TempDir()
	ca, other := newRouteCA(t), newRouteCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	node := func(name string, signer *routeCA, serial int64) (*App, string, string) {
		cert, key := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		signer.write(t, serial, cert, key, time.Now().Add(-time.Minute))
		cfg := config.Default()
		cfg.Cluster.Listen, cfg.Cluster.TLS = ":6222", config.ClusterTLS{Cert: cert, Key: key, CA: caFile}
		return &App{cfg: cfg, log: slog.New(slog.DiscardHandler)}, cert, key
	}
	a1, cert1, key1 := node("n1", ca, 2)
	a2, _, _ := node("n2", ca, 3)
	foreign, _, _ := node("n3", other, 4)
	c1, err := a1.routeTLS()
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := a2.routeTLS()
	cf, _ := foreign.routeTLS()
	if err := handshake(c1, c2); err != nil {
		t.Fatalf("two nodes of the CA: %v", err)
	}
	if err := handshake(c1, cf); err == nil {
		t.Fatal("a node of another CA was accepted by a member")
	}
	if err := handshake(cf, c1); err == nil {
		t.Fatal("a member accepted a node of another CA as server")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	plain := &tls.Config{RootCAs: roots} // TLS, but no client certificate
	if err := handshake(c1, plain); err == nil {
		t.Fatal("a route without a client certificate was accepted")
	}

	// Rewritten with the same modification time: only Reload sees it.
	st, err := os.Stat(cert1)
	if err != nil {
		t.Fatal(err)
	}
	ca.write(t, 5, cert1, key1, st.ModTime())
	if s := serial(t, c1.GetClientCertificate); s != 2 {
		t.Fatalf("serial %d before the reload, want 2 (unchanged time)", s)
	}
	if err := a1.Reload(nil); err != nil {
		t.Fatal(err)
	}
	if s := serial(t, c1.GetClientCertificate); s != 5 {
		t.Fatalf("serial %d after Reload, want 5", s)
	}
	// Rewritten with a new time: the next handshake takes it.
	ca.write(t, 6, cert1, key1, time.Now())
	if s := serial(t, c1.GetClientCertificate); s != 6 {
		t.Fatalf("serial %d after the files changed, want 6", s)
	}
	if err := handshake(c2, c1); err != nil {
		t.Fatalf("handshake with the renewed certificate: %v", err)
	}
}
