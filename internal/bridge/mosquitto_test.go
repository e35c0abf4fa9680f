package bridge_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/testkit"
)

// need finds an external program: missing is a failure when CI=true and
// a skip otherwise.
func need(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not installed (apt-get install -y mosquitto mosquitto-clients)", name)
	}
	t.Skipf("%s not installed", name)
	return ""
}

// freePort returns a loopback port nobody listens on (for mosquitto,
// which cannot report the port it picked for 0).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// mosquitto is a mosquitto broker the test started.
type mosquitto struct {
	t    *testing.T
	bin  string
	conf string
	Port int
	mu   sync.Mutex
	log  bytes.Buffer
	cmd  *exec.Cmd
}

func (b *mosquitto) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.Write(p)
}

// Log returns what mosquitto logged so far.
func (b *mosquitto) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

// startMosquitto runs mosquitto on a free loopback port with a listener
// for anonymous clients followed by extra (bridge sections); it is
// stopped when the test ends.
func startMosquitto(t *testing.T, extra string) *mosquitto {
	t.Helper()
	b := &mosquitto{t: t, bin: need(t, "mosquitto"), Port: freePort(t)}
	b.conf = filepath.Join(t.TempDir(), "mosquitto.conf")
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type all\n", b.Port)
	if os.Geteuid() == 0 {
		// As root mosquitto would switch to user mosquitto, who cannot
		// write its persistence file into the test's directory.
		conf += "user root\n"
	}
	conf += "\n" + extra
	if err := os.WriteFile(b.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *mosquitto) start() {
	b.t.Helper()
	b.cmd = exec.Command(b.bin, "-c", b.conf)
	b.cmd.Stdout, b.cmd.Stderr = b, b
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	testkit.Eventually(b.t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(b.Port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stop kills mosquitto (SIGKILL: no clean DISCONNECT, as a crash).
func (b *mosquitto) stop() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
	b.cmd = nil
}

// client is a paho.golang MQTT 5 client collecting what it receives.
type client struct {
	*paho.Client
	msgs chan *paho.Publish
}

func dial(t *testing.T, addr, id, user, pass string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{msgs: make(chan *paho.Publish, 10000)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(pass), true
	}
	ack, err := c.Connect(ctx, cp)
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("connect %s to %s: %v %+v", id, addr, err, ack)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func (c *client) sub(t *testing.T, filters ...string) {
	t.Helper()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Subscribe(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for i, rc := range ack.Reasons {
		if rc > 2 {
			t.Fatalf("subscribe %s: reason 0x%02x", filters[i], rc)
		}
	}
}

func (c *client) pub(t *testing.T, topic, payload string) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if err != nil && r == nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return r
}

// next waits for a message whose topic passes keep.
func (c *client) next(t *testing.T, within time.Duration, keep func(*paho.Publish) bool) *paho.Publish {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-c.msgs:
			if keep == nil || keep(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("no message within %v", within)
			return nil
		}
	}
}

func topicIs(topic string) func(*paho.Publish) bool {
	return func(m *paho.Publish) bool { return m.Topic == topic }
}

// api sends an admin API request, fails the test unless it succeeds
// and returns the response body.
func api(t *testing.T, p *testkit.Platform, method, path, body string) []byte {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	hr := p.Do(t, method, path, r)
	defer hr.Body.Close()
	b, _ := io.ReadAll(hr.Body)
	if hr.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, hr.StatusCode, b)
	}
	return b
}
