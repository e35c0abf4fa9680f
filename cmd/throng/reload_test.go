package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGHUP (issue 14, "TLS"): a running `throng serve` re-reads its TLS
// certificate and key — here renewed in place with the old modification
// time, so that only the signal can make it notice — and the connection
// guard's limits from its configuration file. A connection made before
// keeps working; new handshakes get the new certificate (Go's TLS and
// openssl s_client); a broken pair is refused and the certificate in force
// stays.
func TestServeSIGHUPReload(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := newReloadCA(t)
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, caFile, ca.pem)
	c1, k1 := ca.issue(t, 11)
	writeFile(t, certFile, c1)
	writeFile(t, keyFile, k1)
	cfgFile := filepath.Join(dir, "throng.yaml")
	writeConfig := func(rate, burst int) {
		writeFile(t, cfgFile, []byte("connections:\n  unlimitedSources: \"\"\n  ratePerSource: "+itoa(rate)+"\n  burstPerSource: "+itoa(burst)+"\n"))
	}
	writeConfig(1000, 1000)

	cmd := exec.Command(bin, "serve", "--config", cfgFile, "--data-dir", filepath.Join(dir, "data"),
		"--admin", "127.0.0.1:0", "--mqtts", "127.0.0.1:0", "--mqtt", "", "--amqp", "", "--amqps", "", "--http", "", "--https", "",
		"--tls-cert", certFile, "--tls-key", keyFile, "--log-format", "json")
	cmd.Env = append(os.Environ(), "THRONG_ADMIN_PASSWORD=reload-test-pw")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	addrs := make(chan [2]string, 8)
	logs := &lockedBuffer{}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
			var l struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && strings.HasSuffix(l.Msg, " listening") {
				addrs <- [2]string{strings.TrimSuffix(l.Msg, " listening"), l.Addr}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	var adminAddr, mqttsAddr string
	for adminAddr == "" || mqttsAddr == "" {
		select {
		case a := <-addrs:
			switch a[0] {
			case "admin":
				adminAddr = a[1]
			case "mqtts":
				mqttsAddr = a[1]
			}
		case <-done:
			t.Fatalf("serve exited:\n%s", logs.String())
		case <-time.After(60 * time.Second):
			t.Fatalf("no listening lines:\n%s", logs.String())
		}
	}
	waitUntil(t, 60*time.Second, "ready", func() bool {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	conf := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	serial := func() int64 {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", mqttsAddr, conf)
		if err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 11 {
		t.Fatalf("first certificate serial %d", s)
	}
	// A connection made before the reload: anonymous MQTT from loopback.
	before, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", mqttsAddr, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if rc := mqttConnect(t, before); rc != 0 {
		t.Fatalf("CONNACK %d", rc)
	}

	// Renew in place, keeping the old modification time: no handshake
	// notices it without the signal.
	st, err := os.Stat(certFile)
	if err != nil {
		t.Fatal(err)
	}
	c2, k2 := ca.issue(t, 12)
	writeFile(t, keyFile, k2)
	writeFile(t, certFile, c2)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, st.ModTime(), st.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	if s := serial(); s != 11 {
		t.Fatalf("certificate changed without SIGHUP (serial %d)", s)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the renewed certificate", func() bool { return serial() == 12 })
	// openssl sees it too.
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not installed")
		}
		t.Log("openssl not installed; skipping its check")
	} else {
		time.Sleep(1100 * time.Millisecond) // the guard's token for this address
		out, err := exec.Command("sh", "-c", "openssl s_client -connect "+mqttsAddr+" -CAfile "+caFile+" </dev/null 2>/dev/null | openssl x509 -noout -serial").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "serial=0C") {
			t.Fatalf("openssl: %s %v", out, err)
		}
	}
	// The connection made before still answers PINGREQ.
	_ = before.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := before.Write([]byte{0xC0, 0}); err != nil {
		t.Fatal(err)
	}
	var pong [2]byte
	if _, err := io.ReadFull(before, pong[:]); err != nil || pong[0] != 0xD0 {
		t.Fatalf("PINGRESP on the old connection: % x %v", pong, err)
	}
	// The guard's limits from the configuration file: 1 connection a
	// second, burst 1, from any address; the second connection within a
	// second is refused, 429 from the admin listener.
	writeConfig(1, 1)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the guard's new limits", func() bool {
		return strings.Count(logs.String(), `"msg":"reload: connection guard limits"`) >= 2
	})
	got429 := false
	for range 5 {
		resp, err := http.Get("http://" + adminAddr + "/healthz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			got429 = true
			break
		}
	}
	if !got429 {
		t.Fatalf("no 429 after the reloaded limits (1/s):\n%s", logs.String())
	}

	// A broken pair: refused, the certificate in force stays. (The
	// configuration does not load either — its check reads tls.cert — so
	// the guard keeps its limits: one handshake a second.)
	writeFile(t, certFile, []byte("not a certificate"))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the reload's warning", func() bool {
		l := logs.String()
		return strings.Contains(l, "reload: tls.cert not loaded") && strings.Contains(l, "reload: the configuration does not load")
	})
	time.Sleep(1100 * time.Millisecond)
	if s := serial(); s != 12 {
		t.Fatalf("after a broken renewal: serial %d", s)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !ok(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mqttConnect sends an anonymous MQTT 3.1.1 CONNECT and returns the
// CONNACK's return code.
func mqttConnect(t *testing.T, c net.Conn) byte {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 0}
	if _, err := c.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		t.Fatal(err)
	}
	return ack[3]
}

type reloadCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newReloadCA(t *testing.T) *reloadCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "reload test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &reloadCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a server certificate for 127.0.0.1 and its key (PEM).
func (ca *reloadCA) issue(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "throng"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
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
