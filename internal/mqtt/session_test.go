package mqtt

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

func TestTakeover(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	a := mustV5(t, e, "same", true, 0)
	b := mustV5(t, e, "same", true, 0)
	select {
	case d := <-a.disc:
		if d.ReasonCode != 0x8E {
			t.Fatalf("reason %#x", d.ReasonCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("old connection not disconnected")
	}
	sub(t, b, paho.SubscribeOptions{Topic: "t", QoS: 0})
	pub(t, b, "t", 0, "x")
	b.next(t)
	eventually(t, "one client", func() bool { return e.srv.Clients() == 1 })
}

func TestPersistentSessionQueuesQoS1(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	c := mustV5(t, e, "dev1", true, 3600)
	sub(t, c, paho.SubscribeOptions{Topic: "cmd/#", QoS: 1})
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "disconnect", func() bool { return e.srv.Clients() == 0 })
	p := mustV5(t, e, "p", true, 0)
	for i := range 3 {
		pub(t, p, "cmd/go", 1, fmt.Sprint(i))
	}
	pub(t, p, "cmd/go", 0, "qos0-not-queued")
	pub(t, p, "sync", 1, "") // orders the QoS 0 publish before the reconnect
	c = mustV5(t, e, "dev1", false, 3600)
	if !c.ack.SessionPresent {
		t.Fatal("session not present")
	}
	for i := range 3 {
		if m := c.next(t); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %q want %d", m.Payload, i)
		}
	}
	c.none(t, 200*time.Millisecond)
	// Clean start discards the session.
	_ = c.Disconnect(&paho.Disconnect{})
	eventually(t, "disconnect", func() bool { return !e.online("dev1") })
	c = mustV5(t, e, "dev1", true, 0)
	if c.ack.SessionPresent {
		t.Fatal("session present after clean start")
	}
	pub(t, p, "cmd/go", 1, "after")
	c.none(t, 200*time.Millisecond)
}

func TestSessionExpires(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	c := mustV5(t, e, "short", true, 1)
	sub(t, c, paho.SubscribeOptions{Topic: "x", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	ctx := ctxT(t)
	eventually(t, "session swept", func() bool {
		st, _, err := e.srv.buckets(ctx, "default", false)
		if err != nil {
			return false
		}
		keys, err := st.Keys(ctx) // a listing cut short (busy engine) is no proof of absence
		return err == nil && len(keys) == 0
	})
	c = mustV5(t, e, "short", false, 1)
	if c.ack.SessionPresent {
		t.Fatal("expired session resumed")
	}
}

func TestWillWithDelay(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	w := mustV5(t, e, "watcher", true, 0)
	sub(t, w, paho.SubscribeOptions{Topic: "will/#", QoS: 1})

	// Immediate will on an abrupt close.
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: nc})
	if _, err := cl.Connect(ctxT(t), &paho.Connect{ClientID: "dying", CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "will/now", QoS: 1, Payload: []byte("gone")}}); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if m := w.next(t); m.Topic != "will/now" || string(m.Payload) != "gone" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}

	// Delayed will: cancelled by a reconnect, fired otherwise.
	delayed := func(id string) {
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		exp, delay := uint32(60), uint32(1)
		cl := paho.NewClient(paho.ClientConfig{Conn: nc})
		if _, err := cl.Connect(ctxT(t), &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			Properties:     &paho.ConnectProperties{SessionExpiryInterval: &exp},
			WillMessage:    &paho.WillMessage{Topic: "will/" + id, QoS: 1, Payload: []byte(id)},
			WillProperties: &paho.WillProperties{WillDelayInterval: &delay}}); err != nil {
			t.Fatal(err)
		}
		nc.Close()
	}
	delayed("back")
	delayed("late")
	eventually(t, "disconnects", func() bool { return e.srv.Clients() == 1 })
	mustV5(t, e, "back", false, 60) // cancels its will
	start := time.Now()
	m := w.next(t)
	if m.Topic != "will/late" {
		t.Fatalf("got will %s", m.Topic)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("will too late")
	}
	w.none(t, 1500*time.Millisecond)
}

func TestSharedSubscription(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	a := mustV5(t, e, "a", true, 0)
	b := mustV5(t, e, "b", true, 0)
	sub(t, a, paho.SubscribeOptions{Topic: "$share/g/jobs/+", QoS: 1})
	sub(t, b, paho.SubscribeOptions{Topic: "$share/g/jobs/+", QoS: 1})
	p := mustV5(t, e, "p", true, 0)
	const n = 20
	for i := range n {
		pub(t, p, "jobs/x", 1, fmt.Sprint(i))
	}
	got := map[string]bool{}
	for len(got) < n {
		select {
		case m := <-a.msgs:
			got[string(m.Payload)] = true
		case m := <-b.msgs:
			got[string(m.Payload)] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d", len(got), n)
		}
	}
	a.none(t, 100*time.Millisecond)
	b.none(t, 100*time.Millisecond)
}

func TestQueueAndTopicAlias(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	if err := e.r.CreateAddress(ctxT(t), "default", &address.Address{Name: "orders", Type: address.Queue}); err != nil {
		t.Fatal(err)
	}
	p := mustV5(t, e, "p", true, 0)
	alias := uint16(3)
	for i := range 3 {
		pp := &paho.Publish{Topic: "orders", QoS: 1, Payload: []byte(fmt.Sprint(i)), Properties: &paho.PublishProperties{TopicAlias: &alias}}
		if i > 0 {
			pp.Topic = ""
		}
		if pr, err := p.Publish(ctxT(t), pp); err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %d: %v %+v", i, err, pr)
		}
	}
	// A subscription that is exactly the queue name consumes the queue.
	tam := uint16(5)
	c, err := dialV5(t, e, &paho.Connect{ClientID: "c", CleanStart: true, KeepAlive: 30, Properties: &paho.ConnectProperties{TopicAliasMaximum: &tam}})
	if err != nil {
		t.Fatal(err)
	}
	sub(t, c, paho.SubscribeOptions{Topic: "orders", QoS: 1})
	for i := range 3 {
		m := c.next(t)
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %q", m.Payload)
		}
	}
}

func TestPublishErrorsV5(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	ctx := ctxT(t)
	if err := e.r.CreateAddress(ctx, "default", &address.Address{Name: "rpc", Type: address.Anycast}); err != nil {
		t.Fatal(err)
	}
	if err := e.r.CreateAddress(ctx, "default", &address.Address{Name: "small", Type: address.Queue, Limits: address.Limits{MaxMessages: 1, Overflow: address.RejectNew}}); err != nil {
		t.Fatal(err)
	}
	if err := e.r.CreateTenant(ctx, &tenant.Tenant{Name: "strict", Strict: true}); err != nil {
		t.Fatal(err)
	}
	e.addUser(t, "strict", "u", "pw", tenant.Permission{Pattern: "#", Actions: []tenant.Action{tenant.ActionSend, tenant.ActionReceive}})
	e.addUser(t, "default", "limited", "pw", tenant.Permission{Pattern: "mine/#", Actions: []tenant.Action{tenant.ActionSend, tenant.ActionReceive}})
	p := mustV5(t, e, "p", true, 0)
	if pr := pub(t, p, "rpc", 1, "x"); pr.ReasonCode != 0x10 {
		t.Fatalf("anycast without consumer: %#x", pr.ReasonCode)
	}
	if pr := pub(t, p, "small", 1, "1"); pr.ReasonCode != 0 {
		t.Fatalf("first: %#x", pr.ReasonCode)
	}
	if pr := pub(t, p, "small", 1, "2"); pr.ReasonCode != 0x97 {
		t.Fatalf("full queue: %#x", pr.ReasonCode)
	}
	s, err := dialV5(t, e, &paho.Connect{ClientID: "s", CleanStart: true, KeepAlive: 30, UsernameFlag: true, Username: "u@strict", PasswordFlag: true, Password: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	if pr := pub(t, s, "undefined", 1, "x"); pr.ReasonCode != 0x90 {
		t.Fatalf("strict tenant: %#x", pr.ReasonCode)
	}
	l, err := dialV5(t, e, &paho.Connect{ClientID: "l", CleanStart: true, KeepAlive: 30, UsernameFlag: true, Username: "limited", PasswordFlag: true, Password: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	if pr := pub(t, l, "other", 1, "x"); pr.ReasonCode != 0x87 {
		t.Fatalf("unauthorized publish: %#x", pr.ReasonCode)
	}
	if sa := sub(t, l, paho.SubscribeOptions{Topic: "other/#", QoS: 1}, paho.SubscribeOptions{Topic: "mine/#", QoS: 1}); sa.Reasons[0] != 0x87 || sa.Reasons[1] != 1 {
		t.Fatalf("suback %v", sa.Reasons)
	}
}
