// Package testkit runs a whole throng platform in-process for end-to-end
// tests: a temporary data directory, listeners on 127.0.0.1:0, a known
// admin password, cleanup registered with the test.
//
// Logs are discarded unless THRONG_TEST_LOG is set (to "1" for text on
// stderr, or "json"), because the engine may log after a test has ended,
// when testing.T may no longer be written to.
package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/app"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// StartTimeout bounds how long Start waits for the platform to be ready.
const StartTimeout = 60 * time.Second

// Platform is a running in-process platform.
type Platform struct {
	// AdminURL is the admin API's base URL ("http://127.0.0.1:port").
	AdminURL string
	// MQTTAddr and AMQPAddr are the protocol listeners' host:port (empty
	// when not served).
	MQTTAddr string
	AMQPAddr string
	// HTTPAddr is the HTTP listener's host:port (Hono's HTTP adapter).
	HTTPAddr string
	// AdminUser and AdminPassword are the platform administrator's
	// credentials ("admin" in the default tenant).
	AdminUser     string
	AdminPassword string
	// Config is the configuration the platform runs with.
	Config *config.Config
	App    *app.App
	Router *router.Router
	Store  *tenant.Store

	cancel context.CancelFunc
	done   chan error
}

// Option changes the configuration before start.
type Option func(*config.Config)

// Start starts a platform and registers its shutdown with t.Cleanup.
func Start(t testing.TB, opts ...Option) *Platform {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	// Every listener on a free loopback port; the TLS ones need a
	// certificate, which tests that want them configure.
	cfg.Listeners = config.Listeners{
		AMQP:  "127.0.0.1:0",
		MQTT:  "127.0.0.1:0",
		HTTP:  "127.0.0.1:0",
		Admin: "127.0.0.1:0",
	}
	// Password checks (bcrypt) under the race detector on a loaded
	// machine take seconds: a handshake gets a minute.
	cfg.Connections.HandshakeTimeout = config.Duration(time.Minute)
	pw := make([]byte, 12)
	_, _ = rand.Read(pw)
	cfg.AdminPassword = hex.EncodeToString(pw)
	for _, o := range opts {
		o(cfg)
	}
	p := &Platform{Config: cfg, AdminUser: app.AdminUser, AdminPassword: cfg.AdminPassword}
	p.start(t)
	t.Cleanup(func() { p.stop(t) })
	return p
}

// Logger returns the logger testkit platforms use (see package comment).
func Logger() *slog.Logger {
	switch os.Getenv("THRONG_TEST_LOG") {
	case "":
		return slog.New(slog.DiscardHandler)
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (p *Platform) start(t testing.TB) {
	t.Helper()
	a, err := app.New(p.Config, app.WithLogger(Logger()), app.WithStdout(io.Discard))
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("testkit: platform did not start: %v", err)
	case <-time.After(StartTimeout):
		cancel()
		t.Fatalf("testkit: platform not ready after %v", StartTimeout)
	}
	p.App, p.cancel, p.done = a, cancel, done
	p.Router, p.Store = a.Router(), a.Store()
	p.AdminURL = ""
	if addr := a.AdminAddr(); addr != nil {
		p.AdminURL = "http://" + addr.String()
	}
	p.MQTTAddr, p.AMQPAddr, p.HTTPAddr = "", "", ""
	if addr := a.ListenerAddr("http"); addr != nil {
		p.HTTPAddr = addr.String()
	}
	if addr := a.ListenerAddr("mqtt"); addr != nil {
		p.MQTTAddr = addr.String()
	}
	if addr := a.ListenerAddr("amqp"); addr != nil {
		p.AMQPAddr = addr.String()
	}
}

func (p *Platform) stop(t testing.TB) {
	t.Helper()
	if p.cancel == nil {
		return
	}
	p.cancel()
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("testkit: platform stopped with %v", err)
		}
	case <-time.After(app.ShutdownTimeout + 10*time.Second):
		t.Errorf("testkit: platform did not stop")
	}
	p.cancel = nil
}

// Restart shuts the platform down and starts it again on the same data
// directory. Listeners get new ports: AdminURL, App, Router and Store are
// replaced.
func (p *Platform) Restart(t testing.TB) {
	t.Helper()
	p.stop(t)
	p.start(t)
}

// Do sends an admin API request with the admin credentials; body, if not
// nil, is sent as is. It fails the test on transport errors.
func (p *Platform) Do(t testing.TB, method, path string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, p.AdminURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.SetBasicAuth(p.AdminUser, p.AdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// Eventually polls cond every few milliseconds until it returns true, and
// fails the test if that does not happen within timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(wait)
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}

// FreeAddr picks a free loopback address for a child process's listener
// that must keep its port across a restart. It takes ports in
// 20000–32767, below the kernel's ephemeral range (32768–60999 by
// default): a port handed out by ":0" is one the kernel also gives to
// outgoing connections, so between the pick and the child's bind — or
// between a kill -9 and the restart — a client's connection could hold
// it and the child fail with "address already in use". ":0" remains the
// fallback.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 50 {
		a := fmt.Sprintf("127.0.0.1:%d", 20000+mrand.IntN(12768))
		if ln, err := net.Listen("tcp", a); err == nil {
			ln.Close()
			return a
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
