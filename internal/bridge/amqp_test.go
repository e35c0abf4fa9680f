package bridge_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/testkit"
)

// amqpSession connects go-amqp anonymously (the default tenant).
func amqpSession(t *testing.T, addr string) *amqp.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://"+addr, &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// drainQueue receives (and accepts) from a remote address until want
// distinct bodies arrived; it returns how often each came and the first
// copies' order.
func drainQueue(t *testing.T, s *amqp.Session, addr string, want int, within time.Duration) (map[string]int, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	rcv, err := s.NewReceiver(ctx, addr, &amqp.ReceiverOptions{Credit: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close(context.Background())
	got := map[string]int{}
	var firsts []string
	for len(got) < want {
		m, err := rcv.Receive(ctx, nil)
		if err != nil {
			t.Fatalf("%s: %d of %d distinct: %v", addr, len(got), want, err)
		}
		if got[string(m.GetData())] == 0 {
			firsts = append(firsts, string(m.GetData()))
		}
		got[string(m.GetData())]++
		if err := rcv.AcceptMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Late duplicates.
	qctx, qcancel := context.WithTimeout(context.Background(), time.Second)
	defer qcancel()
	for {
		m, err := rcv.Receive(qctx, nil)
		if err != nil {
			return got, firsts
		}
		got[string(m.GetData())]++
		_ = rcv.AcceptMessage(context.Background(), m)
	}
}

// AMQP 1.0 link bridges to a second throng: out (a local name to a remote
// queue, and a wildcard with a prefix), settled after the remote
// accepted, across outage() of the remote's port; in (a remote queue
// pulled into a local name).
func testAMQPBridge(t *testing.T, p *testkit.Platform) {
	remote := testkit.Start(t)
	for _, q := range []string{"inbox", "outbox", "ovf"} {
		api(t, remote, "POST", "/api/tenants/default/addresses", `{"name":"`+q+`","type":"queue"}`)
	}
	px := startProxy(t, remote.AMQPAddr)
	api(t, p, "POST", "/api/tenants/default/bridges", fmt.Sprintf(`{"name":"amqp-out","kind":"amqp","remote":{"url":"amqp://%s"},
		"mappings":[{"filter":"inbox"},{"filter":"plant/#","remotePrefix":"site1/"}]}`, px.Addr))
	api(t, p, "POST", "/api/tenants/default/bridges", fmt.Sprintf(`{"name":"amqp-in","kind":"amqp","remote":{"url":"amqp://%s"},
		"direction":"in","mappings":[{"filter":"outbox","localPrefix":"from-remote/"}]}`, remote.AMQPAddr))
	defer api(t, p, "DELETE", "/api/tenants/default/bridges/amqp-out", "")
	defer api(t, p, "DELETE", "/api/tenants/default/bridges/amqp-in", "")
	for _, b := range []string{"amqp-out", "amqp-in"} {
		testkit.Eventually(t, 30*time.Second, func() bool { return bridgeStatus(t, p, b).Status.State == "connected" })
	}
	rs := amqpSession(t, remote.AMQPAddr)

	// A wildcard mapping: plant/3 goes to the remote's site1/plant/3.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	live, err := rs.NewReceiver(ctx, "site1/#", &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	local := dial(t, p.MQTTAddr, "amqp-bridge-app", "app", "app-secret")
	local.pub(t, "plant/3", "p3")
	m, err := live.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.GetData()) != "p3" {
		t.Fatalf("site1/#: %q", m.GetData())
	}
	_ = live.AcceptMessage(ctx, m)

	// Out to the remote queue, with the remote unreachable for outage().
	const n = 200
	for i := range n / 2 {
		if r := local.pub(t, "inbox", strconv.Itoa(i)); r.ReasonCode != 0 {
			t.Fatalf("publish: 0x%02x", r.ReasonCode)
		}
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return bridgeStatus(t, p, "amqp-out").Status.Out >= n/2+1 })
	px.down()
	down := time.Now()
	for i := n / 2; i < n; i++ {
		if r := local.pub(t, "inbox", strconv.Itoa(i)); r.ReasonCode != 0 {
			t.Fatalf("publish while the remote is down: 0x%02x", r.ReasonCode)
		}
	}
	testkit.Eventually(t, 15*time.Second, func() bool { return bridgeStatus(t, p, "amqp-out").Status.State == "connecting" })
	time.Sleep(outage(t) - time.Since(down))
	if st := bridgeStatus(t, p, "amqp-out").Status; st.Lag == 0 || st.LastError == "" {
		t.Errorf("while the remote is down: %+v", st)
	}
	px.up()
	downFor := time.Since(down)
	testkit.Eventually(t, 60*time.Second, func() bool { return bridgeStatus(t, p, "amqp-out").Status.Lag == 0 })
	caught := time.Since(down) - downFor
	got, firsts := drainQueue(t, rs, "inbox", n, 30*time.Second)
	dups := 0
	for i := range n {
		c := got[strconv.Itoa(i)]
		if c == 0 {
			t.Errorf("message %d lost", i)
		}
		dups += max(c-1, 0)
	}
	// In order, though the 100 waiting after the outage went out a
	// window at a time.
	for i := 1; i < len(firsts); i++ {
		a, _ := strconv.Atoi(firsts[i-1])
		b, _ := strconv.Atoi(firsts[i])
		if b < a {
			t.Errorf("remote got message %d after %d", b, a)
			break
		}
	}
	t.Logf("remote down %v, caught up %v later: %d of %d delivered, %d duplicates; %+v",
		downFor.Round(100*time.Millisecond), caught.Round(100*time.Millisecond), len(got), n, dups, bridgeStatus(t, p, "amqp-out").Status)

	// In: a remote producer's messages on the remote queue outbox reach
	// a local subscriber of from-remote/outbox, in order.
	local.sub(t, "from-remote/outbox")
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second) // the first may be spent (outage)
	defer cancel()
	snd, err := rs.NewSender(ctx, "outbox", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := snd.Send(ctx, &amqp.Message{Data: [][]byte{[]byte("in-" + strconv.Itoa(i))},
			ApplicationProperties: map[string]any{"seq": int64(i)}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		m := local.next(t, 20*time.Second, topicIs("from-remote/outbox"))
		if string(m.Payload) != "in-"+strconv.Itoa(i) {
			t.Fatalf("local got %q, want in-%d", m.Payload, i)
		}
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return bridgeStatus(t, p, "amqp-in").Status.In == 20 })

	testOverflow(t, p, remote, rs)
}

// drop-oldest: with the remote unreachable, 200 messages wait for a
// bridge whose bufferLimit is 50; when it is back the oldest are
// acknowledged unsent (dropped) until the lag is under the limit, and the
// newest go out: each message either delivered or dropped, and every
// delivered one (but the one held when the remote went) newer than every
// dropped one.
func testOverflow(t *testing.T, p, remote *testkit.Platform, rs *amqp.Session) {
	px := startProxy(t, remote.AMQPAddr)
	api(t, p, "POST", "/api/tenants/default/bridges", fmt.Sprintf(`{"name":"amqp-ovf","kind":"amqp","remote":{"url":"amqp://%s"},
		"mappings":[{"filter":"ovf"}],"bufferLimit":50,"overflow":"drop-oldest"}`, px.Addr))
	defer api(t, p, "DELETE", "/api/tenants/default/bridges/amqp-ovf", "")
	testkit.Eventually(t, 30*time.Second, func() bool { return bridgeStatus(t, p, "amqp-ovf").Status.State == "connected" })
	px.down()
	local := dial(t, p.MQTTAddr, "amqp-ovf-app", "app", "app-secret")
	const n = 200
	for i := range n {
		if r := local.pub(t, "ovf", strconv.Itoa(i)); r.ReasonCode != 0 {
			t.Fatalf("publish: 0x%02x", r.ReasonCode)
		}
	}
	waitFor(t, 15*time.Second, func() bool { return bridgeStatus(t, p, "amqp-ovf").Status.Lag > 50 },
		func() string { return fmt.Sprintf("%+v", bridgeStatus(t, p, "amqp-ovf").Status) })
	px.up()
	waitFor(t, 60*time.Second, func() bool {
		st := bridgeStatus(t, p, "amqp-ovf").Status
		return st.Out+st.Dropped >= n
	}, func() string { return fmt.Sprintf("%+v", bridgeStatus(t, p, "amqp-ovf").Status) })
	st := bridgeStatus(t, p, "amqp-ovf").Status
	got, _ := drainQueue(t, rs, "ovf", int(st.Out), 30*time.Second)
	minGot, maxDropped := n, -1
	for i := range n {
		c := got[strconv.Itoa(i)]
		switch {
		case c > 1:
			t.Errorf("message %d delivered %d times", i, c)
		case c == 0:
			maxDropped = i
		case i > 0:
			minGot = min(minGot, i)
		}
	}
	t.Logf("bufferLimit 50, %d waiting: %d delivered, %d dropped (oldest kept %d, newest dropped %d); %+v",
		n, len(got), n-len(got), minGot, maxDropped, st)
	if st.Dropped == 0 || int(st.Dropped)+len(got) != n || maxDropped > minGot || got[strconv.Itoa(n-1)] != 1 {
		t.Errorf("drop-oldest: %d delivered, status %+v, newest dropped %d, oldest delivered %d", len(got), st, maxDropped, minGot)
	}
}

// startProtonBroker runs testdata/proton_broker.py (Qpid Proton's
// reactor) with Debian's python3 and python3-qpid-proton: a failure when
// missing and CI=true, a skip otherwise.
func startProtonBroker(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import proton.reactor").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s with proton: %v (apt-get install -y python3-qpid-proton)", py, err)
		}
		t.Skipf("%s with proton: %v", py, err)
	}
	port := freePort(t)
	cmd := exec.Command(py, "testdata/proton_broker.py", strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	log := &lockedBuf{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("proton broker's log:\n%s", log)
		}
	})
	ready := make(chan bool, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "listening") {
				ready <- true
			}
		}
		close(ready)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("proton broker ended:\n%s", log)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("proton broker did not start:\n%s", log)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// AMQP link bridges to another implementation: a Qpid Proton broker.
// Out: 50 QoS 1 MQTT publishes reach its queue, in order; in: 20
// messages a go-amqp producer puts on another of its queues reach a
// local MQTT subscriber, in order.
func testAMQPProton(t *testing.T, p *testkit.Platform) {
	addr := startProtonBroker(t)
	api(t, p, "POST", "/api/tenants/default/bridges", fmt.Sprintf(`{"name":"proton-out","kind":"amqp","remote":{"url":"amqp://%s"},
		"mappings":[{"filter":"to-proton"}]}`, addr))
	api(t, p, "POST", "/api/tenants/default/bridges", fmt.Sprintf(`{"name":"proton-in","kind":"amqp","remote":{"url":"amqp://%s"},
		"direction":"in","mappings":[{"filter":"from-proton","localPrefix":"p/"}]}`, addr))
	defer api(t, p, "DELETE", "/api/tenants/default/bridges/proton-out", "")
	defer api(t, p, "DELETE", "/api/tenants/default/bridges/proton-in", "")
	for _, b := range []string{"proton-out", "proton-in"} {
		waitFor(t, 30*time.Second, func() bool { return bridgeStatus(t, p, b).Status.State == "connected" },
			func() string { return fmt.Sprintf("%s: %+v", b, bridgeStatus(t, p, b).Status) })
	}
	local := dial(t, p.MQTTAddr, "proton-app", "app", "app-secret")
	local.sub(t, "p/from-proton")
	for i := range 50 {
		if r := local.pub(t, "to-proton", strconv.Itoa(i)); r.ReasonCode != 0 {
			t.Fatalf("publish: 0x%02x", r.ReasonCode)
		}
	}
	rs := amqpSession(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rcv, err := rs.NewReceiver(ctx, "to-proton", &amqp.ReceiverOptions{Credit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		m, err := rcv.Receive(ctx, nil)
		if err != nil {
			t.Fatalf("proton queue: %d of 50: %v (bridge %+v)", i, err, bridgeStatus(t, p, "proton-out").Status)
		}
		if string(m.GetData()) != strconv.Itoa(i) {
			t.Fatalf("proton queue: %q, want %d", m.GetData(), i)
		}
		_ = rcv.AcceptMessage(ctx, m)
	}
	snd, err := rs.NewSender(ctx, "from-proton", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := snd.Send(ctx, &amqp.Message{Data: [][]byte{[]byte("pin-" + strconv.Itoa(i))}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		m := local.next(t, 20*time.Second, topicIs("p/from-proton"))
		if string(m.Payload) != "pin-"+strconv.Itoa(i) {
			t.Fatalf("local got %q, want pin-%d", m.Payload, i)
		}
	}
}
