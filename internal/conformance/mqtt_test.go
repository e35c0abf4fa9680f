package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/testkit"
)

// MQTT scenarios with Debian's paho (testdata/mqtt_agent.py, one process
// per client) and the mosquitto command-line clients. Each runs against
// throng and against Debian's mosquitto broker, as subtests of one test.

const mosquittoBin = "/usr/sbin/mosquitto"

// broker is an MQTT broker under test.
type broker struct {
	name     string
	addr     string             // host:port; changes when throng restarts
	restart  func(t *testing.T) // stop, then start again on the same data
	isThrong bool
}

// brokerSetup says how a scenario wants the brokers configured.
type brokerSetup struct {
	mosquitto []string         // extra mosquitto.conf lines
	throng    []testkit.Option // testkit options
}

// eachBroker runs f against throng and against mosquitto.
func eachBroker(t *testing.T, setup brokerSetup, f func(t *testing.T, b *broker)) {
	t.Helper()
	requirePaho(t)
	t.Run("throng", func(t *testing.T) {
		p := testkit.Start(t, setup.throng...)
		if p.MQTTAddr == "" {
			t.Fatal("platform serves no MQTT")
		}
		b := &broker{name: "throng", addr: p.MQTTAddr, isThrong: true}
		b.restart = func(t *testing.T) {
			p.Restart(t)
			b.addr = p.MQTTAddr
		}
		f(t, b)
	})
	t.Run("mosquitto", func(t *testing.T) {
		requireBin(t, mosquittoBin, "mosquitto")
		f(t, startMosquitto(t, setup.mosquitto...))
	})
}

// startMosquitto runs Debian's broker on a free loopback port with a
// generated configuration and persistence in a temporary directory.
func startMosquitto(t *testing.T, extra ...string) *broker {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	conf := []string{
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"allow_anonymous true",
		"persistence true",
		"persistence_location " + dir + "/",
		"log_dest stderr",
	}
	if os.Getuid() == 0 {
		conf = append(conf, "user root") // else it drops to "mosquitto", which cannot write dir
	}
	file := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(file, []byte(joinLines(append(conf, extra...)...)), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &broker{name: "mosquitto", addr: fmt.Sprintf("127.0.0.1:%d", port)}
	var cmd *exec.Cmd
	var log strings.Builder
	var mu sync.Mutex
	start := func(t *testing.T) {
		cmd = exec.Command(mosquittoBin, "-c", file)
		cmd.Stderr = lockedWriterS{&mu, &log}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitListening(t, b.addr, 10*time.Second)
	}
	stop := func() {
		if cmd == nil || cmd.ProcessState != nil {
			return
		}
		// SIGTERM: mosquitto writes its persistence file on the way out.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	start(t)
	b.restart = func(t *testing.T) { stop(); start(t) }
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			mu.Lock()
			t.Logf("mosquitto log:\n%s", log.String())
			mu.Unlock()
		}
	})
	return b
}

type lockedWriterS struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriterS) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// client starts a paho agent and connects it (args: v "5" or "311",
// clean, expiry, keepalive, will).
func (b *broker) client(t *testing.T, id string, args m) (*agent, result) {
	t.Helper()
	a := startAgent(t, b.name+"/"+id, "mqtt_agent.py")
	host, port := hostPort(t, b.addr)
	c := m{"id": id, "host": host, "port": port}
	for k, v := range args {
		c[k] = v
	}
	r := a.do("connect", c)
	if r.RC == nil || *r.RC != 0 {
		t.Fatalf("%s: CONNACK %+v", id, r)
	}
	return a, r
}

func (b *broker) cli(t *testing.T, bin string, args ...string) string {
	t.Helper()
	p := requireBin(t, bin, "mosquitto-clients")
	host, port := hostPort(t, b.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, append([]string{"-h", host, "-p", fmt.Sprint(port)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(bin), args, err, out)
	}
	return string(out)
}

func payloads(ms []mqttMsg) []string {
	var out []string
	for _, x := range ms {
		out = append(out, x.Payload)
	}
	return out
}

func rc(p *int) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("0x%02x", *p)
}

// TestMQTTDollarTopics (issue 10 item 9): an anonymous client may use
// application topics starting with `$` (not `$SYS/`): a QoS 1 publish to
// `$TopicA/B` is acknowledged with success (MQTT 5) and the 3.1.1
// connection stays open; a subscriber of the exact name gets both.
func TestMQTTDollarTopics(t *testing.T) {
	eachBroker(t, brokerSetup{}, func(t *testing.T, b *broker) {
		sub, _ := b.client(t, "dollar-sub", m{"v": "5"})
		if g := sub.do("sub", m{"subs": [][]any{{"$TopicA/B", 1}}}).Granted; len(g) != 1 || g[0] != 1 {
			t.Fatalf("SUBACK %v", g)
		}
		p5, _ := b.client(t, "dollar-pub5", m{"v": "5"})
		if r := p5.do("pub", m{"topic": "$TopicA/B", "qos": 1, "payload": "v5"}); len(r.RCs) != 1 || rc(r.RCs[0]) != "0x00" {
			t.Errorf("MQTT 5 QoS 1 publish to $TopicA/B: PUBACK %v", rc(r.RCs[0]))
		}
		p3, _ := b.client(t, "dollar-pub3", m{"v": "311"})
		if r := p3.do("pub", m{"topic": "$TopicA/B", "qos": 1, "payload": "v311"}); !r.Connected || r.RCs[0] == nil {
			t.Errorf("MQTT 3.1.1 QoS 1 publish to $TopicA/B: connected %v, PUBACK %v", r.Connected, rc(r.RCs[0]))
		}
		// mosquitto_pub, the CLI users try first.
		out := b.cli(t, "mosquitto_pub", "-V", "5", "-q", "1", "-t", "$TopicA/B", "-m", "cli", "-d")
		if !strings.Contains(out, "PUBACK") || strings.Contains(out, "failed") {
			t.Errorf("mosquitto_pub -q 1 -t $TopicA/B:\n%s", out)
		}
		got := sub.do("recv", m{"count": 3, "timeout": 5})
		if !sameSet(payloads(got.Msgs), []string{"v5", "v311", "cli"}) {
			t.Errorf("subscriber of $TopicA/B got %v", payloads(got.Msgs))
		}
	})
}

// TestMQTTSharedSubscriptionEveryQoS (issue 10 item 8): `$share/g/x`
// receives publishes of every QoS, each by exactly one member.
func TestMQTTSharedSubscriptionEveryQoS(t *testing.T) {
	eachBroker(t, brokerSetup{}, func(t *testing.T, b *broker) {
		var members []*agent
		for _, id := range []string{"member1", "member2"} {
			a, _ := b.client(t, id, m{"v": "5"})
			a.do("sub", m{"subs": [][]any{{"$share/g/shared/x", 2}}})
			members = append(members, a)
		}
		pub, _ := b.client(t, "shared-pub", m{"v": "5"})
		for q := 0; q <= 2; q++ {
			pub.do("pub", m{"topic": "shared/x", "qos": q, "count": 10, "prefix": fmt.Sprintf("q%d-", q)})
		}
		var all []string
		per := map[string]int{}
		for i, a := range members {
			// The first wait covers both: the second member's share is in.
			got := a.do("recv", m{"quiet": true, "timeout": []float64{2, 0.3}[i]})
			for _, x := range got.Msgs {
				all = append(all, x.Payload)
			}
			per[fmt.Sprint("member", i+1)] = len(got.Msgs)
		}
		for q := 0; q <= 2; q++ {
			prefix := fmt.Sprintf("q%d-", q)
			var these []string
			for _, p := range all {
				if strings.HasPrefix(p, prefix) {
					these = append(these, p)
				}
			}
			if len(these) != 10 || !sameSet(these, names(prefix, 0, 10)) {
				t.Errorf("QoS %d publishes reached the group as %v; want each of %s0..9 exactly once (per member: %v)", q, sorted(these), prefix, per)
			}
		}
	})
}

// TestMQTTOverlappingSubscriptions (issue 10 item 10): one session with
// `ov/a` (id 2) and `ov/a/#` (id 3). throng sends one copy carrying both
// identifiers; mosquitto sends one copy per subscription, each with its
// own identifier (MQTT 5 section 3.3.4 allows both; docs/conformance.md).
func TestMQTTOverlappingSubscriptions(t *testing.T) {
	eachBroker(t, brokerSetup{}, func(t *testing.T, b *broker) {
		s, _ := b.client(t, "overlap", m{"v": "5"})
		s.do("sub", m{"subs": [][]any{{"ov/a", 1, 2}}})
		s.do("sub", m{"subs": [][]any{{"ov/a/#", 1, 3}}})
		pub, _ := b.client(t, "overlap-pub", m{"v": "5"})
		pub.do("pub", m{"topic": "ov/a", "qos": 1, "payload": "x"})
		got := s.do("recv", m{"quiet": true, "timeout": 1.5}).Msgs
		var desc []string
		for _, x := range got {
			desc = append(desc, fmt.Sprintf("%s qos%d ids%v", x.Payload, x.QoS, x.SubIDs))
		}
		if b.isThrong {
			if len(got) != 1 || fmt.Sprint(sortedInts(got[0].SubIDs)) != "[2 3]" || got[0].QoS != 1 {
				t.Fatalf("got %v; want one copy at QoS 1 with subscription identifiers 2 and 3", desc)
			}
			return
		}
		if len(got) != 2 || fmt.Sprint(sortedInts(append(got[0].SubIDs, got[1].SubIDs...))) != "[2 3]" {
			t.Fatalf("mosquitto sent %v; want one copy per subscription, ids 2 and 3", desc)
		}
	})
}

func sortedInts(v []int) []int {
	c := append([]int(nil), v...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

// TestMQTTSubscribeBeforeSuback (issue 10 item 12): a subscription is in
// force when its SUBACK arrives: a publish sent right after the
// subscriber got the SUBACK reaches it, while other clients keep the
// broker busy.
func TestMQTTSubscribeBeforeSuback(t *testing.T) {
	eachBroker(t, brokerSetup{}, func(t *testing.T, b *broker) {
		// Load: a publisher flooding QoS 1 to load/x, read by a subscriber.
		loadSub, _ := b.client(t, "load-sub", m{"v": "5"})
		loadSub.do("sub", m{"subs": [][]any{{"load/#", 1}}})
		loader, _ := b.client(t, "loader", m{"v": "5", "inflight": 1000})
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
				if _, err := loader.try("pub", m{"topic": "load/x", "qos": 1, "count": 200}); err != nil {
					return
				}
				_, _ = loadSub.try("recv", m{"count": 1 << 30, "timeout": 0})
			}
		}()
		defer func() { close(stop); <-done }()

		sub, _ := b.client(t, "late-sub", m{"v": "5"})
		pub, _ := b.client(t, "race-pub", m{"v": "5"})
		var missed []string
		for i := 0; i < 30; i++ {
			topic := fmt.Sprintf("race/%d", i)
			sub.do("sub", m{"subs": [][]any{{topic, 1}}})
			pub.do("pub", m{"topic": topic, "qos": 1, "payload": topic})
			got := sub.do("recv", m{"count": 1, "timeout": 5})
			if len(got.Msgs) != 1 || got.Msgs[0].Payload != topic {
				missed = append(missed, fmt.Sprintf("%s: got %v", topic, payloads(got.Msgs)))
			}
		}
		if len(missed) > 0 {
			t.Fatalf("publishes sent after the SUBACK missed the new subscription: %v", missed)
		}
	})
}

// TestMQTTRetainedWillsSessions: a retained message, a will published when
// its client dies (SIGKILL, no DISCONNECT), and persistent sessions
// (MQTT 5 session expiry, 3.1.1 clean-session 0) with a message queued
// while away; retained messages and sessions survive a broker restart.
func TestMQTTRetainedWillsSessions(t *testing.T) {
	eachBroker(t, brokerSetup{}, func(t *testing.T, b *broker) {
		pub, _ := b.client(t, "rw-pub", m{"v": "5"})
		pub.do("pub", m{"topic": "rw/state", "qos": 1, "retain": true, "payload": "retained-1"})

		// Persistent sessions, away while a message is published.
		for _, v := range []string{"5", "311"} {
			dev, _ := b.client(t, "dev"+v, m{"v": v, "clean": false, "expiry": 3600})
			dev.do("sub", m{"subs": [][]any{{"rw/cmd" + v + "/#", 1}}})
			dev.do("disconnect", nil)
		}
		pub.do("pub", m{"topic": "rw/cmd5/1", "qos": 1, "payload": "queued-5"})
		pub.do("pub", m{"topic": "rw/cmd311/1", "qos": 1, "payload": "queued-311"})

		// A will, published when its client dies.
		watcher, _ := b.client(t, "watcher", m{"v": "5"})
		watcher.do("sub", m{"subs": [][]any{{"rw/wills/#", 1}}})
		willer, _ := b.client(t, "willer", m{"v": "311", "keepalive": 5,
			"will": m{"topic": "rw/wills/willer", "payload": "bye", "qos": 1}})
		_ = willer
		willer.kill()
		if got := watcher.do("recv", m{"count": 1, "timeout": 15}); len(got.Msgs) != 1 || got.Msgs[0].Payload != "bye" {
			t.Errorf("will of a killed client: got %v", payloads(got.Msgs))
		}

		b.restart(t)

		for _, v := range []string{"5", "311"} {
			dev, ack := b.client(t, "dev"+v, m{"v": v, "clean": false, "expiry": 3600})
			if !ack.SessionPresent {
				t.Errorf("MQTT %s: session not present after restart", v)
				continue
			}
			if got := dev.do("recv", m{"count": 1, "timeout": 10}); len(got.Msgs) != 1 || got.Msgs[0].Payload != "queued-"+v {
				t.Errorf("MQTT %s: message queued for the session before the restart: got %v", v, payloads(got.Msgs))
			}
		}
		out := b.cli(t, "mosquitto_sub", "-V", "5", "-t", "rw/state", "-C", "1", "-W", "10", "-v")
		if strings.TrimSpace(out) != "rw/state retained-1" {
			t.Errorf("retained message after restart (mosquitto_sub): %q", out)
		}
	})
}

// maxKeepAlive sets throng's maximum keep-alive through the settings table
// (docs/operations.md).
// A problem is reported in *errp (the option runs inside testkit.Start).
func maxKeepAlive(v string, errp *error) testkit.Option {
	return func(c *config.Config) {
		for _, s := range config.Settings {
			switch s.Key {
			case "mqtt.maxKeepAlive":
				if err := s.Set(c, v); err != nil {
					*errp = fmt.Errorf("%s: %v", s.Key, err)
				}
				return
			}
		}
		*errp = fmt.Errorf("no setting mqtt.maxKeepAlive in config.Settings")
	}
}

// TestMQTTServerKeepAlive (issue 10 item 11): a broker with a maximum
// keep-alive of 60 s answers an MQTT 5 client asking for 120 s with
// Server Keep Alive 60 in CONNACK, and one asking for 30 s without a
// different value. MQTT 5 only: 3.1.1 cannot be told another value
// (docs/conformance.md).
func TestMQTTServerKeepAlive(t *testing.T) {
	var optErr error
	eachBroker(t, brokerSetup{
		mosquitto: []string{"max_keepalive 60"},
		throng:    []testkit.Option{maxKeepAlive("60s", &optErr)},
	}, func(t *testing.T, b *broker) {
		if b.isThrong && optErr != nil {
			t.Fatal(optErr)
		}
		_, ack := b.client(t, "ka-long", m{"v": "5", "keepalive": 120})
		if ack.ServerKeepAlive == nil || *ack.ServerKeepAlive != 60 {
			t.Errorf("keep-alive 120 asked, maximum 60: CONNACK server keep alive %v; want 60", ack.ServerKeepAlive)
		}
		_, ack = b.client(t, "ka-short", m{"v": "5", "keepalive": 30})
		if ack.ServerKeepAlive != nil && *ack.ServerKeepAlive != 30 {
			t.Errorf("keep-alive 30 asked, maximum 60: CONNACK server keep alive %v; want none or 30", *ack.ServerKeepAlive)
		}
	})
}
