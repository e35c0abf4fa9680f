package cluster_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
)

// TestAddressesAcrossNodes (issue 16: "any client may connect to any
// node and sees the same addresses and messages"): anycast and multicast
// addresses defined on node 1 reach consumers on nodes 2 and 3 — a
// multicast message every one of them, an anycast message exactly one —
// and a retained message set on node 1 is what a subscriber on nodes 2
// and 3 gets, and is gone everywhere once cleared on node 3. Each role
// on its own connection.
func TestAddressesAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes")
	}
	c := startAcme(t)
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	c.api(n1, "POST", "/api/tenants/acme/addresses", `{"name":"alerts","type":"multicast"}`, nil)
	c.api(n1, "POST", "/api/tenants/acme/addresses", `{"name":"work","type":"anycast"}`, nil)

	// The definitions made on node 1 are in force on nodes 2 and 3: a
	// receiver attaches there (retried while the replicated definitions
	// arrive).
	attach := func(nd *node, addr string) *goamqp.Receiver {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := dialAMQP(t, nd)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := s.NewReceiver(ctx, addr, &goamqp.ReceiverOptions{Credit: 100})
			cancel()
			if err == nil {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("attach %s on %s: %v", addr, nd.name, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}

	// Multicast: every receiver gets every message.
	multi := map[string]*tally{"n2": newTally(), "n3": newTally()}
	rctx, stopReceiving := context.WithCancel(context.Background())
	defer stopReceiving()
	go receive(rctx, attach(n2, "alerts"), "n2", multi["n2"])
	go receive(rctx, attach(n3, "alerts"), "n3", multi["n3"])
	sent, _ := sendAll(t, dialAMQP(t, n1), "alerts", "alert", 50)
	for who, tl := range multi {
		tl.waitFor(t, "multicast to "+who, sent, 30*time.Second)
	}

	// Anycast: each message to exactly one of the receivers, all of them
	// delivered, accepted end to end.
	any := newTally()
	go receive(rctx, attach(n2, "work"), "n2", any)
	go receive(rctx, attach(n3, "work"), "n3", any)
	sent, _ = sendAll(t, dialAMQP(t, n1), "work", "job", 60)
	any.waitFor(t, "anycast", sent, 30*time.Second)
	if _, dups := any.count(sent); dups != 0 {
		t.Errorf("anycast: %d messages delivered to more than one receiver", dups)
	}

	// Retained: set on node 1 (MQTT, QoS 1), seen by new subscriptions on
	// nodes 2 and 3, cleared on node 3, gone on node 1.
	var pub *paho.Client
	for deadline := time.Now().Add(30 * time.Second); pub == nil; {
		pub = tryMQTT(t, n1, "retainer", time.Now().After(deadline))
	}
	if _, err := pub.Publish(ctxT(t, 10*time.Second), &paho.Publish{Topic: "status/door", QoS: 1, Retain: true, Payload: []byte("open")}); err != nil {
		t.Fatal(err)
	}
	// retained subscribes on nd and returns what the new subscription
	// gets: waits up to 10 s for want messages (the first retained read
	// of a new tenant on a node can take a JetStream API retry, 3 s),
	// then 500 ms for any more; with want 0, 4 s.
	retained := func(nd *node, id string, want int) []string {
		t.Helper()
		got := make(chan string, 8)
		conn, err := net.DialTimeout("tcp", nd.mqtt, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cl := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				got <- fmt.Sprintf("%s retain=%v", pr.Packet.Payload, pr.Packet.Retain)
				return true, nil
			}}})
		if ack, err := cl.Connect(ctxT(t, 30*time.Second), &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: appUser, PasswordFlag: true, Password: []byte(appPW)}); err != nil || ack.ReasonCode != 0 {
			t.Fatalf("connect %s to %s: %v %+v", id, nd.name, err, ack)
		}
		if _, err := cl.Subscribe(ctxT(t, 10*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "status/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		var out []string
		wait := 10 * time.Second
		if want == 0 {
			wait = 4 * time.Second
		}
		timeout := time.After(wait)
		for {
			select {
			case s := <-got:
				out = append(out, s)
				if len(out) == want {
					timeout = time.After(500 * time.Millisecond)
				}
			case <-timeout:
				_ = cl.Disconnect(&paho.Disconnect{})
				return out
			}
		}
	}
	for _, nd := range []*node{n2, n3} {
		if got := retained(nd, "reader-"+nd.name, 1); len(got) != 1 || got[0] != "open retain=true" {
			t.Errorf("retained message on %s: got %q, want [\"open retain=true\"]", nd.name, got)
		}
	}
	var clr *paho.Client
	for deadline := time.Now().Add(30 * time.Second); clr == nil; {
		clr = tryMQTT(t, n3, "clearer", time.Now().After(deadline))
	}
	if _, err := clr.Publish(ctxT(t, 10*time.Second), &paho.Publish{Topic: "status/door", QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	if got := retained(n1, "reader-after-clear", 0); len(got) != 0 {
		t.Errorf("retained message on n1 after it was cleared on n3: got %q, want none", got)
	}
}
