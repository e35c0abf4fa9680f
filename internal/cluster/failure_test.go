package cluster_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Failure tests of issue 16: three `throng serve` processes under steady
// load (load_test.go) while nodes are killed, stopped and restarted. Each
// checks that every message acknowledged to a producer is delivered
// (duplicates counted, not failed: a producer that lost its connection
// sends again what was not acknowledged) and that the clients of the
// failed node work again on another within a bound. The counts and times
// are logged; docs/cluster.md has those of a run.

// recoverMax bounds how long after a node's failure every client must
// work again: a client notices a killed node at once (connection
// refused), a stopped one after its operation timeout (10 s) or idle
// timeout (5 s); a stream whose leader was on the node elects another in
// seconds; an MQTT session held by the failed node is waited for up to
// 5 s (takeoverWait) before it is taken.
const recoverMax = 40 * time.Second

// drainMax bounds the wait for the last deliveries: those in progress on
// a node that died come back after the engine's ack wait (30 s).
const drainMax = 60 * time.Second

// startLoad starts the persistent-session subscriber on subNode, MQTT
// publishers and AMQP senders on pubNodes, AMQP consumers on conNodes;
// it returns once the subscriber gets messages published on every node
// and every client works.
func startLoad(t *testing.T, c *testCluster, subNode int, pubNodes, conNodes []int) *load {
	t.Helper()
	l := newLoad(t, c)
	subscribed := make(chan struct{})
	l.mqttSubscriber("sub", subNode, "load/#", subscribed)
	select {
	case <-subscribed:
	case <-time.After(60 * time.Second):
		t.Fatal("the persistent-session subscriber could not subscribe")
	}
	// The subscription (a stored consumer of the topic space) is known on
	// another node a moment after its SUBACK: probes until one from every
	// node arrives.
	for i := range c.nodes {
		probe(t, c.nodes[i], l.mqttIn, "load/probe", "probe-"+c.nodes[i].name)
	}
	for _, i := range conNodes {
		l.amqpConsumer("qcon-n"+strconv.Itoa(i+1), i, "orders")
	}
	for _, i := range pubNodes {
		l.mqttPublisher("mpub-n"+strconv.Itoa(i+1), i, "load/n"+strconv.Itoa(i+1))
		l.amqpSender("qsnd-n"+strconv.Itoa(i+1), i, "orders")
	}
	l.waitFlowing("load start", time.Now().Add(-time.Millisecond), 60*time.Second)
	return l
}

// probe publishes on nd until in has seen a probe.
func probe(t *testing.T, nd *node, in *tally, topic, prefix string) {
	t.Helper()
	p := dialMQTT(t, nd, "probe-"+nd.name, nil)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		body := prefix + "-" + strconv.Itoa(i)
		publishAll(t, p, topic, body, 1)
		for until := time.Now().Add(200 * time.Millisecond); time.Now().Before(until); time.Sleep(20 * time.Millisecond) {
			if d, _ := in.count([]string{body + "-0"}); d == 1 {
				_ = p.Disconnect(&paho.Disconnect{})
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no probe published on %s reached the subscriber", nd.name)
		}
	}
}

// retryMQTT connects a clean session, trying again for up to 30 s while
// the node answers CONNACK 0x88 (its session store's stream electing a
// leader after another node died), as real clients do.
func retryMQTT(t *testing.T, nd *node, id string) *paho.Client {
	t.Helper()
	for until := time.Now().Add(30 * time.Second); ; {
		if p := tryMQTT(t, nd, id, time.Now().After(until)); p != nil {
			return p
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// willWatch connects a client with a will (QoS 1, on wills/<id>) to nd,
// and a watcher subscribed to wills/# on wnd; it returns the watcher's
// tally.
func willWatch(t *testing.T, nd, wnd *node, id string) *tally {
	t.Helper()
	wills := newTally()
	w := dialMQTT(t, wnd, "watch-"+id, func(p *paho.Publish) {
		wills.mu.Lock()
		if wills.by["at:"+string(p.Payload)] == 0 {
			wills.by["at:"+string(p.Payload)] = int(time.Now().UnixMilli())
		}
		wills.mu.Unlock()
		wills.add(p.Topic, string(p.Payload))
	})
	if _, err := w.Subscribe(ctxT(t, 30*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "wills/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	_, conn, _, err := mqttConn(context.Background(), nd, id, true, 0,
		&paho.WillMessage{Topic: "wills/" + id, QoS: 1, Payload: []byte("gone-" + id)}, nil, false)
	if err != nil {
		t.Fatalf("will client on %s: %v", nd.name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return wills
}

// waitWill waits for the will and returns how long after since it
// arrived. A will before since (its client's node still running) is
// logged.
func waitWill(t *testing.T, wills *tally, id string, since time.Time) time.Duration {
	t.Helper()
	body := []string{"gone-" + id}
	deadline := time.Now().Add(40 * time.Second)
	for {
		if d, _ := wills.count(body); d == 1 {
			wills.mu.Lock()
			at := time.UnixMilli(int64(wills.by["at:gone-"+id]))
			wills.mu.Unlock()
			took := at.Sub(since)
			t.Logf("will of %s published %s after its node failed", id, took.Round(time.Millisecond))
			// The node's lease (15 s) was refreshed at most 5 s before
			// the kill, so its clients' wills come 10 s after it at the
			// earliest. Before the heartbeat had its own goroutine
			// (mqtt/session.go heartbeatLoop) a node whose sweeps were
			// slow refreshed it late and the others took it for dead
			// early: wills 1.3 and 6.6 s after the kill, or while it ran.
			if took < 5*time.Second {
				t.Errorf("the will of %s was published %s after its node failed: its lease cannot have run out yet", id, took.Round(time.Millisecond))
			}
			return took
		}
		if time.Now().After(deadline) {
			t.Fatalf("the will of %s (its node killed) was not published", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func willOnce(t *testing.T, wills *tally, id string) {
	t.Helper()
	if _, dups := wills.count([]string{"gone-" + id}); dups != 0 {
		t.Errorf("the will of %s was published %d times", id, dups+1)
	}
}

// TestKillUnderLoad (issue 16): under steady load — MQTT QoS 1 publishers
// on nodes 1 and 3 into a persistent session held on node 2, AMQP
// senders (unsettled) on nodes 1 and 3 and an HTTP publisher (POST
// /api/v1/addresses/orders/messages) on node 1 into queue orders,
// consumed on nodes 2 and 3 — node 1 is killed (-9), restarted, then node 2 is
// killed. Every acknowledged message is delivered, the clients of the
// killed nodes work again on a survivor within recoverMax, the MQTT
// session survives both moves, and the will of a client on node 1 is
// published once. No publish is refused while the streams whose leaders
// died elect new ones (the router waits for the leader, publish.go).
func TestKillUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("three node processes under load")
	}
	began := time.Now()
	c := newCluster(t, 3)
	c.startAll()
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	t.Logf("cluster up after %s", time.Since(began).Round(time.Millisecond))
	l := startLoad(t, c, 1, []int{0, 2}, []int{1, 2})
	// HTTP events: a producer of the HTTP messaging API on node 1 into
	// the same queue (201 = stored = acknowledged).
	l.httpPublisher("hpub-n1", 0, "orders")
	l.waitFlowing("HTTP publisher start", time.Now().Add(-time.Millisecond), 60*time.Second)
	wills := willWatch(t, n1, n3, "w1")
	time.Sleep(3 * time.Second)

	killed1 := time.Now()
	n1.kill()
	t.Logf("kill -9 n1")
	l.waitFlowing("kill -9 n1", killed1, recoverMax)
	time.Sleep(2 * time.Second)
	ready := c.restart(n1, 3)
	t.Logf("n1 restarted: ready and in the cluster %s after its start", ready.Round(time.Millisecond))
	time.Sleep(3 * time.Second)

	killed2 := time.Now()
	n2.kill()
	t.Logf("kill -9 n2")
	l.waitFlowing("kill -9 n2", killed2, recoverMax)
	waitWill(t, wills, "w1", killed1)
	time.Sleep(3 * time.Second)

	mq, qq := l.finish(drainMax)
	willOnce(t, wills, "w1")
	hq, _ := total(l.posters, l.queueIn)
	if hq.refused > 10 {
		t.Errorf("%d HTTP publishes refused: the router should wait for the stream's new leader", hq.refused)
	}
	// The router waits up to 10 s for a stream's new leader (503 retry,
	// router/publish.go); an election slower than that on a loaded CI
	// machine still refuses (released / PUBACK ≥ 0x80), which loses
	// nothing — the client sends again and finish counts it (CI saw 1 of
	// 1,040 once). Many refusals would mean the wait does not work.
	if n := mq.refused + qq.refused; n > 10 {
		t.Errorf("%d publishes refused (MQTT %d, AMQP %d): the router should wait for the stream's new leader", n, mq.refused, qq.refused)
	} else if n > 0 {
		t.Logf("%d publishes refused (MQTT %d, AMQP %d) and sent again: an election took longer than the router's wait", n, mq.refused, qq.refused)
	}
	t.Logf("took %s", time.Since(began).Round(time.Millisecond))
}

// stopFor is how long TestStopUnderLoad keeps a node stopped: 15 s, or the
// issue's 30 s with THRONG_CLUSTER_LONG=1 (the short form keeps the
// package's CI time down; what happens is the same: every client of the
// node has given up on it after at most 10 s).
func stopFor() time.Duration {
	if os.Getenv("THRONG_CLUSTER_LONG") != "" {
		return 30 * time.Second
	}
	return 15 * time.Second
}

// TestStopUnderLoad (issue 16): node 1 stopped (SIGSTOP) under load, as a
// partition would look to its peers and clients, then continued: the
// clients of node 1, the persistent-session subscriber among them, work
// again on the others, nothing acknowledged is lost, and node 1 rejoins
// and is ready again.
func TestStopUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("three node processes under load")
	}
	began := time.Now()
	c := newCluster(t, 3)
	c.startAll()
	n1 := c.nodes[0]
	l := startLoad(t, c, 0, []int{0, 1}, []int{1, 2})
	time.Sleep(3 * time.Second)

	stopped := time.Now()
	n1.signal(t, syscall.SIGSTOP)
	t.Logf("SIGSTOP n1 for %s", stopFor())
	cont := sync.OnceFunc(func() { _ = n1.cmd.Process.Signal(syscall.SIGCONT) })
	t.Cleanup(cont) // a stopped process ignores SIGKILL until continued
	l.waitFlowing("SIGSTOP n1", stopped, recoverMax)
	time.Sleep(time.Until(stopped.Add(stopFor())))
	cont()
	resumed := time.Now()
	t.Logf("SIGCONT n1 after %s", resumed.Sub(stopped).Round(time.Millisecond))
	for _, nd := range c.nodes {
		c.checkStatus(nd, 3)
	}
	healed := time.Since(resumed)
	c.waitReady(n1)
	t.Logf("cluster healed (every node sees three online, n1 ready) %s after SIGCONT", healed.Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	l.finish(drainMax)
	t.Logf("took %s", time.Since(began).Round(time.Millisecond))
}

// TestRollingRestart (issue 16): every node in turn is shut down
// (SIGTERM, as an upgrade does), restarted and waited for before the
// next, under load: nothing acknowledged is lost and the clients keep
// working on the other nodes meanwhile.
func TestRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("three node processes under load")
	}
	began := time.Now()
	c := newCluster(t, 3)
	c.startAll()
	l := startLoad(t, c, 1, []int{0, 1}, []int{0, 2})
	time.Sleep(2 * time.Second)
	for _, nd := range c.nodes {
		down := time.Now()
		took := nd.shutdown(t, 30*time.Second)
		t.Logf("%s shut down in %s", nd.name, took.Round(time.Millisecond))
		l.waitFlowing(nd.name+" shut down", down, recoverMax)
		ready := c.restart(nd, 3)
		t.Logf("%s restarted: ready and in the cluster %s after its start", nd.name, ready.Round(time.Millisecond))
		for _, o := range c.nodes {
			c.checkStatus(o, 3)
		}
		time.Sleep(2 * time.Second)
	}
	l.finish(drainMax)
	t.Logf("took %s", time.Since(began).Round(time.Millisecond))
}

// TestMQTTSessionAcrossNodes (issue 16): a persistent MQTT session
// follows its client from node to node. The client connected to node 1
// connects again to node 2: the connection on node 1 is ended with 0x8E
// (session taken over) and node 2 has the session and its subscription;
// messages queued while it was away are delivered on node 3; messages
// delivered but not acknowledged before its connection broke come again
// on node 1; a session held by a killed node is resumed on another; and
// the will of a client on the killed node is published once.
func TestMQTTSessionAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("three node processes")
	}
	began := time.Now()
	c := newCluster(t, 3)
	c.startAll()
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	ctx := ctxT(t, 3*time.Minute)

	got := newTally()
	onMsg := func(who string) func(*paho.Publish) {
		return func(p *paho.Publish) { got.add(who, string(p.Payload)) }
	}
	discs := make(chan byte, 4)
	connect := func(nd *node, id string, clean bool, manual bool, who string, onDisc func(*paho.Disconnect)) (*paho.Client, *paho.Connack) {
		t.Helper()
		// The session store's stream may be electing a leader after a
		// node's failure (CONNACK 0x88): the client tries again.
		deadline := time.Now().Add(30 * time.Second)
		for {
			conn, err := dialConn(nd)
			if err != nil {
				t.Fatal(err)
			}
			cfg := paho.ClientConfig{ClientID: id, Conn: conn, EnableManualAcknowledgment: manual, OnServerDisconnect: onDisc}
			if who != "" {
				f := onMsg(who)
				cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
					f(pr.Packet)
					return true, nil
				}}
			}
			mc := paho.NewClient(cfg)
			exp := uint32(3600)
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			ack, err := mc.Connect(cctx, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30,
				UsernameFlag: true, Username: appUser, PasswordFlag: true, Password: []byte(appPW),
				Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
			cancel()
			if err == nil && ack.ReasonCode == 0 {
				t.Cleanup(func() { conn.Close() })
				return mc, ack
			}
			conn.Close()
			if time.Now().After(deadline) {
				t.Fatalf("connect %s to %s: %v %+v", id, nd.name, err, ack)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	pubOn := func(nd *node, prefix string, n int) []string {
		t.Helper()
		p := dialMQTT(t, nd, "pub-"+prefix, nil)
		defer p.Disconnect(&paho.Disconnect{})
		return publishAll(t, p, "cmd/dev/x", prefix, n)
	}

	// The session on node 1, with its subscription.
	c1, _ := connect(n1, "dev", true, false, "c1", func(d *paho.Disconnect) { discs <- d.ReasonCode })
	if _, err := c1.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "cmd/dev/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	for _, nd := range []*node{n2, n3} {
		probe(t, nd, got, "cmd/dev/probe", "probe-"+nd.name)
	}

	// Takeover: the same client id on node 2.
	moved := time.Now()
	c2, ack := connect(n2, "dev", false, false, "c2", nil)
	if !ack.SessionPresent {
		t.Fatal("node 2: the session did not follow the client (session present 0)")
	}
	select {
	case rc := <-discs:
		if rc != 0x8E {
			t.Fatalf("the connection on node 1 was ended with %#x, want 0x8E (session taken over)", rc)
		}
		t.Logf("node 1's connection taken over %s after the CONNECT on node 2", time.Since(moved).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the connection on node 1 was not ended by the takeover on node 2")
	}
	live := pubOn(n3, "live", 20)
	got.waitFor(t, "QoS 1 from node 3 to the session taken over on node 2 (not subscribed again)", live, 30*time.Second)
	got.mu.Lock()
	if got.by["c1"] > len(c.nodes)-1 { // the probes only
		t.Errorf("the old connection on node 1 got %d messages after its takeover", got.by["c1"]-(len(c.nodes)-1))
	}
	got.mu.Unlock()

	// Queued while away: the client disconnects, 50 are published on
	// node 1, it comes back on node 3 and acknowledges none of them (its
	// connection breaks), then again on node 1: all 50 are delivered on
	// node 3 and again, unacknowledged, on node 1. (50: a session has at
	// most 64 stored messages unacknowledged, deliver.go.)
	if err := c2.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	queued := pubOn(n1, "queued", 50)
	held := newTally()
	c3conn, err := dialConn(n3)
	if err != nil {
		t.Fatal(err)
	}
	c3 := paho.NewClient(paho.ClientConfig{ClientID: "dev", Conn: c3conn, EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			held.add("c3", string(pr.Packet.Payload))
			return true, nil
		}}})
	exp := uint32(3600)
	ack, err = c3.Connect(ctx, &paho.Connect{ClientID: "dev", KeepAlive: 30,
		UsernameFlag: true, Username: appUser, PasswordFlag: true, Password: []byte(appPW),
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	if err != nil || ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("node 3: %v %+v", err, ack)
	}
	held.waitFor(t, "QoS 1 queued while the client was away, delivered on node 3", queued, 30*time.Second)
	c3conn.Close() // none acknowledged
	c4, ack := connect(n1, "dev", false, false, "c4", nil)
	if !ack.SessionPresent {
		t.Fatal("node 1: the session did not follow the client")
	}
	got.waitFor(t, "QoS 1 delivered on node 3 but not acknowledged, delivered again on node 1", queued, 30*time.Second)
	_ = c4.Disconnect(&paho.Disconnect{})

	// A session held by node 2 when it is killed, and a will there. The
	// session's client (the load's subscriber: it reconnects to the next
	// node whenever its connection ends, and fails the test if a
	// reconnection finds no session) moves to node 3.
	l := newLoad(t, c)
	subscribed := make(chan struct{})
	s5 := l.mqttSubscriber("dev2", 1, "cmd/dev2/#", subscribed)
	select {
	case <-subscribed:
	case <-time.After(30 * time.Second):
		t.Fatal("dev2 not subscribed")
	}
	for _, nd := range []*node{n1, n3} {
		probe(t, nd, l.mqttIn, "cmd/dev2/probe", "probe2-"+nd.name)
	}
	wills := willWatch(t, n2, n1, "w2")
	killed := time.Now()
	n2.kill()
	t.Log("kill -9 n2")
	p := retryMQTT(t, n1, "pub-after")
	after := publishAll(t, p, "cmd/dev2/y", "after", 20)
	l.mqttIn.waitFor(t, "QoS 1 published on node 1 right after the kill of node 2, to the session that moved from node 2", after, 60*time.Second)
	s5.mu.Lock()
	t.Logf("the session held by the killed node 2: %d connections, failovers %+v; all messages delivered %s after the kill",
		s5.connects, s5.failovers, time.Since(killed).Round(time.Millisecond))
	s5.mu.Unlock()
	l.stop()
	waitWill(t, wills, "w2", killed)
	// Node 2 back: its sweeper must not publish the will again.
	c.restart(n2, 3)
	time.Sleep(3 * time.Second)
	willOnce(t, wills, "w2")
	t.Logf("took %s", time.Since(began).Round(time.Millisecond))
}
