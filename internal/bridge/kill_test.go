package bridge_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/testkit"
)

// killChildEnv makes TestBridgeKill run as the throng child: a platform
// on the data directory it names, killed with SIGKILL by the parent.
const killChildEnv = "THRONG_BRIDGE_KILL_CHILD"

const killAdminPassword = "kill-test-admin"

// killChild serves a platform on dir and prints its addresses; it runs
// until it is killed (or stdin closes).
func killChild(t *testing.T, dir string) {
	p := testkit.Start(t, func(c *config.Config) {
		c.DataDir = dir
		c.AdminPassword = killAdminPassword
	})
	fmt.Printf("kill-child: %s %s\n", p.AdminURL, p.MQTTAddr)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
	}
}

// throngChild is a throng platform in a child process (the test binary
// run again), so that it can be killed with SIGKILL: the engine dies
// with it, with whatever it had not written.
type throngChild struct {
	t   *testing.T
	cmd *exec.Cmd
	log *lockedBuf
	// The platform as testkit.Platform, for api and dial.
	p *testkit.Platform
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startChild(t *testing.T, dir string) *throngChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBridgeKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), killChildEnv+"="+dir, "THRONG_TEST_LOG=1") // its log, shown if the test fails
	c := &throngChild{t: t, cmd: cmd, log: &lockedBuf{}}
	cmd.Stderr = c.log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.StdinPipe(); err != nil { // held open: the child serves until killed
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.kill)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("throng child's log:\n%s", c.log)
		}
	})
	addrs := make(chan []string, 1)
	go func() {
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			if rest, ok := strings.CutPrefix(lines.Text(), "kill-child: "); ok {
				addrs <- strings.Fields(rest)
			}
		}
		close(addrs)
	}()
	select {
	case a, ok := <-addrs:
		if !ok || len(a) != 2 {
			_ = cmd.Wait()
			t.Fatalf("throng child ended before it served:\n%s", c.log)
		}
		c.p = &testkit.Platform{AdminURL: a[0], MQTTAddr: a[1], AdminUser: "admin", AdminPassword: killAdminPassword}
	case <-time.After(90 * time.Second):
		t.Fatalf("throng child did not start:\n%s", c.log)
	}
	return c
}

func (c *throngChild) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// publisher publishes QoS 1 messages numbered from next, one at a time,
// and records those the platform acknowledged (PUBACK 0).
type publisher struct {
	mu    sync.Mutex
	acked []int
	maybe []int // sent, no PUBACK (the connection died): may arrive or not
	next  int
}

func (pb *publisher) run(t *testing.T, addr string, topic string, until int, stop <-chan struct{}) {
	// Connect, again if need be (as real clients do: a restarted node
	// may answer 0x88 or late while its streams recover).
	var c *paho.Client
	deadline := time.Now().Add(120 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			c = paho.NewClient(paho.ClientConfig{ClientID: "kill-pub", Conn: nc})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			var ack *paho.Connack
			ack, err = c.Connect(ctx, &paho.Connect{ClientID: "kill-pub", CleanStart: true, KeepAlive: 30,
				Username: "app", UsernameFlag: true, Password: []byte("app-secret"), PasswordFlag: true})
			cancel()
			if err == nil && ack.ReasonCode != 0 {
				err = fmt.Errorf("connack 0x%02x", ack.ReasonCode)
			}
			if err != nil {
				nc.Close()
			}
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("publisher connect: %v", err)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	defer c.Disconnect(&paho.Disconnect{})
	for {
		pb.mu.Lock()
		i := pb.next
		pb.mu.Unlock()
		if i >= until {
			return
		}
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(strconv.Itoa(i))})
		cancel()
		pb.mu.Lock()
		pb.next++
		if err == nil && r != nil && r.ReasonCode == 0 {
			pb.acked = append(pb.acked, i)
		} else {
			pb.maybe = append(pb.maybe, i)
		}
		pb.mu.Unlock()
		if err != nil {
			return // the connection died
		}
	}
}

func (pb *publisher) count() int {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	return len(pb.acked)
}

// tally compares what a remote got with what was acknowledged locally.
func tally(acked []int, got map[string]int) (lost, dups int) {
	for _, i := range acked {
		if got[strconv.Itoa(i)] == 0 {
			lost++
		}
	}
	for _, c := range got {
		dups += max(c-1, 0)
	}
	return lost, dups
}

// TestBridgeKill (issue 17): throng, with an MQTT bridge to mosquitto, an
// AMQP bridge to a second throng and a Kafka bridge to kfake — all out,
// from the topic "kill" — is killed with SIGKILL while a client publishes
// and the bridges forward, and started again on its data directory: every
// message it acknowledged (PUBACK) reaches all three remotes; duplicates
// are counted.
func TestBridgeKill(t *testing.T) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		killChild(t, dir)
		return
	}
	need(t, "mosquitto")
	t.Parallel() // with TestBridges: most of both is waiting
	// The remotes.
	mq := startMosquitto(t, "")
	mmsgs := make(chan *paho.Publish, 100000)
	mc, err := dialSession(t, "127.0.0.1:"+strconv.Itoa(mq.Port), "kill-consumer", mmsgs, false)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Disconnect(&paho.Disconnect{})
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	if _, err := mc.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "m/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	scancel()
	remote := testkit.Start(t)
	api(t, remote, "POST", "/api/tenants/default/addresses", `{"name":"kill","type":"queue"}`)
	k := startKafka(t, "kill")
	kc := consumeKafka(t, k.addr(), "kill")

	// throng, with its bridges and a publishing user.
	dir := t.TempDir()
	child := startChild(t, dir)
	api(t, child.p, "POST", "/api/tenants/default/users", `{"name":"app","password":"app-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`)
	api(t, child.p, "POST", "/api/tenants/default/bridges", fmt.Sprintf(`{"name":"k-mqtt","remote":{"url":"mqtt://127.0.0.1:%d"},"mappings":[{"filter":"kill","remotePrefix":"m/"}]}`, mq.Port))
	api(t, child.p, "POST", "/api/tenants/default/bridges", fmt.Sprintf(`{"name":"k-amqp","kind":"amqp","remote":{"url":"amqp://%s"},"mappings":[{"filter":"kill"}]}`, remote.AMQPAddr))
	api(t, child.p, "POST", "/api/tenants/default/bridges", fmt.Sprintf(`{"name":"k-kafka","kind":"kafka","remote":{"url":"kafka://%s"},"mappings":[{"filter":"kill","topic":"kill"}]}`, k.addr()))
	for _, b := range []string{"k-mqtt", "k-amqp", "k-kafka"} {
		testkit.Eventually(t, 30*time.Second, func() bool { return bridgeStatus(t, child.p, b).Status.State == "connected" })
	}

	const total, killAt = 1200, 400
	pb := &publisher{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); pb.run(t, child.p.MQTTAddr, "kill", total, stop) }()
	testkit.Eventually(t, 60*time.Second, func() bool { return pb.count() >= killAt })
	var st [3]uint64
	for i, b := range []string{"k-mqtt", "k-amqp", "k-kafka"} {
		st[i] = bridgeStatus(t, child.p, b).Status.Out
	}
	child.kill()
	close(stop)
	<-done
	t.Logf("killed after %d acknowledged publishes; the bridges had sent mqtt %d, amqp %d, kafka %d", pb.count(), st[0], st[1], st[2])

	child = startChild(t, dir)
	start := time.Now()
	pb.run(t, child.p.MQTTAddr, "kill", total, nil)
	acked := pb.acked
	if len(acked) < total-len(pb.maybe) {
		t.Fatalf("%d acknowledged of %d", len(acked), total)
	}

	// Every acknowledged message at every remote.
	want := map[string]bool{}
	for _, i := range acked {
		want[strconv.Itoa(i)] = true
	}
	complete := func(got map[string]int) bool {
		for s := range want {
			if got[s] == 0 {
				return false
			}
		}
		return true
	}
	mgot := map[string]int{}
	waitFor(t, 90*time.Second, func() bool {
		for len(mmsgs) > 0 {
			mgot[string((<-mmsgs).Payload)]++
		}
		return complete(mgot)
	}, func() string { return fmt.Sprintf("mosquitto has %d distinct", len(mgot)) })
	var kgot map[string]int
	waitFor(t, 90*time.Second, func() bool {
		kgot, _ = distinct(kc.records())
		return complete(kgot)
	}, func() string { return fmt.Sprintf("kafka has %d distinct", len(kgot)) })
	agot := map[string]int{}
	func() {
		rs := amqpSession(t, remote.AMQPAddr)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		rcv, err := rs.NewReceiver(ctx, "kill", &amqp.ReceiverOptions{Credit: 200})
		if err != nil {
			t.Fatal(err)
		}
		for !complete(agot) {
			m, err := rcv.Receive(ctx, nil)
			if err != nil {
				t.Fatalf("amqp remote has %d distinct: %v", len(agot), err)
			}
			agot[string(m.GetData())]++
			_ = rcv.AcceptMessage(ctx, m)
		}
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		defer qcancel()
		for {
			m, err := rcv.Receive(qctx, nil)
			if err != nil {
				break
			}
			agot[string(m.GetData())]++
			_ = rcv.AcceptMessage(ctx, m)
		}
	}()
	time.Sleep(time.Second) // late duplicates
	for len(mmsgs) > 0 {
		mgot[string((<-mmsgs).Payload)]++
	}
	kgot, _ = distinct(kc.records())
	kdups := len(kc.records()) - len(kgot)
	ml, md := tally(acked, mgot)
	al, ad := tally(acked, agot)
	kl, _ := tally(acked, kgot)
	t.Logf("after the restart all arrived within %v; acknowledged %d (+%d without PUBACK): mqtt lost %d dup %d; amqp lost %d dup %d; kafka lost %d dup %d",
		time.Since(start).Round(100*time.Millisecond), len(acked), len(pb.maybe), ml, md, al, ad, kl, kdups)
	if ml+al+kl > 0 {
		t.Fatal("acknowledged messages lost")
	}
}
