package amqp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/coder/websocket"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

func TestSASLPlainTenants(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.AllowAnonymous = false })
	e.tenant(t, &tenant.Tenant{Name: "acme"})
	e.addrDef(t, "acme", &address.Address{Name: "q", Type: address.Queue})
	e.user(t, "acme", "alice", "secret")
	// user@tenant
	s := e.session(t, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("alice@acme", "secret")})
	send(t, sender(t, s, "q", nil), dataMsg("1"))
	// The open hostname names the tenant when the user name does not.
	s2 := e.session(t, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("alice", "secret"), HostName: "acme"})
	send(t, sender(t, s2, "q", nil), dataMsg("2"))
	eventually(t, func() bool {
		st, _ := e.r.AddressStats(ctxT(t), "acme", "q")
		return st.Backlog == 2
	})
	// Wrong password, unknown tenant, anonymous: refused.
	for _, sasl := range []goamqp.SASLType{
		goamqp.SASLTypePlain("alice@acme", "wrong"),
		goamqp.SASLTypePlain("alice@nope", "secret"),
		goamqp.SASLTypeAnonymous(),
	} {
		if c, err := goamqp.Dial(ctxT(t), e.url(), &goamqp.ConnOptions{SASLType: sasl}); err == nil {
			c.Close()
			t.Fatal("dial succeeded with bad credentials")
		}
	}
	// No tenant named: the default tenant, where alice does not exist.
	// SASL succeeds provisionally; the open is followed by a close.
	c, err := goamqp.Dial(ctxT(t), e.url(), &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("alice", "secret")})
	if err == nil {
		_, err = c.NewSession(ctxT(t), nil)
		c.Close()
	}
	if err == nil {
		t.Fatal("alice got into the default tenant")
	}
	// Without SASL the server answers with its SASL header and closes.
	p := dialRawHeader(t, e)
	p.write([]byte("AMQP\x00\x01\x00\x00"))
	if h := p.readHeader(); h.ID != 3 {
		t.Fatalf("header %+v", h)
	}
	p.expectEOF()
}

func TestAuthorizationAndStrictTenant(t *testing.T) {
	e := startEnv(t, nil)
	e.tenant(t, &tenant.Tenant{Name: "strict", Strict: true})
	e.addrDef(t, "strict", &address.Address{Name: "a/x", Type: address.Queue})
	e.addrDef(t, "strict", &address.Address{Name: "b", Type: address.Queue})
	e.user(t, "strict", "bob", "pw", tenant.Permission{Pattern: "a/#", Actions: []tenant.Action{tenant.ActionSend}})
	s := e.session(t, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("bob@strict", "pw")})
	send(t, sender(t, s, "a/x", nil), dataMsg("ok"))
	_, err := s.NewReceiver(ctxT(t), "a/x", nil)
	if condition(err) != "amqp:unauthorized-access" {
		t.Fatalf("receive without permission: %v", err)
	}
	_, err = s.NewSender(ctxT(t), "b", nil)
	if condition(err) != "amqp:unauthorized-access" {
		t.Fatalf("send without permission: %v", err)
	}
	e.user(t, "strict", "admin", "pw")
	s2 := e.session(t, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("admin@strict", "pw")})
	_, err = s2.NewSender(ctxT(t), "unknown", nil)
	if condition(err) != "amqp:not-found" {
		t.Fatalf("unknown address on a strict tenant: %v", err)
	}
	// The session survives refused attaches.
	send(t, sender(t, s2, "b", nil), dataMsg("still fine"))
}

// testPKI is a throwaway CA with a server and a client certificate.
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
	dir    string
}

func newPKI(t testing.TB, clientCN, clientOrg string) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, subj pkix.Name, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: subj,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k},
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	p := &testPKI{pool: x509.NewCertPool(), dir: t.TempDir()}
	p.pool.AddCert(caCert)
	var certPEM, keyPEM []byte
	p.server, certPEM, keyPEM = leaf(2, pkix.Name{CommonName: "localhost"}, x509.ExtKeyUsageServerAuth)
	p.client, _, _ = leaf(3, pkix.Name{CommonName: clientCN, Organization: []string{clientOrg}}, x509.ExtKeyUsageClientAuth)
	_ = os.WriteFile(filepath.Join(p.dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	_ = os.WriteFile(filepath.Join(p.dir, "server.pem"), certPEM, 0o600)
	_ = os.WriteFile(filepath.Join(p.dir, "server.key"), keyPEM, 0o600)
	return p
}

func (p *testPKI) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool, ClientAuth: tls.VerifyClientCertIfGiven}
}

func TestTLSAndExternal(t *testing.T) {
	pki := newPKI(t, "dev1", "acme")
	e := startEnv(t, func(c *Config) { c.TLSConfig = pki.serverConfig(); c.AllowAnonymous = false })
	e.tenant(t, &tenant.Tenant{Name: "acme"})
	e.addrDef(t, "acme", &address.Address{Name: "tq", Type: address.Queue})
	e.user(t, "acme", "dev1", "unused")
	e.user(t, "default", "u", "pw")
	// A TLS listener: EXTERNAL with the client certificate.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.srv.Serve(ln) }()
	clientTLS := &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}, ServerName: "localhost"}
	c, err := goamqp.Dial(ctxT(t), "amqps://"+ln.Addr().String(), &goamqp.ConnOptions{TLSConfig: clientTLS, SASLType: goamqp.SASLTypeExternal("")})
	if err != nil {
		t.Fatalf("EXTERNAL: %v", err)
	}
	defer c.Close()
	s, _ := c.NewSession(ctxT(t), nil)
	send(t, sender(t, s, "tq", nil), dataMsg("via cert"))
	eventually(t, func() bool { st, _ := e.r.AddressStats(ctxT(t), "acme", "tq"); return st.Backlog == 1 })
	// TLS negotiated inside the AMQP protocol header on the plain port.
	c2, err := goamqp.Dial(ctxT(t), e.url(), &goamqp.ConnOptions{TLSConfig: &tls.Config{RootCAs: pki.pool, ServerName: "localhost"},
		SASLType: goamqp.SASLTypePlain("u", "pw")})
	if err != nil {
		t.Fatalf("TLS in header: %v", err)
	}
	c2.Close()
	// No client certificate: EXTERNAL is not offered.
	if c3, err := goamqp.Dial(ctxT(t), "amqps://"+ln.Addr().String(), &goamqp.ConnOptions{TLSConfig: &tls.Config{RootCAs: pki.pool, ServerName: "localhost"}, SASLType: goamqp.SASLTypeExternal("")}); err == nil {
		c3.Close()
		t.Fatal("EXTERNAL without a certificate succeeded")
	}
}

func TestWebSocket(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "wq", Type: address.Queue})
	hs := httptest.NewServer(e.srv.ServeWebSocket())
	defer hs.Close()
	ctx := ctxT(t)
	wc, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http"), &websocket.DialOptions{Subprotocols: []string{"amqp"}})
	if err != nil {
		t.Fatal(err)
	}
	nc := websocket.NetConn(context.Background(), wc, websocket.MessageBinary)
	c, err := goamqp.NewConn(ctx, nc, &goamqp.ConnOptions{SASLType: goamqp.SASLTypeAnonymous()})
	if err != nil {
		t.Fatalf("AMQP over WebSocket: %v", err)
	}
	defer c.Close()
	s, _ := c.NewSession(ctx, nil)
	send(t, sender(t, s, "wq", nil), dataMsg("ws"))
	if m := recv(t, receiver(t, s, "wq", nil)); string(m.GetData()) != "ws" {
		t.Fatalf("got %q", m.GetData())
	}
}

func TestShutdownClosesWithForced(t *testing.T) {
	e := startEnv(t, nil)
	c := e.dial(t, nil)
	s, _ := c.NewSession(ctxT(t), nil)
	snd := sender(t, s, "topic/x", nil)
	send(t, snd, dataMsg("before"))
	go func() { _ = e.srv.Shutdown(context.Background()) }()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed by Shutdown")
	}
	if cond := condition(c.Err()); cond != "amqp:connection:forced" {
		t.Fatalf("close condition %q (%v)", cond, c.Err())
	}
}
