package app

import (
	"crypto/tls"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/config"
)

// writeCAs writes the CAs' certificates as one PEM bundle, with the
// given modification time.
func writeCAs(t *testing.T, file string, mtime time.Time, cas ...*routeCA) {
	t.Helper()
	var b []byte
	for _, ca := range cas {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(file, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// handshakeName is handshake with the server name nats-server gives the
// client side: "" stands for a route dialled by IP address (Go sends no
// server name then).
func handshakeName(server, client *tls.Config, name string) error {
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
	c.ServerName = name
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, c)
	cerr := tc.Handshake()
	if cerr == nil {
		// TLS 1.3: the server's verdict on the client's certificate
		// comes after the client's handshake (see handshake).
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := tc.Read(make([]byte, 1)); err != nil && !isTimeout(err) && !strings.Contains(err.Error(), "EOF") {
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

// TestRouteCAReload: the routes' CA is read again when its file changes
// (at the next handshake) and on Reload (SIGHUP) when it changed without
// a new modification time, on both sides of a route: a node that trusts
// only the old CA refuses a node with a certificate of the new one, as
// server and as client, until its CA file holds both; once it holds the
// new one alone, a certificate of the old CA is refused. A CA file that
// does not load keeps the CA in force. A route dialled by IP address
// (no server name) needs a certificate valid for one of the peers.
func TestRouteCAReload(t *testing.T) {
	dir := t.TempDir()
	old, cur := newRouteCA(t), newRouteCA(t)
	past := time.Now().Add(-time.Hour)
	node := func(name string, signer *routeCA, serial int64, peers []string, trust ...*routeCA) (*App, *tls.Config, string) {
		t.Helper()
		cert, key, caFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"), filepath.Join(dir, name+"-ca.pem")
		signer.write(t, serial, cert, key, past) // DNS name localhost, no address
		writeCAs(t, caFile, past, trust...)
		cfg := config.Default()
		cfg.Cluster.Listen, cfg.Cluster.TLS = ":6222", config.ClusterTLS{Cert: cert, Key: key, CA: caFile}
		cfg.Cluster.Peers = peers
		a := &App{cfg: cfg, log: slog.New(slog.DiscardHandler)}
		c, err := a.routeTLS()
		if err != nil {
			t.Fatal(err)
		}
		return a, c, caFile
	}
	peers := []string{"localhost:6222", "127.0.0.2:6222"}
	a1, c1, ca1 := node("n1", old, 2, peers, old)
	_, c2, _ := node("n2", cur, 3, peers, old, cur) // rotated first: the bundle, and a new certificate
	_, c3, _ := node("n3", old, 4, peers, old, cur) // the bundle, still the old certificate

	check := func(what string, server, client *tls.Config, wantOK bool) {
		t.Helper()
		err := handshakeName(server, client, "localhost")
		switch {
		case wantOK && err != nil:
			t.Fatalf("%s: %v", what, err)
		case !wantOK && err == nil:
			t.Fatalf("%s: the handshake succeeded", what)
		}
		t.Logf("%s: %v", what, err)
	}
	check("n1 (old CA) accepting n2 (new)", c1, c2, false)
	check("n1 (old CA) soliciting n2 (new)", c2, c1, false)

	// The bundle, written with a new modification time: the next
	// handshake reads it.
	mod := time.Now()
	writeCAs(t, ca1, mod, old, cur)
	check("n1 (file now old+new) accepting n2", c1, c2, true)
	check("n1 (old+new) soliciting n2", c2, c1, true)
	check("n1 (old+new) accepting n3 (old)", c1, c3, true)

	// The new CA alone, with the same modification time: only Reload
	// reads it.
	writeCAs(t, ca1, mod, cur)
	check("n1 (new alone, not read yet) accepting n3 (old)", c1, c3, true)
	if err := a1.Reload(nil); err != nil {
		t.Fatal(err)
	}
	check("n1 (new alone, reloaded) accepting n3 (old)", c1, c3, false)
	check("n1 (new alone) soliciting n3 (old)", c3, c1, false)
	check("n1 (new alone) accepting n2 (new)", c1, c2, true)
	check("n1 (new alone) soliciting n2 (new)", c2, c1, true)

	// A file that does not load: the CA in force stays, and Reload says
	// so.
	if err := os.WriteFile(ca1, []byte("being rewritten"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("n1 (unloadable file) accepting n2", c1, c2, true)
	check("n1 (unloadable file) accepting n3 (old)", c1, c3, false)
	if err := a1.Reload(nil); err == nil || !strings.Contains(err.Error(), "cluster.tls.ca") {
		t.Fatalf("Reload with an unloadable CA file: %v", err)
	}

	// Dialled by address: n2's certificate names localhost, one of n1's
	// peers; a node whose peers are addresses only refuses it.
	if err := handshakeName(c2, c1, ""); err != nil {
		t.Fatalf("by address, a certificate for a peer's name: %v", err)
	}
	_, c4, _ := node("n4", cur, 5, []string{"127.0.0.2:6222", "127.0.0.3:6222"}, cur)
	if err := handshakeName(c2, c4, ""); err == nil || !strings.Contains(err.Error(), "none of the peers' hosts") {
		t.Fatalf("by address, a certificate for none of the peers: %v", err)
	} else {
		t.Logf("by address, a certificate for none of the peers: %v", err)
	}
}
