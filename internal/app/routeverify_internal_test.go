package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/config"
)

// issued is a certificate with its key, and the tls.Certificate a peer
// presents (the leaf, then the chain it sends).
type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// issue signs tmpl with parent (nil: self-signed). The template's
// defaults: valid from an hour ago for an hour, a node's key usage.
func issue(t *testing.T, tmpl *x509.Certificate, parent *issued) *issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		s, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl.SerialNumber = s
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	}
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if tmpl.IsCA {
			tmpl.KeyUsage = x509.KeyUsageCertSign
		}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &issued{cert: c, key: key}
}

// chain is what a peer presents: the first certificate's key, and the
// certificates in the order sent.
func chain(leaf *issued, more ...*issued) []tls.Certificate {
	c := tls.Certificate{PrivateKey: leaf.key, Leaf: leaf.cert, Certificate: [][]byte{leaf.cert.Raw}}
	for _, m := range more {
		c.Certificate = append(c.Certificate, m.cert.Raw)
	}
	return []tls.Certificate{c}
}

func pemCert(c *x509.Certificate) []byte { return pemBlock("CERTIFICATE", c.Raw) }

func pemBlock(typ string, b []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})
}

// presenting is a peer dialling a node: it sends its certificate
// whatever CAs the node asks for (Go's client would send none that the
// CertificateRequest's CA names do not cover) and verifies nothing.
func presenting(c tls.Certificate) *tls.Config {
	return &tls.Config{InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }}
}

var bothEKU = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}

// routeNode is a node's route TLS configuration (routeTLS) with a
// certificate of ca (localhost, 127.0.0.1) and trusting ca, its CA file
// and its App (for Reload).
func routeNode(t *testing.T, dir string, ca *issued, peers ...string) (*App, *tls.Config, string) {
	t.Helper()
	node := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "member"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: bothEKU}, ca)
	cert, key, caFile := filepath.Join(dir, "n.pem"), filepath.Join(dir, "n-key.pem"), filepath.Join(dir, "ca.pem")
	kd, _ := x509.MarshalECPrivateKey(node.key)
	for f, b := range map[string][]byte{cert: pemCert(node.cert), key: pemBlock("EC PRIVATE KEY", kd), caFile: pemCert(ca.cert)} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default()
	cfg.Cluster.Listen, cfg.Cluster.TLS, cfg.Cluster.Peers = ":6222", config.ClusterTLS{Cert: cert, Key: key, CA: caFile}, peers
	a := &App{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	c, err := a.routeTLS()
	if err != nil {
		t.Fatal(err)
	}
	return a, c, caFile
}

// TestRouteTLSRefusesBadPeers: whatever a peer presents, a route comes up
// only with a certificate chain to the cluster CA that is valid now and
// for the side it plays — on the routes the node accepts (Go's client
// verification against GetConfigForClient's ClientCAs) as on those it
// solicits (verifyRoute), by name and by address. Each case runs both
// ways: the peer dialling the node, and the node dialling the peer.
func TestRouteTLSRefusesBadPeers(t *testing.T) {
	dir := t.TempDir()
	ca := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "route CA"}, IsCA: true, BasicConstraintsValid: true}, nil)
	_, node, _ := routeNode(t, dir, ca, "localhost:6222", "127.0.0.1:6223")

	leaf := func(parent *issued, mod func(*x509.Certificate)) *issued {
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "peer"}, DNSNames: []string{"localhost"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: bothEKU}
		if mod != nil {
			mod(tmpl)
		}
		return issue(t, tmpl, parent)
	}
	inter := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "route intermediate"}, IsCA: true, BasicConstraintsValid: true}, ca)
	// A CA of the same name (and no way to tell but the signature).
	twin := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "route CA"}, IsCA: true, BasicConstraintsValid: true}, nil)
	member := leaf(ca, nil)
	expiredInter := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "old intermediate"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}, ca)

	cases := []struct {
		name             string
		certs            []tls.Certificate
		accept, solicit  bool // the node accepts the peer's route; the node's route to the peer comes up
		solicitByAddress bool // dialled by address (no server name)
	}{
		{"member", chain(member), true, true, true},
		{"member through an intermediate", chain(leaf(inter, nil), inter), true, true, true},
		{"intermediate not sent", chain(leaf(inter, nil)), false, false, false},
		{"expired intermediate", chain(leaf(expiredInter, nil), expiredInter), false, false, false},
		{"signed by a member's (non-CA) certificate", chain(leaf(member, nil), member), false, false, false},
		{"client authentication only", chain(leaf(ca, func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		})), true, false, false},
		{"server authentication only", chain(leaf(ca, func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		})), false, true, true},
		{"expired", chain(leaf(ca, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Minute)
		})), false, false, false},
		{"not yet valid", chain(leaf(ca, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
		})), false, false, false},
		{"self-signed", chain(leaf(nil, nil)), false, false, false},
		{"self-signed CA", chain(leaf(nil, func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = true, true })), false, false, false},
		{"a CA of the same name", chain(leaf(twin, nil), twin), false, false, false},
		// Accepted routes check no name (as before the CA reload): any
		// member of the CA may dial.
		{"another host's name", chain(leaf(ca, func(c *x509.Certificate) {
			c.DNSNames, c.IPAddresses = []string{"elsewhere.example"}, []net.IP{net.IPv4(10, 9, 9, 9)}
		})), true, false, false},
		{"address only", chain(leaf(ca, func(c *x509.Certificate) { c.DNSNames = nil })), true, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			peerClient := presenting(tc.certs[0])
			peerServer := &tls.Config{Certificates: tc.certs}
			check := func(what string, err error, want bool) {
				t.Helper()
				if (err == nil) != want {
					t.Errorf("%s: got error %v, want success %v", what, err, want)
				} else {
					t.Logf("%s: %v", what, err)
				}
			}
			check("accept", handshake(node, peerClient), tc.accept)
			check("solicit by name", handshakeName(peerServer, node, "localhost"), tc.solicit)
			check("solicit by address", handshakeName(peerServer, node, "127.0.0.1"), tc.solicitByAddress)
		})
	}
	t.Run("no certificate", func(t *testing.T) {
		if err := handshake(node, &tls.Config{InsecureSkipVerify: true}); err == nil {
			t.Fatal("a peer without a certificate was accepted")
		}
	})
}

// resumed runs a handshake whose client keeps sessions in cache, and
// reads what the server writes after it (a TLS 1.3 ticket arrives after
// the handshake). It returns both sides' errors and whether the client
// resumed a session.
func resumed(server, client *tls.Config) (cerr, serr error, didResume bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err, nil, false
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
		s := tls.Server(conn, server)
		err = s.Handshake()
		if err == nil {
			_, err = s.Write([]byte("x"))
		}
		errc <- err
	}()
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		return err, nil, false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, client)
	cerr = tc.Handshake()
	if cerr == nil {
		_, cerr = tc.Read(make([]byte, 1))
		didResume = tc.ConnectionState().DidResume
	}
	serr = <-errc
	return cerr, serr, didResume
}

// TestRouteTLSResumptionAfterCAChange: a peer that resumes a TLS session
// (ticket) it got while its CA was trusted is refused once the node's CA
// file no longer holds that CA — on accepted routes (Go checks the
// resumed chain against GetConfigForClient's ClientCAs, go1.24.12+) and on
// solicited ones (VerifyConnection runs on resumed handshakes too;
// nats-server sets no ClientSessionCache, so this is defence in depth),
// with TLS 1.2 and 1.3. Without the CA change the session is resumed,
// so the refusal is the CA's.
func TestRouteTLSResumptionAfterCAChange(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		name := map[uint16]string{tls.VersionTLS12: "TLS1.2", tls.VersionTLS13: "TLS1.3"}[v]
		t.Run(name+"/accept", func(t *testing.T) {
			old := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "old CA"}, IsCA: true, BasicConstraintsValid: true}, nil)
			cur := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "new CA"}, IsCA: true, BasicConstraintsValid: true}, nil)
			a, node, caFile := routeNode(t, t.TempDir(), old, "localhost:6222")
			peer := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "peer"}, DNSNames: []string{"localhost"}, ExtKeyUsage: bothEKU}, old)
			client := presenting(chain(peer)[0])
			client.MaxVersion, client.ClientSessionCache, client.ServerName = v, tls.NewLRUClientSessionCache(4), "localhost"
			if cerr, serr, _ := resumed(node, client); cerr != nil || serr != nil {
				t.Fatalf("first handshake: %v / %v", cerr, serr)
			}
			if cerr, serr, ok := resumed(node, client); cerr != nil || serr != nil || !ok {
				t.Fatalf("second handshake, CA unchanged: %v / %v, resumed %v (want a resumed session)", cerr, serr, ok)
			}
			if err := os.WriteFile(caFile, pemCert(cur.cert), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := a.Reload(nil); err != nil {
				t.Fatal(err)
			}
			cerr, serr, ok := resumed(node, client)
			if serr == nil {
				t.Fatalf("after the CA change, a peer of the old CA was accepted (resumed %v, client %v)", ok, cerr)
			}
			t.Logf("after the CA change: server %v; client %v", serr, cerr)
		})
		t.Run(name+"/solicit", func(t *testing.T) {
			old := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "old CA"}, IsCA: true, BasicConstraintsValid: true}, nil)
			cur := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "new CA"}, IsCA: true, BasicConstraintsValid: true}, nil)
			a, node, caFile := routeNode(t, t.TempDir(), old, "localhost:6222")
			peer := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "peer"}, DNSNames: []string{"localhost"}, ExtKeyUsage: bothEKU}, old)
			server := &tls.Config{Certificates: chain(peer), MaxVersion: v}
			client := node.Clone()
			client.ServerName, client.ClientSessionCache = "localhost", tls.NewLRUClientSessionCache(4)
			if cerr, serr, _ := resumed(server, client); cerr != nil || serr != nil {
				t.Fatalf("first handshake: %v / %v", cerr, serr)
			}
			if cerr, serr, ok := resumed(server, client); cerr != nil || serr != nil || !ok {
				t.Fatalf("second handshake, CA unchanged: %v / %v, resumed %v (want a resumed session)", cerr, serr, ok)
			}
			if err := os.WriteFile(caFile, pemCert(cur.cert), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := a.Reload(nil); err != nil {
				t.Fatal(err)
			}
			cerr, _, ok := resumed(server, client)
			if cerr == nil {
				t.Fatalf("after the CA change, the node's route to a peer of the old CA came up (resumed %v)", ok)
			}
			t.Logf("after the CA change: client %v", cerr)
		})
	}
}

// TestRouteCAReloadConcurrent: handshakes both ways while the CA file
// changes and Reload runs (run with -race: the pool is swapped under the
// reloader's lock, and the config nats-server reads is never written).
func TestRouteCAReloadConcurrent(t *testing.T) {
	dir := t.TempDir()
	ca := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "route CA"}, IsCA: true, BasicConstraintsValid: true}, nil)
	other := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "other CA"}, IsCA: true, BasicConstraintsValid: true}, nil)
	a, node, caFile := routeNode(t, dir, ca, "localhost:6222")
	_, peer, _ := routeNode(t, t.TempDir(), ca, "localhost:6222")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the bundle, rewritten with new times, and SIGHUPs
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			b := append(pemCert(ca.cert), pemCert(other.cert)...)
			if err := os.WriteFile(caFile, b, 0o600); err != nil {
				t.Error(err)
				return
			}
			mt := time.Now().Add(time.Duration(i) * time.Millisecond)
			_ = os.Chtimes(caFile, mt, mt)
			if i%3 == 0 {
				_ = a.Reload(nil)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var hs sync.WaitGroup
	for i := 0; i < 4; i++ {
		hs.Add(1)
		go func(i int) {
			defer hs.Done()
			for j := 0; j < 5; j++ {
				var err error
				if i%2 == 0 {
					err = handshake(node, peer)
				} else {
					err = handshake(peer, node)
				}
				if err != nil {
					t.Errorf("handshake %d/%d while the CA file changes: %v", i, j, err)
				}
			}
		}(i)
	}
	hs.Wait()
	close(stop)
	wg.Wait()
}

// TestRouteCAHalfWritten: a CA file read while being rewritten (empty:
// truncated, not written yet) keeps the CA in force, and the complete
// file is read at the next handshake even if the write ended within the
// same modification time (file systems' timestamps are coarse). Before,
// the failed read's time was taken as read: the old CA stayed trusted
// until a SIGHUP after step 3 of a rotation ("the new CA alone").
func TestRouteCAHalfWritten(t *testing.T) {
	old := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "old CA"}, IsCA: true, BasicConstraintsValid: true}, nil)
	cur := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "new CA"}, IsCA: true, BasicConstraintsValid: true}, nil)
	_, node, caFile := routeNode(t, t.TempDir(), old, "localhost:6222")
	_, peerOld, _ := routeNode(t, t.TempDir(), old, "localhost:6222")
	peerNew := presenting(chain(issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "peer"}, ExtKeyUsage: bothEKU}, cur))[0])
	if err := handshake(node, peerOld); err != nil {
		t.Fatalf("a peer of the CA in force: %v", err)
	}
	mt := time.Now().Add(time.Minute)
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(caFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(caFile, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	write(nil) // truncated: a handshake now reads nothing
	if err := handshake(node, peerOld); err != nil {
		t.Fatalf("while the CA file is empty, the CA in force stays: %v", err)
	}
	write(pemCert(cur.cert)) // the write completes, same timestamp
	if err := handshake(node, peerOld); err == nil {
		t.Fatal("the new CA alone is in the file, and a peer of the old CA was still accepted")
	}
	if err := handshake(node, peerNew); err != nil {
		t.Fatalf("a peer of the new CA: %v", err)
	}
}
