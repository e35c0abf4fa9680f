package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/testkit"
)

// dialSession connects a paho.golang client with a persistent session
// (clean start false, one hour) that collects what it receives.
func dialSession(t *testing.T, addr, id string, msgs chan *paho.Publish, clean bool) (*paho.Client, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			msgs <- pr.Packet
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exp := uint32(3600)
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	if err != nil {
		return nil, err
	}
	if ack.ReasonCode != 0 {
		return nil, fmt.Errorf("connack 0x%02x", ack.ReasonCode)
	}
	return c, nil
}

func bridgeStatus(t *testing.T, p *testkit.Platform, name string) admin.BridgeView {
	t.Helper()
	var v admin.BridgeView
	if err := json.Unmarshal(api(t, p, "GET", "/api/tenants/default/bridges/"+name, ""), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// An MQTT bridge from throng to mosquitto, both ways: what local clients
// publish reaches the remote, also what they published while the remote
// was down (loss 0; duplicates counted), and what remote clients publish
// reaches local subscribers; nothing loops back.
func testMQTTBridge(t *testing.T, p *testkit.Platform) {
	dir := t.TempDir()
	remote := startMosquitto(t, fmt.Sprintf("persistence true\npersistence_location %s/\nautosave_interval 1\n", dir))
	raddr := "127.0.0.1:" + strconv.Itoa(remote.Port)

	// The remote's consumer: a persistent session, so what the bridge
	// sends while it reconnects waits for it.
	rmsgs := make(chan *paho.Publish, 10000)
	// (Clean start 0 from the first connection: mosquitto 2.0.11 does
	// not save a session begun with clean start 1, whatever its expiry.)
	rc, err := dialSession(t, raddr, "remote-consumer", rmsgs, false)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	if _, err := rc.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "site1/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	scancel()

	// Local: up/# goes out under site1/; site1/down/# comes in as down/#.
	api(t, p, "POST", "/api/tenants/default/bridges", fmt.Sprintf(`{"name":"cloud","remote":{"url":"mqtt://%s"},"direction":"both",
		"mappings":[{"filter":"up/#","remotePrefix":"site1/"},{"filter":"down/#","remotePrefix":"site1/"}]}`, raddr))
	testkit.Eventually(t, 20*time.Second, func() bool { return bridgeStatus(t, p, "cloud").Status.State == "connected" })

	local := dial(t, p.MQTTAddr, "local-app", "app", "app-secret")
	local.sub(t, "down/#", "up/#")

	const n = 200
	got := map[string]int{}
	var firsts []int // the remote's first copy of each message, in arrival order
	collect := func(want int, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for len(got) < want {
			select {
			case m := <-rmsgs:
				if !strings.HasPrefix(m.Topic, "site1/up/") {
					t.Fatalf("remote got %s", m.Topic)
				}
				if got[string(m.Payload)] == 0 {
					i, _ := strconv.Atoi(string(m.Payload))
					firsts = append(firsts, i)
				}
				got[string(m.Payload)]++
			case <-deadline:
				t.Fatalf("remote has %d of %d distinct messages; bridge %+v; remote log:\n%s",
					len(got), want, bridgeStatus(t, p, "cloud").Status, remote.Log())
			}
		}
	}
	for i := range n {
		if r := local.pub(t, "up/"+strconv.Itoa(i%10), strconv.Itoa(i)); r.ReasonCode != 0 {
			t.Fatalf("publish: 0x%02x", r.ReasonCode)
		}
	}
	collect(n, 30*time.Second)

	// The remote goes down (a clean stop: mosquitto saves its sessions),
	// messages are published locally meanwhile, the remote comes back.
	_ = remote.cmd.Process.Signal(syscall.SIGTERM)
	_ = remote.cmd.Wait()
	remote.cmd = nil
	down := time.Now()
	for i := n; i < 2*n; i++ {
		if r := local.pub(t, "up/"+strconv.Itoa(i%10), strconv.Itoa(i)); r.ReasonCode != 0 {
			t.Fatalf("publish while the remote is down: 0x%02x", r.ReasonCode)
		}
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return bridgeStatus(t, p, "cloud").Status.State == "connecting" })
	time.Sleep(outage(t) - time.Since(down))
	if lag := bridgeStatus(t, p, "cloud").Status.Lag; lag == 0 {
		t.Errorf("lag 0 while the remote is down and %d messages wait", n)
	}
	remote.start()
	downFor := time.Since(down)
	rc, err = dialSession(t, raddr, "remote-consumer", rmsgs, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Disconnect(&paho.Disconnect{})
	collect(2*n, 40*time.Second)
	dups := 0
	for _, c := range got {
		dups += c - 1
	}
	// One mapping: the remote has them in the order they were published,
	// though the 200 waiting after the outage went out a window at a
	// time (duplicates after a reconnection aside).
	for i := 1; i < len(firsts); i++ {
		if firsts[i] < firsts[i-1] {
			t.Errorf("remote got message %d after %d (first copies %v)", firsts[i], firsts[i-1], firsts[max(0, i-5):min(len(firsts), i+5)])
			break
		}
	}
	t.Logf("remote down %v, caught up %v later: %d of %d delivered, %d duplicates",
		downFor.Round(100*time.Millisecond), (time.Since(down) - downFor).Round(100*time.Millisecond), len(got), 2*n, dups)
	// The remote's consumer may have the last message before the
	// bridge has its PUBACK (and counts it).
	waitFor(t, 10*time.Second, func() bool {
		st := bridgeStatus(t, p, "cloud").Status
		return st.Out >= 2*n && st.Reconnects >= 1
	}, func() string { return fmt.Sprintf("status %+v", bridgeStatus(t, p, "cloud").Status) })

	// In: remote publishes to site1/down/... reach local subscribers as
	// down/...; the bridge's own site1/up/ messages did not come back
	// (no-local), and nothing it published locally went out again.
	rpub, err := dialSession(t, raddr, "remote-publisher", make(chan *paho.Publish, 1), true)
	if err != nil {
		t.Fatal(err)
	}
	defer rpub.Disconnect(&paho.Disconnect{})
	// The local up/# subscription saw the 2n local publishes.
	ups := 0
	for len(local.msgs) > 0 {
		if m := <-local.msgs; strings.HasPrefix(m.Topic, "up/") {
			ups++
		}
	}
	for i := range 20 {
		pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := rpub.Publish(pctx, &paho.Publish{Topic: "site1/down/cmd", QoS: 1, Payload: []byte(strconv.Itoa(i))})
		pcancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		m := local.next(t, 20*time.Second, func(m *paho.Publish) bool {
			if strings.HasPrefix(m.Topic, "up/") {
				ups++
				return false
			}
			return true
		})
		if m.Topic != "down/cmd" || string(m.Payload) != strconv.Itoa(i) {
			t.Fatalf("local got %s %q, want down/cmd %d", m.Topic, m.Payload, i)
		}
	}
	// The remote consumer (site1/#) has each site1/down/cmd once, from
	// the remote publisher: the bridge did not send back out what it
	// brought in (origin), nor receive its own site1/up/ again (no-local).
	time.Sleep(time.Second)
	downs := map[string]int{}
	for len(rmsgs) > 0 {
		m := <-rmsgs
		switch {
		case m.Topic == "site1/down/cmd":
			downs[string(m.Payload)]++
		case strings.HasPrefix(m.Topic, "site1/up/") && got[string(m.Payload)] > 0:
			got[string(m.Payload)]++ // a late duplicate of the outage
		default:
			t.Fatalf("remote got %s %q", m.Topic, m.Payload)
		}
	}
	for i := range 20 {
		if c := downs[strconv.Itoa(i)]; c != 1 {
			t.Fatalf("remote got site1/down/cmd %d %d times: a loop", i, c)
		}
	}
	for len(local.msgs) > 0 {
		m := <-local.msgs
		t.Fatalf("local got %s %q again: a loop", m.Topic, m.Payload)
	}
	if ups > 2*n {
		t.Fatalf("local up/# got %d of %d: a loop", ups, 2*n)
	}
	if st := bridgeStatus(t, p, "cloud").Status; st.In != 20 {
		t.Errorf("in %d, want 20 (%+v)", st.In, st)
	}
}

// The admin API refuses what it cannot run, with its JSON errors.
func testAPIErrors(t *testing.T, p *testkit.Platform) {
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"name":"x","remote":{"url":"mqtt://h:1"},"mappings":[]}`, 400, "mappings"},
		{`{"name":"X!","remote":{"url":"mqtt://h:1"},"mappings":[{"filter":"a"}]}`, 400, "bridge name"},
		{`{"name":"x","kind":"pigeon","remote":{"url":"mqtt://h:1"},"mappings":[{"filter":"a"}]}`, 400, "kind"},
		{`{"name":"x","kind":"kafka","remote":{"url":"mqtt://h:1"},"mappings":[{"filter":"a","topic":"t"}]}`, 400, "scheme"},
		{`{"name":"x","kind":"kafka","remote":{"url":"kafka://h:1"},"mappings":[{"filter":"a"}]}`, 400, "topic"},
		{`{"name":"x","kind":"kafka","remote":{"url":"kafka://h:1"},"direction":"in","mappings":[{"filter":"a","topic":"t"}]}`, 400, "out only"},
		{`{"name":"x","kind":"kafka","remote":{"url":"kafka://h:1"},"mappings":[{"filter":"a","topic":"t","key":"random"}]}`, 400, "key"},
		{`{"name":"x","kind":"amqp","remote":{"url":"amqp://h"},"direction":"in","mappings":[{"filter":"a/#"}]}`, 400, "wildcards"},
		{`{"name":"x","remote":{"url":"mqtt://h:1"},"mappings":[{"filter":"a","topic":"t"}]}`, 400, "kafka"},
		{`{"name":"x","remote":{"url":"mqtt://h:1"},"direction":"sideways","mappings":[{"filter":"a"}]}`, 400, "direction"},
		{`{"name":"x","remote":{"url":"mqtt://h:1"},"mappings":[{"filter":"a/#/b"}]}`, 400, "mappings[0]"},
		{`{"name":"x","remote":{"url":"mqtt://h:1","ca":"junk"},"mappings":[{"filter":"a"}]}`, 400, "mqtts"},
		{`{"name":"x","remote":{"url":"mqtts://h","ca":"junk"},"mappings":[{"filter":"a"}]}`, 400, "PEM"},
		{`{"name":"x","remote":{"url":"mqtt://h:1"},"mappings":[{"filter":"a"}],"qos":2}`, 400, "qos"},
		{`{"name":"x","remote":{"url":"mqtt://h:1"},"mappings":[{"filter":"a"}],"overflow":"explode"}`, 400, "overflow"},
		{`{"name":"x","remote":{"url":"mqtt://h:1"},"mappings":[{"filter":"a"}],"window":257}`, 400, "window"},
		{`{"name":"x","remote":{"url":"mqtt://h:1"},"mappings":[{"filter":"a"}],"window":-1}`, 400, "window"},
		{`{"name":"x","remote":{"url":"mqtt://h:1"},"mappings":[{"filter":"a"}],"bogus":1}`, 400, "bogus"},
	} {
		resp := p.Do(t, "POST", "/api/tenants/default/bridges", strings.NewReader(c.body))
		var e struct {
			Error struct{ Code, Message string }
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(e.Error.Message, c.want) {
			t.Errorf("%s: %d %+v, want %d with %q", c.body, resp.StatusCode, e.Error, c.code, c.want)
		}
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/tenants/default/bridges/none"},
		{"DELETE", "/api/tenants/default/bridges/none"},
		{"GET", "/api/tenants/nosuch/bridges"},
	} {
		resp := p.Do(t, c.method, c.path, nil)
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("%s %s: %d, want 404", c.method, c.path, resp.StatusCode)
		}
	}
	api(t, p, "POST", "/api/tenants/default/bridges", `{"name":"x","remote":{"url":"mqtt://127.0.0.1:1","password":"pw"},"mappings":[{"filter":"a"}]}`)
	resp := p.Do(t, "POST", "/api/tenants/default/bridges", strings.NewReader(`{"name":"x","remote":{"url":"mqtt://127.0.0.1:1"},"mappings":[{"filter":"a"}]}`))
	resp.Body.Close()
	if resp.StatusCode != 409 {
		t.Errorf("duplicate: %d, want 409", resp.StatusCode)
	}
	// PUT without the password keeps it; the answer never shows it.
	b := api(t, p, "PUT", "/api/tenants/default/bridges/x", `{"remote":{"url":"mqtt://127.0.0.1:2"},"mappings":[{"filter":"b"}],"disabled":true}`)
	if strings.Contains(string(b), `"pw"`) || !strings.Contains(string(b), "********") || !strings.Contains(string(b), `"disabled"`) {
		t.Errorf("put answer: %s", b)
	}
	api(t, p, "DELETE", "/api/tenants/default/bridges/x", "")
}
