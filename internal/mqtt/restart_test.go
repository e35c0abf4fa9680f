package mqtt

import (
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRestartKeepsState: a persistent session with a queued QoS 1
// message, a retained message and a pending delayed will survive a
// restart of the whole stack on the same data directory.
func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, dir, nil)
	c := mustV5(t, e, "dev", true, 3600)
	sub(t, c, paho.SubscribeOptions{Topic: "cmd/#", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	eventually(t, "disconnect", func() bool { return !e.online("dev") })
	p := mustV5(t, e, "p", true, 0)
	pub(t, p, "cmd/1", 1, "queued")
	if _, err := p.Publish(ctxT(t), &paho.Publish{Topic: "state/x", QoS: 1, Retain: true, Payload: []byte("retained")}); err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	exp, delay := uint32(3600), uint32(2)
	cl := paho.NewClient(paho.ClientConfig{Conn: nc})
	if _, err := cl.Connect(ctxT(t), &paho.Connect{ClientID: "willer", CleanStart: true, KeepAlive: 30,
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: &exp},
		WillMessage:    &paho.WillMessage{Topic: "wills/willer", QoS: 1, Payload: []byte("bye")},
		WillProperties: &paho.WillProperties{WillDelayInterval: &delay}}); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	eventually(t, "willer gone", func() bool { return !e.online("willer") })
	e.stop()

	e = startEnv(t, dir, nil)
	w := mustV5(t, e, "watcher", true, 0)
	sub(t, w, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})
	c = mustV5(t, e, "dev", false, 3600)
	if !c.ack.SessionPresent {
		t.Fatal("session lost")
	}
	if m := c.next(t); string(m.Payload) != "queued" {
		t.Fatalf("got %q", m.Payload)
	}
	r := mustV5(t, e, "r", true, 0)
	sub(t, r, paho.SubscribeOptions{Topic: "state/#", QoS: 1})
	if m := r.next(t); string(m.Payload) != "retained" || !m.Retain {
		t.Fatalf("got %q", m.Payload)
	}
	select {
	case m := <-w.msgs:
		if string(m.Payload) != "bye" {
			t.Fatalf("got %q", m.Payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("delayed will lost in restart")
	}
}
