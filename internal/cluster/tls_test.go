package cluster_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// testCA is a certificate authority made for the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate, PEM
}

func newCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a node certificate for 127.0.0.1 (the peers' host), good
// as server and client certificate, and its key; it returns the flags
// that give them and the CA to serve.
func (ca *testCA) issue(t *testing.T, dir, name string, trust *testCA) []string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, cert, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return []string{"--cluster-tls-cert", cert, "--cluster-tls-key", keyFile, "--cluster-tls-ca", trust.file}
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRouteTLS: three nodes whose routes are mutual TLS (and nothing
// else: no cluster secret, the certificates authenticate) form a
// cluster and carry a message across nodes; a node with a certificate
// from another CA, and a node without TLS (with the secret), cannot
// join, and say why in their logs; serve --check reports an unreadable
// key file.
func TestRouteTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs five nodes")
	}
	dir := t.TempDir()
	ca := newCA(t, dir, "cluster-ca")
	other := newCA(t, dir, "other-ca")
	c := newCluster(t, 5)
	n1, n2, n3, foreign, plain := c.nodes[0], c.nodes[1], c.nodes[2], c.nodes[3], c.nodes[4]
	// The three members list one another; the two intruders list the
	// members and themselves, as a node meant to join would.
	members := strings.Join(strings.Split(c.peers, ",")[:3], ",")
	c.peers = members
	for _, nd := range []*node{n1, n2, n3} {
		nd.args, nd.noSecret = ca.issue(t, dir, nd.name, ca), true
	}
	// The foreign node trusts the cluster's CA, so that only the
	// members' verification of its certificate can keep it out.
	foreign.args, foreign.noSecret, foreign.log = other.issue(t, dir, foreign.name, ca), true, &lineLog{}
	foreign.peers = members + ",127.0.0.1:" + strconv.Itoa(foreign.port)
	plain.log, plain.peers = &lineLog{}, members+",127.0.0.1:"+strconv.Itoa(plain.port)
	n1.log = &lineLog{}

	for _, nd := range []*node{n1, n2, n3} {
		c.start(nd)
	}
	for _, nd := range []*node{n1, n2, n3} {
		c.listening(nd)
		t.Logf("%s ready after %s", nd.name, c.waitReady(nd).Round(time.Millisecond))
	}
	for _, nd := range []*node{n1, n2, n3} {
		c.checkStatus(nd, 3)
	}

	// A message crosses the TLS routes: MQTT QoS 1 published on node 1,
	// received on node 3.
	c.api(n1, "POST", "/api/tenants", `{"name":"acme"}`, nil)
	c.api(n1, "POST", "/api/tenants/acme/users", `{"name":"app","password":"`+appPW+`","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`, nil)
	// The user reaches node 3 through the replicated store: retry the
	// login until it does.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if cl := tryMQTT(t, n3, "login-n3", false); cl != nil {
			_ = cl.Disconnect(&paho.Disconnect{})
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the tenant's user cannot connect on node 3")
		}
		time.Sleep(200 * time.Millisecond)
	}
	live := newTally()
	sub := dialMQTT(t, n3, "sub-n3", func(p *paho.Publish) { live.add("sub-n3", string(p.Payload)) })
	if _, err := sub.Subscribe(ctxT(t, 30*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "tls/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	pub := dialMQTT(t, n1, "pub-n1", nil)
	for i, deadline := 0, time.Now().Add(20*time.Second); ; i++ {
		body := "probe" + strconv.Itoa(i)
		publishAll(t, pub, "tls/probe", body, 1)
		if d, _ := live.count([]string{body + "-0"}); d == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no message from node 1 reached the subscriber on node 3 over the TLS routes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	live.waitFor(t, "mqtt qos1 n1→n3 over TLS routes", publishAll(t, pub, "tls/a", "m", 50), 30*time.Second)

	// The intruders: neither joins. The members refuse the certificate
	// from another CA, and the foreign node's log says its certificate
	// was refused; the plain one is refused because the members speak
	// TLS first: it only sees its routes closed, the members say why.
	c.start(foreign)
	c.start(plain)
	why := []struct {
		who   string
		log   *lineLog
		parts []string
	}{
		{foreign.name, foreign.log, []string{"TLS route handshake error: remote error: tls: bad certificate"}},
		{"n1 on " + foreign.name, n1.log, []string{"TLS route handshake error", "certificate signed by unknown authority"}},
		{"n1 on " + plain.name, n1.log, []string{"TLS route handshake error: tls: first record does not look like a TLS handshake"}},
	}
	for deadline := time.Now().Add(45 * time.Second); ; {
		var missing []string
		for _, w := range why {
			if w.log.find(w.parts...) == "" {
				missing = append(missing, w.who+": "+strings.Join(w.parts, " … "))
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refusal in the logs: %v", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, w := range why {
		t.Logf("%s: %s", w.who, w.log.find(w.parts...))
	}
	// Give them time to join if they could: every route is tried
	// again every second.
	time.Sleep(5 * time.Second)
	for _, nd := range []*node{n1, n2, n3} {
		var st status
		c.api(nd, "GET", "/api/status", "", &st)
		for _, r := range st.Cluster.Routes {
			if r.Node == foreign.name || r.Node == plain.name {
				t.Fatalf("%s has a route to %s", nd.name, r.Node)
			}
		}
		for _, x := range st.Cluster.Nodes {
			if x.Name == foreign.name || x.Name == plain.name {
				t.Fatalf("%s lists %s as a node", nd.name, x.Name)
			}
		}
	}
	for _, nd := range []*node{foreign, plain} {
		if nd.log.find(`"msg":"throng ready"`) != "" || nd.log.find("joined the cluster") != "" {
			t.Fatalf("%s joined", nd.name)
		}
	}

	// serve --check names an unreadable key file.
	flags := ca.issue(t, dir, "check", ca)
	flags[3] = filepath.Join(dir, "no-such-key.pem")
	out, err := exec.Command(c.bin, append([]string{"serve", "--check", "--data-dir", t.TempDir(),
		"--cluster-listen", "127.0.0.1:6222", "--peers", "127.0.0.1:6222,127.0.0.1:6223"}, flags...)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cluster.tls.key") || !strings.Contains(string(out), "no such file") {
		t.Fatalf("serve --check with a missing key: %v\n%s", err, out)
	}
}
