package cluster_test

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRetainedWhileReplicaLags (issue 16: "sees the same retained
// messages"): 1,000 retained messages, written again on node 1 while
// node 3 is stopped (SIGSTOP; the stream's quorum is nodes 1 and 2), are
// what a wildcard subscription gets right after node 3 resumes, on any
// node — every one, with its last value. Before, the read gave up at the
// first empty fetch: a subscription got 0, 256, 512… of them (the
// ordered consumer that reads them is placed by JetStream on a random
// replica, node 3's included, busy catching up), and CI once saw none
// on n3 (TestAddressesAcrossNodes). Three rounds, the reader's node
// changing each time.
func TestRetainedWhileReplicaLags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes")
	}
	c := startAcme(t)
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	const topics = 1000
	var pub *paho.Client
	for deadline := time.Now().Add(30 * time.Second); pub == nil; {
		pub = tryMQTT(t, n1, "setter", time.Now().After(deadline))
	}
	set := func(topic, v string) {
		t.Helper()
		for attempt := 0; ; attempt++ {
			_, err := pub.Publish(ctxT(t, 10*time.Second), &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(v)})
			if err == nil {
				return
			}
			if attempt == 20 {
				t.Fatalf("retain %s: %v", v, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	// read subscribes to lag/# on nd and returns the retained values it
	// gets by topic (until none came for 8 s, or all came).
	read := func(nd *node, id string) map[string]string {
		t.Helper()
		type kv struct{ k, v string }
		got := make(chan kv, 2*topics)
		conn, err := net.DialTimeout("tcp", nd.mqtt, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cl := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				got <- kv{pr.Packet.Topic, string(pr.Packet.Payload)}
				return true, nil
			}}})
		if ack, err := cl.Connect(ctxT(t, 30*time.Second), &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: appUser, PasswordFlag: true, Password: []byte(appPW)}); err != nil || ack.ReasonCode != 0 {
			t.Fatalf("connect %s to %s: %v %+v", id, nd.name, err, ack)
		}
		defer func() { _ = cl.Disconnect(&paho.Disconnect{}) }()
		if _, err := cl.Subscribe(ctxT(t, 20*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "lag/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		quiet := 8 * time.Second
		subscribed := time.Now()
		for {
			select {
			case x := <-got:
				out[x.k] = x.v
				if len(out) == topics {
					quiet = 300 * time.Millisecond // all there: a moment for anything more
				}
			case <-time.After(quiet):
				if len(out) == 0 {
					// Late or never? Say which (the test fails either way).
					select {
					case x := <-got:
						t.Logf("%s on %s: the first retained message came %s after the SUBACK", id, nd.name, time.Since(subscribed).Round(time.Millisecond))
						out[x.k] = x.v
					case <-time.After(30 * time.Second):
						t.Logf("%s on %s: no retained message 38 s after the SUBACK", id, nd.name)
					}
					t.Logf("%s's log, last lines:\n%s", nd.name, &nd.tail)
				}
				return out
			}
		}
	}
	check := func(round int, nd *node, got map[string]string) int {
		t.Helper()
		wrong := 0
		for k := range topics {
			if want := fmt.Sprintf("r%d-%d", round, k); got[fmt.Sprintf("lag/%d", k)] != want {
				wrong++
			}
		}
		if wrong > 0 {
			sample := []string{}
			for k := 0; k < topics && len(sample) < 5; k += 397 {
				sample = append(sample, got[fmt.Sprintf("lag/%d", k)])
			}
			var bad []string
			for k := range topics {
				if want := fmt.Sprintf("r%d-%d", round, k); got[fmt.Sprintf("lag/%d", k)] != want && len(bad) < 5 {
					bad = append(bad, fmt.Sprintf("lag/%d=%q", k, got[fmt.Sprintf("lag/%d", k)]))
				}
			}
			t.Logf("round %d: %d topics received, e.g. %q; wrong: %s", round, len(got), sample, bad)
			t.Errorf("round %d: a wildcard subscriber on %s got %d of %d retained messages stale or missing", round, nd.name, wrong, topics)
		}
		return wrong
	}
	for k := range topics {
		set(fmt.Sprintf("lag/%d", k), fmt.Sprintf("r0-%d", k))
	}
	check(0, n3, read(n3, "warm"))
	const rounds = 3
	bad := 0
	for i := 1; i <= rounds; i++ {
		n3.signal(t, syscall.SIGSTOP)
		for k := range topics {
			set(fmt.Sprintf("lag/%d", k), fmt.Sprintf("r%d-%d", i, k))
		}
		n3.signal(t, syscall.SIGCONT)
		nd := []*node{n1, n2, n3}[i%3]
		if check(i, nd, read(nd, fmt.Sprintf("reader-%d", i))) > 0 {
			bad++
		}
	}
	t.Logf("%d of %d rounds read stale or missing retained messages", bad, rounds)
}
