package cluster_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
)

// TestSubscribeInForceAcrossNodes (issue 10, item 12 "across nodes too"):
// a subscription is in force on every node once the subscriber has its
// SUBACK (AMQP: its attach), not a moment later when the other nodes
// have heard of it. Each round a subscriber on node 2 (MQTT), node 3
// (an MQTT persistent session) or node 3 (AMQP) subscribes to a new name, and a publisher already connected to
// node 1 publishes one message to it as soon as the subscribe returns —
// no probes, no retries — while QoS 1 load crosses the nodes on other
// connections. Every one of those messages must arrive.
// Before the subscription barrier (router/barrier.go) a publish right
// after the SUBACK often went nowhere: node 1's engine did not know the
// subscription yet.
func TestSubscribeInForceAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes")
	}
	c := startAcme(t)
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]

	// Everyone connected before the rounds start (each role on its own
	// connection): the tenant is open on every node.
	var pub *paho.Client
	for deadline := time.Now().Add(30 * time.Second); pub == nil; {
		pub = tryMQTT(t, n1, "publisher", time.Now().After(deadline))
	}
	got := make(chan string, 16)
	sub := dialMQTT(t, n2, "subscriber", func(p *paho.Publish) { got <- string(p.Payload) })
	s3 := dialAMQP(t, n3)

	// Load meanwhile (issue 10 item 12: "under load, across nodes"): QoS 1
	// from node 3 to a subscriber on node 1 and from node 1 to one on
	// node 2, each on its own connections.
	var loaded, sentLoad [2]atomic.Int64
	for i, route := range [][2]*node{{n3, n1}, {n1, n2}} {
		lsub := dialMQTT(t, route[1], fmt.Sprintf("load-sub-%d", i), func(*paho.Publish) { loaded[i].Add(1) })
		topic := fmt.Sprintf("load/%d", i)
		if _, err := lsub.Subscribe(ctxT(t, 10*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		var lpub *paho.Client
		for deadline := time.Now().Add(30 * time.Second); lpub == nil; {
			lpub = tryMQTT(t, route[0], fmt.Sprintf("load-pub-%d", i), time.Now().After(deadline))
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := lpub.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("load")}); err == nil {
					sentLoad[i].Add(1)
				}
				cancel()
			}
		}()
		t.Cleanup(func() { close(stop); <-done })
	}

	const rounds = 60
	missed := 0
	wait := func(want string) bool {
		timer := time.NewTimer(5 * time.Second)
		defer timer.Stop()
		for {
			select {
			case b := <-got:
				if b == want {
					return true
				}
			case <-timer.C:
				return false
			}
		}
	}
	// MQTT subscriber on node 2.
	for i := range rounds {
		topic := fmt.Sprintf("barrier/mqtt/%d", i)
		if _, err := sub.Subscribe(ctxT(t, 10*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
			t.Fatalf("subscribe %s: %v", topic, err)
		}
		body := fmt.Sprintf("m-%d", i)
		publishRefusedAgain(t, pub, topic, body)
		if !wait(body) {
			missed++
			t.Logf("MQTT round %d: the message published on n1 right after the SUBACK on n2 did not arrive", i)
		}
	}
	// A persistent session (MQTT 5, session expiry) on node 3: its
	// stored subscription reaches node 1's stored-interest set a moment
	// later, and a message published there meanwhile goes out live, which
	// its live half must already get.
	conn, err := net.DialTimeout("tcp", n3.mqtt, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	persist := paho.NewClient(paho.ClientConfig{ClientID: "persistent", Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- string(pr.Packet.Payload)
			return true, nil
		}}})
	exp := uint32(3600)
	if ack, err := persist.Connect(ctxT(t, 30*time.Second), &paho.Connect{ClientID: "persistent", CleanStart: false, KeepAlive: 30,
		UsernameFlag: true, Username: appUser, PasswordFlag: true, Password: []byte(appPW),
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("connect the persistent session to n3: %v %+v", err, ack)
	}
	t.Cleanup(func() { conn.Close() })
	for i := range rounds {
		topic := fmt.Sprintf("barrier/persistent/%d", i)
		if _, err := persist.Subscribe(ctxT(t, 10*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
			t.Fatalf("subscribe %s: %v", topic, err)
		}
		body := fmt.Sprintf("p-%d", i)
		publishRefusedAgain(t, pub, topic, body)
		if !wait(body) {
			missed++
			t.Logf("persistent round %d: the message published on n1 right after the SUBACK on n3 did not arrive", i)
		}
	}
	// AMQP receiver on node 3: its attach is its SUBACK.
	for i := range rounds {
		name := fmt.Sprintf("barrier/amqp/%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := s3.NewReceiver(ctx, name, &goamqp.ReceiverOptions{Credit: 10})
		cancel()
		if err != nil {
			t.Fatalf("attach %s: %v", name, err)
		}
		body := fmt.Sprintf("a-%d", i)
		publishRefusedAgain(t, pub, name, body)
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		m, err := r.Receive(ctx, nil)
		cancel()
		if err != nil {
			missed++
			t.Logf("AMQP round %d: the message published on n1 right after the attach on n3 did not arrive: %v", i, err)
		} else {
			if string(m.GetData()) != body {
				t.Errorf("AMQP round %d: got %q, want %q", i, m.GetData(), body)
			}
			_ = r.AcceptMessage(context.Background(), m)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		_ = r.Close(ctx)
		cancel()
	}
	for i := range loaded {
		t.Logf("load flow %d: %d acknowledged to the publisher, %d delivered meanwhile", i, sentLoad[i].Load(), loaded[i].Load())
		if loaded[i].Load() == 0 {
			t.Errorf("load flow %d: nothing delivered", i)
		}
	}
	if missed > 0 {
		t.Fatalf("%d of %d messages published on another node right after the subscribe were lost", missed, 3*rounds)
	}
}

// publishRefusedAgain publishes QoS 1 and, if the PUBACK refuses it (a
// new tenant's first use on a cluster: its streams just created), sends
// it again as a client would: a refusal is not a loss, and the test is
// about messages that were taken.
func publishRefusedAgain(t *testing.T, pub *paho.Client, topic, body string) {
	t.Helper()
	for try := 1; ; try++ {
		pr, err := pub.Publish(ctxT(t, 10*time.Second), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(body)})
		if err == nil {
			return
		}
		reason := ""
		if pr != nil && pr.Properties != nil {
			reason = pr.Properties.ReasonString
		}
		if try == 5 {
			t.Fatalf("publish %s: %v (%s)", topic, err, reason)
		}
		t.Logf("publish %s refused, sending again: %v (%s)", topic, err, reason)
	}
}
