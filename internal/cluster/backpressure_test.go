package cluster_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestLiveBackPressureAcrossNodes (issue 16): a clean-session QoS 1
// subscriber on node 2 stops acknowledging for 3 s while publishers on
// node 1 publish QoS 1 as fast as their PUBACKs come back. With a live
// queue of 500 messages per subscription (mqtt.maxQueuedMessages), every
// message acknowledged to a publisher must still be delivered: the
// subscriber's node announces that it is behind, and node 1 holds its
// publishers' PUBACKs until it has caught up (router/remotehold.go).
// Before, node 1 acknowledged at once and node 2 dropped what did not
// fit in the queue (counted queue_full).
func TestLiveBackPressureAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes")
	}
	c := startAcme(t, "--mqtt-max-queued-messages", "500")
	n1, n2 := c.nodes[0], c.nodes[1]

	// The subscriber: receive maximum 20, acknowledges by hand; paused,
	// it keeps the PUBLISHes and acknowledges them when it resumes.
	var (
		mu       sync.Mutex
		got      = map[string]int{}
		paused   atomic.Bool
		kept     []*paho.Publish
		received atomic.Int64
	)
	var sub *paho.Client
	conn, err := net.DialTimeout("tcp", n2.mqtt, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sub = paho.NewClient(paho.ClientConfig{ClientID: "slow", Conn: conn, EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			received.Add(1)
			mu.Lock()
			got[string(pr.Packet.Payload)]++
			if paused.Load() {
				kept = append(kept, pr.Packet)
				mu.Unlock()
				return true, nil
			}
			mu.Unlock()
			_ = sub.Ack(pr.Packet)
			return true, nil
		}}})
	rm := uint16(20)
	if ack, err := sub.Connect(ctxT(t, 30*time.Second), &paho.Connect{ClientID: "slow", CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: appUser, PasswordFlag: true, Password: []byte(appPW),
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm}}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("connect the subscriber to n2: %v %+v", err, ack)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := sub.Subscribe(ctxT(t, 10*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "flood/x", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	// Publishers on node 1.
	const publishers = 4
	var acked []string
	var amu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range publishers {
		var pub *paho.Client
		for deadline := time.Now().Add(30 * time.Second); pub == nil; {
			pub = tryMQTT(t, n1, fmt.Sprintf("flood-%d", i), time.Now().After(deadline))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf("p%d-%d", i, j)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := pub.Publish(ctx, &paho.Publish{Topic: "flood/x", QoS: 1, Payload: []byte(body)})
				cancel()
				if err != nil {
					continue // not acknowledged: not owed
				}
				amu.Lock()
				acked = append(acked, body)
				amu.Unlock()
			}
		}()
	}
	time.Sleep(time.Second) // flowing (a pause of the scenario, not a wait for a condition)
	paused.Store(true)
	before := received.Load()
	time.Sleep(3 * time.Second)
	t.Logf("while paused the subscriber got %d more (its receive maximum is %d)", received.Load()-before, rm)
	paused.Store(false)
	mu.Lock()
	for _, p := range kept {
		_ = sub.Ack(p)
	}
	kept = nil
	mu.Unlock()
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	amu.Lock()
	want := append([]string(nil), acked...)
	amu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for _, b := range want {
			if got[b] == 0 {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages acknowledged to the publishers on n1 never reached the subscriber on n2", missing, len(want))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d messages acknowledged, all delivered", len(want))
}

// waitLogin waits (≤ 30 s) until the tenant's user can log in on nd: a
// user created through another node reaches nd's copy of the users a
// moment later (CI: "bad user name or password" on the first CONNECT).
func waitLogin(t *testing.T, nd *node) {
	t.Helper()
	var cl *paho.Client
	for deadline := time.Now().Add(30 * time.Second); cl == nil; {
		cl = tryMQTT(t, nd, "login-check-"+nd.name, time.Now().After(deadline))
		if cl == nil {
			time.Sleep(200 * time.Millisecond)
		}
	}
	_ = cl.Disconnect(&paho.Disconnect{})
}
