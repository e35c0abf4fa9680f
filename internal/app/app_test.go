package app_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/app"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/testkit"
)

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testConfig(t *testing.T, dataDir string) *config.Config {
	cfg := config.Default()
	cfg.DataDir = dataDir
	cfg.Listeners = config.Listeners{Admin: "127.0.0.1:0", AMQP: "127.0.0.1:0", MQTT: "127.0.0.1:0"}
	return cfg
}

type running struct {
	app    *app.App
	stdout *syncBuffer
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func start(t *testing.T, cfg *config.Config) *running {
	t.Helper()
	r := &running{stdout: &syncBuffer{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	logger, err := app.NewLogger(config.Log{Format: "json", Level: "info"}, r.logs)
	if err != nil {
		t.Fatal(err)
	}
	r.app, err = app.New(cfg, app.WithLogger(logger), app.WithStdout(r.stdout))
	if err != nil {
		t.Fatal(err)
	}
	var ctx context.Context
	ctx, r.cancel = context.WithCancel(context.Background())
	go func() { r.done <- r.app.Run(ctx) }()
	select {
	case <-r.app.Ready():
	case err := <-r.done:
		t.Fatalf("start: %v", err)
	case <-time.After(testkit.StartTimeout):
		t.Fatal("not ready")
	}
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
	})
}

func (r *running) status(t *testing.T, user, pass string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+r.app.AdminAddr().String()+"/api/tenants", nil)
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

var generatedRE = regexp.MustCompile(`generated admin password: (\S+)`)

func TestAdminBootstrap(t *testing.T) {
	dir := t.TempDir()

	// First start without a configured password: one is generated, printed
	// once to stdout and works.
	r := start(t, testConfig(t, dir))
	m := generatedRE.FindStringSubmatch(r.stdout.String())
	if m == nil {
		t.Fatalf("no generated password on stdout: %q", r.stdout.String())
	}
	generated := m[1]
	if strings.Contains(r.logs.String(), generated) {
		t.Fatal("the generated password appears in the logs")
	}
	if st := r.status(t, "admin", generated); st != 200 {
		t.Fatalf("generated password: %d", st)
	}
	if u, _ := r.app.Store().User("default", "admin"); u == nil || strings.Contains(u.PasswordHash, generated) || !u.HasRole("admin") {
		t.Fatalf("stored admin = %+v", u)
	}
	r.stop()

	// Second start: nothing printed, the password still works.
	r = start(t, testConfig(t, dir))
	if out := r.stdout.String(); out != "" {
		t.Fatalf("second start printed %q", out)
	}
	if st := r.status(t, "admin", generated); st != 200 {
		t.Fatalf("after restart: %d", st)
	}
	r.stop()

	// A configured password replaces the stored hash.
	cfg := testConfig(t, dir)
	cfg.AdminPassword = "configured-pw"
	r = start(t, cfg)
	if st := r.status(t, "admin", "configured-pw"); st != 200 {
		t.Fatalf("configured password: %d", st)
	}
	if st := r.status(t, "admin", generated); st != 401 {
		t.Fatalf("old password still accepted: %d", st)
	}
	r.stop()

	// Without a configured password again, the stored one is kept.
	r = start(t, testConfig(t, dir))
	if st := r.status(t, "admin", "configured-pw"); st != 200 {
		t.Fatalf("kept password: %d", st)
	}
	if r.stdout.String() != "" {
		t.Fatal("printed a password although the admin exists")
	}
}

func TestConfiguredPasswordOnFirstStart(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.AdminPassword = "first-pw"
	r := start(t, cfg)
	if r.stdout.String() != "" {
		t.Fatalf("printed %q although a password is configured", r.stdout.String())
	}
	if st := r.status(t, "admin", "first-pw"); st != 200 {
		t.Fatalf("configured password: %d", st)
	}
}

func TestProtocolListeners(t *testing.T) {
	// The HTTP listener serves Hono's HTTP adapter: a device request
	// without credentials is 401 with Hono's challenge.
	cfg := testConfig(t, t.TempDir())
	cfg.Listeners.HTTP = "127.0.0.1:0"
	cfg.Listeners.MQTT = "127.0.0.1:0"
	r := start(t, cfg)
	haddr := r.app.ListenerAddr("http")
	if haddr == nil {
		t.Fatal("no http listener")
	}
	resp, err := http.Post("http://"+haddr.String()+"/telemetry", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("POST /telemetry without credentials: %d %v", resp.StatusCode, resp.Header)
	}
	// MQTT is served: an anonymous MQTT 3.1.1 CONNECT from loopback is
	// accepted.
	maddr := r.app.ListenerAddr("mqtt")
	if maddr == nil {
		t.Fatal("no mqtt listener")
	}
	c, err := net.DialTimeout("tcp", maddr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 1, 'a'}
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || !bytes.Equal(ack, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("CONNACK %x %v", ack, err)
	}
	// The admin address is logged for tools that start throng with :0.
	if !strings.Contains(r.logs.String(), `"msg":"admin listening"`) || !strings.Contains(r.logs.String(), r.app.AdminAddr().String()) {
		t.Fatalf("admin address not logged:\n%s", r.logs)
	}
}

func TestShutdown(t *testing.T) {
	r := start(t, testConfig(t, t.TempDir()))
	addr := r.app.AdminAddr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.app.Shutdown(ctx)
	// Run returns by itself once Shutdown is done, without ctx ending.
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after Shutdown")
	}
	r.done <- nil // for stop in the cleanup
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("admin port still open after Shutdown")
	}
	r.app.Shutdown(ctx) // idempotent
	logs := r.logs.String()
	if i, j := strings.Index(logs, "shutting down"), strings.Index(logs, `"msg":"stopped"`); i < 0 || j < i {
		t.Fatalf("shutdown not logged in order:\n%s", logs)
	}
}

func TestStartFailsOnBusyAdminPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t, t.TempDir())
	cfg.Listeners.Admin = ln.Addr().String()
	a, err := app.New(cfg, app.WithLogger(testkit.Logger()), app.WithStdout(&syncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "admin listener") {
		t.Fatalf("Run = %v", err)
	}
	select {
	case <-a.Ready():
		t.Fatal("ready although start failed")
	default:
	}
	// The engine was stopped: the data directory can be used again.
	r := start(t, testConfig(t, cfg.DataDir))
	if r.app.Router() == nil {
		t.Fatal("no router")
	}
}

func TestNewValidates(t *testing.T) {
	cfg := config.Default()
	cfg.Log.Format = "xml"
	if _, err := app.New(cfg); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("New = %v", err)
	}
	if _, err := app.New(nil); err == nil {
		t.Fatal("New(nil) succeeded")
	}
}

func TestNewLogger(t *testing.T) {
	var b syncBuffer
	l, err := app.NewLogger(config.Log{Format: "text", Level: "warn"}, &b)
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", "v")
	if s := b.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "msg=shown k=v") {
		t.Fatalf("text log: %q", s)
	}
	if _, err := app.NewLogger(config.Log{Format: "text", Level: "loud"}, &b); err == nil {
		t.Fatal("bad level accepted")
	}
}
