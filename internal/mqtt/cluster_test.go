package mqtt

import (
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestTakeoverAcrossNodes: the same client id connecting to another node
// disconnects the first connection with 0x8E, and a persistent session
// moves with the client.
func TestTakeoverAcrossNodes(t *testing.T) {
	a := startEnv(t, t.TempDir(), nil)
	b := a.node(t, nil)
	first := mustV5(t, a, "same", true, 3600)
	sub(t, first, paho.SubscribeOptions{Topic: "cmd/#", QoS: 1})
	second := mustV5(t, b, "same", false, 3600)
	select {
	case d := <-first.disc:
		if d.ReasonCode != rcSessionTakenOver {
			t.Fatalf("reason %#x", d.ReasonCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection on the other node not disconnected")
	}
	if !second.ack.SessionPresent {
		t.Fatal("session did not follow the client")
	}
	eventually(t, "old connection gone", func() bool { return !a.online("same") })
	p := mustV5(t, a, "p", true, 0)
	pub(t, p, "cmd/1", 1, "here")
	if m := second.next(t); string(m.Payload) != "here" {
		t.Fatalf("got %q", m.Payload)
	}
	first.none(t, 200*time.Millisecond)
}

// TestDeadNodeWillAndExpiry: a node that stops without any cleanup (its
// process killed) leaves an armed will and a session record; once its
// lease runs out, a surviving node publishes the will and ends the
// session when its expiry has passed.
func TestDeadNodeWillAndExpiry(t *testing.T) {
	a := startEnv(t, t.TempDir(), shortLease)
	b := a.node(t, shortLease)
	w := mustV5(t, b, "watcher", true, 0)
	sub(t, w, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})

	exp := uint32(2)
	d, err := dialV5(t, a, &paho.Connect{ClientID: "dying", CleanStart: true, KeepAlive: 30,
		Properties:  &paho.ConnectProperties{SessionExpiryInterval: &exp},
		WillMessage: &paho.WillMessage{Topic: "wills/dying", QoS: 1, Payload: []byte("gone")}})
	if err != nil {
		t.Fatal(err)
	}
	sub(t, d, paho.SubscribeOptions{Topic: "x", QoS: 1})
	start := time.Now()
	a.srv.halt()
	select {
	case m := <-w.msgs:
		if string(m.Payload) != "gone" {
			t.Fatalf("got %q", m.Payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("will of a client on a dead node not published")
	}
	// The lease (1s) was refreshed at most a third of it before the halt.
	if time.Since(start) < 400*time.Millisecond {
		t.Fatal("will published before the node's lease ran out")
	}
	w.none(t, 500*time.Millisecond) // once
	ctx := ctxT(t)
	eventually(t, "session of the dead node expired", func() bool {
		st, _, err := b.srv.buckets(ctx, "default", false)
		if err != nil {
			return false
		}
		keys, _ := st.Keys(ctx)
		return !slices.Contains(keys, "dying")
	})
}
