package bridge_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/testkit"
)

// TestBridges runs the bridge tests on one platform (a platform's start
// and its bcrypt logins under -race are most of their time).
func TestBridges(t *testing.T) {
	t.Parallel() // with TestBridgeKill: most of both is waiting
	p := testkit.Start(t)
	api(t, p, "POST", "/api/tenants/default/users", `{"name":"app","password":"app-secret","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`)
	t.Run("MosquittoConcentrator", func(t *testing.T) { testConcentrator(t, p) })
	t.Run("APIErrors", func(t *testing.T) { testAPIErrors(t, p) })
	// The bridges to remotes run side by side (after the above): each
	// keeps its remote down for outage(), and they use names of their
	// own.
	t.Run("MQTTBridgeToMosquitto", func(t *testing.T) { t.Parallel(); testMQTTBridge(t, p) })
	t.Run("KafkaOut", func(t *testing.T) { t.Parallel(); testKafkaBridge(t, p) })
	t.Run("AMQPLinks", func(t *testing.T) { t.Parallel(); testAMQPBridge(t, p) })
	t.Run("AMQPProton", func(t *testing.T) { t.Parallel(); testAMQPProton(t, p) })
}

// mosquitto as a concentrator (docs/bridges.md): devices publish to a
// local mosquitto whose stock bridge — connection, address,
// remote_username/password and topics, everything else default (MQTT
// 3.1.1, try_private: protocol level 0x84; notifications: a will on
// $SYS/broker/connection/<client id>/state) — connects to throng.
func testConcentrator(t *testing.T, p *testkit.Platform) {
	pub := need(t, "mosquitto_pub")
	start := time.Now()
	api(t, p, "POST", "/api/tenants/default/users", `{"name":"edge","password":"edge-secret","roles":["app"],"permissions":[{"pattern":"sensors/#","actions":["send"]},{"pattern":"both/#","actions":["send","receive"]},{"pattern":"cmd/#","actions":["receive"]}]}`)

	app := dial(t, p.MQTTAddr, "concentrator-app", "app", "app-secret")
	app.sub(t, "sensors/#", "both/#", "$SYS/broker/connection/+/state")

	m := startMosquitto(t, fmt.Sprintf(`connection throng
address %s
remote_username edge
remote_password edge-secret
topic sensors/# out 1
topic cmd/# in 1
topic both/# both 1
`, p.MQTTAddr))

	// The bridge is up: its "1" on its state topic, retained, in the
	// tenant's topic space.
	st := app.next(t, 30*time.Second, func(m *paho.Publish) bool {
		return strings.HasPrefix(m.Topic, "$SYS/broker/connection/") && string(m.Payload) == "1"
	})
	stateTopic := st.Topic
	t.Logf("%v: bridge state on %s", time.Since(start).Round(time.Millisecond), stateTopic)

	// Device → local mosquitto → bridge → throng.
	out, err := exec.Command(pub, "-p", fmt.Sprint(m.Port), "-q", "1", "-t", "sensors/t1", "-m", "21.5").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	got := app.next(t, 20*time.Second, topicIs("sensors/t1"))
	if string(got.Payload) != "21.5" {
		t.Fatalf("sensors/t1: %q", got.Payload)
	}

	// throng → bridge ("in") → a device on the local mosquitto. The
	// bridge subscribes right after its state publish: probe until its
	// subscription is in place.
	dev := dial(t, fmt.Sprintf("127.0.0.1:%d", m.Port), "device", "", "")
	dev.sub(t, "cmd/#", "both/#")
	testkit.Eventually(t, 20*time.Second, func() bool {
		app.pub(t, "cmd/probe", "x")
		select {
		case m := <-dev.msgs:
			return m.Topic == "cmd/probe"
		case <-time.After(300 * time.Millisecond):
			return false
		}
	})
	if r := app.pub(t, "cmd/valve", "open"); r.ReasonCode != 0 {
		t.Fatalf("publish cmd/valve: reason 0x%02x", r.ReasonCode)
	}
	if got := dev.next(t, 20*time.Second, topicIs("cmd/valve")); string(got.Payload) != "open" {
		t.Fatalf("cmd/valve: %q", got.Payload)
	}

	t.Logf("%v: a command reached the device", time.Since(start).Round(time.Millisecond))

	// "both": what the device publishes goes to throng once and does not
	// come back to the local broker (the bridge bit: no-local), and what
	// throng's application publishes arrives once.
	dev.pub(t, "both/up", "from-device")
	if got := app.next(t, 20*time.Second, topicIs("both/up")); string(got.Payload) != "from-device" {
		t.Fatalf("both/up: %q", got.Payload)
	}
	if got := dev.next(t, 5*time.Second, topicIs("both/up")); string(got.Payload) != "from-device" {
		t.Fatalf("both/up locally: %q", got.Payload)
	}
	app.pub(t, "both/down", "from-app")
	dev.next(t, 20*time.Second, topicIs("both/down"))
	app.next(t, 5*time.Second, topicIs("both/down")) // its own subscription
	// A loop would bring both/up back to the device and to throng again.
	time.Sleep(time.Second)
	for _, c := range []*client{dev, app} {
		for len(c.msgs) > 0 {
			m := <-c.msgs
			if strings.HasPrefix(m.Topic, "both/") {
				t.Fatalf("%s came back: a loop", m.Topic)
			}
		}
	}

	t.Logf("%v: no loop", time.Since(start).Round(time.Millisecond))

	// Nobody else may publish a bridge's state.
	if r := app.pub(t, stateTopic, "1"); r.ReasonCode != 0x87 {
		t.Fatalf("app publishing %s: reason 0x%02x, want 0x87", stateTopic, r.ReasonCode)
	}

	// The bridge dies: its will says so.
	m.stop()
	app.next(t, 20*time.Second, func(m *paho.Publish) bool {
		return m.Topic == stateTopic && string(m.Payload) == "0"
	})
}
