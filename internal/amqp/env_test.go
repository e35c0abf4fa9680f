package amqp

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// testEnv is a whole AMQP platform in one process: engine, tenant store,
// router, authenticator and the server on 127.0.0.1:0.
type testEnv struct {
	eng   *engine.Engine
	store *tenant.Store
	r     *router.Router
	auth  *auth.Authenticator
	srv   *Server
	addr  string
	ln    net.Listener
}

func startEnv(t testing.TB, mut func(*Config)) *testEnv {
	t.Helper()
	eng, err := engine.Start(engine.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := eng.Connect(engine.SystemAccount)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := tenant.Open(ctx, nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(ctx, router.Config{Engine: eng, Store: store, AnycastTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{eng: eng, store: store, r: r, auth: auth.New(store)}
	// A long handshake timeout: password checks (bcrypt) under the race
	// detector on a loaded machine take seconds.
	cfg := Config{Router: r, Auth: e.auth, Tenants: store, AllowAnonymous: true, HandshakeTimeout: time.Minute}
	if mut != nil {
		mut(&cfg)
	}
	e.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = e.ln.Addr().String()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = e.srv.Serve(e.ln)
	}()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.srv.Shutdown(sctx)
		<-served
		r.Close()
		store.Close()
		eng.Shutdown()
	})
	return e
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (e *testEnv) url() string { return "amqp://" + e.addr }

func (e *testEnv) dial(t testing.TB, opts *goamqp.ConnOptions) *goamqp.Conn {
	t.Helper()
	c, err := goamqp.Dial(ctxT(t), e.url(), opts)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (e *testEnv) session(t testing.TB, opts *goamqp.ConnOptions) *goamqp.Session {
	t.Helper()
	s, err := e.dial(t, opts).NewSession(ctxT(t), nil)
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	return s
}

func (e *testEnv) addrDef(t testing.TB, ten string, a *address.Address) {
	t.Helper()
	if err := e.r.CreateAddress(ctxT(t), ten, a); err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) user(t testing.TB, ten, name, pw string, perms ...tenant.Permission) {
	t.Helper()
	roles := []tenant.Role{tenant.RoleApp}
	if len(perms) == 0 {
		roles = []tenant.Role{tenant.RoleTenantAdmin}
	}
	u := &tenant.User{Name: name, Tenant: ten, Roles: roles, Permissions: perms}
	if err := auth.SetPassword(u, pw); err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutUser(ctxT(t), u, true); err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) tenant(t testing.TB, tn *tenant.Tenant) {
	t.Helper()
	if err := e.r.CreateTenant(ctxT(t), tn); err != nil {
		t.Fatal(err)
	}
}

func sender(t testing.TB, s *goamqp.Session, target string, opts *goamqp.SenderOptions) *goamqp.Sender {
	t.Helper()
	snd, err := s.NewSender(ctxT(t), target, opts)
	if err != nil {
		t.Fatalf("sender %q: %v", target, err)
	}
	return snd
}

func receiver(t testing.TB, s *goamqp.Session, source string, opts *goamqp.ReceiverOptions) *goamqp.Receiver {
	t.Helper()
	if opts == nil {
		opts = &goamqp.ReceiverOptions{Credit: 100}
	}
	r, err := s.NewReceiver(ctxT(t), source, opts)
	if err != nil {
		t.Fatalf("receiver %q: %v", source, err)
	}
	return r
}

func send(t testing.TB, s *goamqp.Sender, m *goamqp.Message) {
	t.Helper()
	if err := s.Send(ctxT(t), m, nil); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func recv(t testing.TB, r *goamqp.Receiver) *goamqp.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := r.Receive(ctx, nil)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return m
}

// noMessage asserts that nothing arrives within wait.
func noMessage(t testing.TB, r *goamqp.Receiver, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if m, err := r.Receive(ctx, nil); err == nil {
		t.Fatalf("unexpected message %q", m.GetData())
	}
}

// condition returns the AMQP error condition of err ("" if none).
func condition(err error) string {
	var le *goamqp.LinkError
	var se *goamqp.SessionError
	var ce *goamqp.ConnError
	var ae *goamqp.Error
	switch {
	case errors.As(err, &ae):
		return string(ae.Condition)
	case errors.As(err, &le) && le.RemoteErr != nil:
		return string(le.RemoteErr.Condition)
	case errors.As(err, &se) && se.RemoteErr != nil:
		return string(se.RemoteErr.Condition)
	case errors.As(err, &ce) && ce.RemoteErr != nil:
		return string(ce.RemoteErr.Condition)
	}
	return ""
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dataMsg(body string) *goamqp.Message { return goamqp.NewMessage([]byte(body)) }

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func asErr[T error](err error, target *T) bool { return errors.As(err, target) }
