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
