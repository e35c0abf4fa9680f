package mqtt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqttv3 "github.com/eclipse/paho.mqtt.golang"
)

// testCert makes a self-signed server certificate for 127.0.0.1 and
// localhost, and a pool that trusts it.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "throng test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestTLSListener: MQTT over TLS (mqtts) with both paho clients given a
// tls.Config that trusts a generated certificate; a client that does not
// trust it fails the handshake.
func TestTLSListener(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	cert, pool := testCert(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	go e.srv.Serve(l)
	addr := l.Addr().String()
	clientTLS := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}

	// MQTT 5 (paho.golang) over a tls.Conn.
	nc, err := tls.Dial("tcp", addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *paho.Publish, 10)
	c := paho.NewClient(paho.ClientConfig{Conn: nc, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet; return true, nil }}})
	if _, err := c.Connect(ctxT(t), &paho.Connect{ClientID: "tls5", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	if _, err := c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "secure/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	// MQTT 3.1.1 (paho.mqtt.golang) with ssl:// and SetTLSConfig.
	p := mqttv3.NewClient(mqttv3.NewClientOptions().AddBroker("ssl://" + addr).SetClientID("tls3").
		SetProtocolVersion(4).SetTLSConfig(clientTLS).SetAutoReconnect(false))
	if tk := p.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connect over TLS: %v", tk.Error())
	}
	defer p.Disconnect(0)
	if tk := p.Publish("secure/x", 1, false, []byte("sealed")); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("publish: %v", tk.Error())
	}
	select {
	case m := <-got:
		if string(m.Payload) != "sealed" || m.QoS != 1 {
			t.Fatalf("got %q qos %d", m.Payload, m.QoS)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message over TLS")
	}

	// Not trusted: the handshake fails, no session starts.
	bad, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err == nil {
		bad.Close()
		t.Fatal("handshake with an untrusted certificate succeeded")
	}
}
