package mqtt

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

type env struct {
	dir   string
	eng   *engine.Engine
	store *tenant.Store
	r     *router.Router
	srv   *Server
	addr  string
}

func startEnv(t testing.TB, dir string, mod func(*Config)) *env {
	t.Helper()
	eng, err := engine.Start(engine.Config{DataDir: dir})
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
	cfg := Config{Router: r, Auth: auth.New(store), Store: store, AllowAnonymous: true, SweepInterval: 100 * time.Millisecond, SysInterval: -1}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	e := &env{dir: dir, eng: eng, store: store, r: r, srv: srv, addr: l.Addr().String()}
	t.Cleanup(e.stop)
	return e
}

func (e *env) stop() {
	if e.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = e.srv.Shutdown(ctx)
	cancel()
	e.r.Close()
	e.store.Close()
	e.eng.Shutdown()
	e.srv = nil
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) addUser(t testing.TB, ten, name, pw string, perms ...tenant.Permission) {
	t.Helper()
	h, err := auth.HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.store.Tenant(ten); !ok {
		if err := e.r.CreateTenant(ctxT(t), &tenant.Tenant{Name: ten}); err != nil {
			t.Fatal(err)
		}
	}
	u := &tenant.User{Name: name, Tenant: ten, PasswordHash: h, Roles: []tenant.Role{tenant.RoleApp}, Permissions: perms}
	if err := e.store.PutUser(ctxT(t), u, true); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or 10s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- paho v5 client

type v5client struct {
	*paho.Client
	msgs  chan *paho.Publish
	disc  chan *paho.Disconnect
	ack   *paho.Connack
	errCh chan error
}

func dialV5(t testing.TB, e *env, cp *paho.Connect) (*v5client, error) {
	t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	vc := &v5client{msgs: make(chan *paho.Publish, 1000), disc: make(chan *paho.Disconnect, 1), errCh: make(chan error, 10)}
	// After the test, a full msgs must not block paho's router: its
	// Disconnect waits for it (a failed test then hung until the timeout,
	// hiding its failure).
	ended := make(chan struct{})
	vc.Client = paho.NewClient(paho.ClientConfig{
		ClientID: cp.ClientID,
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case vc.msgs <- pr.Packet:
			case <-ended:
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { vc.disc <- d },
		OnClientError: func(err error) {
			select {
			case vc.errCh <- err:
			default:
			}
		},
	})
	ack, err := vc.Connect(ctxT(t), cp)
	vc.ack = ack
	if err != nil {
		return vc, err
	}
	t.Cleanup(func() {
		close(ended)
		_ = vc.Disconnect(&paho.Disconnect{})
	})
	return vc, nil
}

func mustV5(t testing.TB, e *env, id string, clean bool, expiry uint32) *v5client {
	t.Helper()
	cp := &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	c, err := dialV5(t, e, cp)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	return c
}

func (vc *v5client) next(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case p := <-vc.msgs:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return nil
	}
}

func (vc *v5client) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case p := <-vc.msgs:
		t.Fatalf("unexpected message on %s: %q", p.Topic, p.Payload)
	case <-time.After(d):
	}
}

func sub(t testing.TB, c *v5client, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	sa, err := c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: opts})
	if err != nil && sa == nil {
		t.Fatalf("subscribe: %v", err)
	}
	return sa
}

func pub(t testing.TB, c *v5client, topic string, qos byte, payload string) *paho.PublishResponse {
	t.Helper()
	pr, err := c.Publish(ctxT(t), &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if err != nil && pr == nil {
		t.Fatalf("publish: %v", err)
	}
	return pr
}

// ---- raw packets

type raw struct {
	t  testing.TB
	nc net.Conn
	pr packetReader
	v  byte
	// mayClose: the server may close while a packet is written (an
	// oversize packet it refuses): a write error is then not a failure.
	mayClose bool
	wrFailed bool // a write failed while mayClose was set
}

func dialRaw(t testing.TB, e *env, v byte) *raw {
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &raw{t: t, nc: nc, pr: packetReader{conn: nc}, v: v}
}

func (r *raw) write(pk *packets.Packet) {
	r.t.Helper()
	pk.ProtocolVersion = r.v
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		pk.Connect.ProtocolName = []byte("MQTT")
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Auth:
		err = pk.AuthEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	default:
		r.t.Fatalf("raw: cannot encode %d", pk.FixedHeader.Type)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.nc.Write(buf.Bytes()); err != nil {
		if !r.mayClose {
			r.t.Fatal(err)
		}
		r.wrFailed = true
	}
}

// read returns the next packet from the server, nil if the connection closed.
func (r *raw) read() *packets.Packet {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	fh, body, err := r.pr.readPacket(0)
	if err != nil {
		if isTimeout(err) {
			r.t.Fatal("raw: no packet within 10s")
		}
		return nil
	}
	pk := &packets.Packet{FixedHeader: fh, ProtocolVersion: r.v}
	switch fh.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	}
	if err != nil {
		r.t.Fatalf("raw: decode %d: %v", fh.Type, err)
	}
	return pk
}

func (r *raw) connect(mod func(*packets.Packet)) *packets.Packet {
	r.t.Helper()
	pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}}
	pk.Connect.Clean = true
	pk.Connect.ClientIdentifier = "raw"
	pk.Connect.Keepalive = 30
	if mod != nil {
		mod(pk)
	}
	r.write(pk)
	ack := r.read()
	if ack == nil || ack.FixedHeader.Type != packets.Connack {
		r.t.Fatalf("raw: want CONNACK, got %+v", ack)
	}
	return ack
}

func (r *raw) closed() bool {
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	_, err := r.nc.Read(b[:])
	return err != nil && !isTimeout(err)
}

func (e *env) online(clientID string) bool {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	_, ok := e.srv.clients["default\x00"+clientID]
	return ok
}

func packetsSub(topic string, qos byte) paho.SubscribeOptions {
	return paho.SubscribeOptions{Topic: topic, QoS: qos}
}
