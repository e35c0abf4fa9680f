package testkit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/testkit"
)

// A device adapter's process killed in the middle (SIGKILL) and started
// again on the same data directory and ports: Hono's AMQP device sending
// events (go-amqp) loses none that was accepted and goes on after a
// reconnect; the connection events show what Hono's do — no
// "disconnected" for a connection whose adapter crashed, a new
// "connected" for the reconnect (docs/hono.md, "Connection events").

// serveChild is a `throng serve` child process.
type serveChild struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *lockedLog // its standard error, shown when it fails
}

// lockedLog is a child's standard error, written by exec's copier and
// read by the test.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// errPortTaken: a port picked by FreeAddr was taken by another process
// (tests of other packages run at the same time) before the child bound it.
var errPortTaken = errors.New("a listen address is in use")

// startChild starts `throng serve` and waits until /readyz answers 200.
func startChild(t *testing.T, bin, dataDir, admin, amqpAddr, mqttAddr, pw string) *serveChild {
	t.Helper()
	c, err := tryStartChild(t, bin, dataDir, admin, amqpAddr, mqttAddr, pw)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tryStartChild is startChild returning the failure; errPortTaken when
// the child could not bind one of its addresses.
func tryStartChild(t *testing.T, bin, dataDir, admin, amqpAddr, mqttAddr, pw string) (*serveChild, error) {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--data-dir", dataDir, "--admin", admin,
		"--amqp", amqpAddr, "--amqps", "", "--mqtt", mqttAddr, "--mqtts", "", "--http", "", "--https", "",
		"--admin-password", pw, "--log-format", "json")
	cmd.Env = append(os.Environ(), "THRONG_ADMIN_PASSWORD=")
	c := &serveChild{cmd: cmd, done: make(chan struct{}), log: &lockedLog{}}
	cmd.Stderr = c.log
	if os.Getenv("THRONG_TEST_LOG") != "" {
		cmd.Stderr = io.MultiWriter(os.Stderr, c.log)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.kill() })
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return c, nil
			}
		}
		select {
		case <-c.done:
			if strings.Contains(c.log.String(), "address already in use") {
				return nil, fmt.Errorf("%w:\n%s", errPortTaken, c.log)
			}
			return nil, fmt.Errorf("throng serve exited while starting:\n%s", c.log)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("throng serve not ready within 90 s:\n%s", c.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill ends the process with SIGKILL: no shutdown, nothing flushed by it.
func (c *serveChild) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "throng-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "throng")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/throngmq/throng/cmd/throng").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func TestHonoRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	const pw = "restart-admin-pw"
	var admin, amqpAddr, mqttAddr string
	var srv *serveChild
	for try := 1; ; try++ {
		admin, amqpAddr, mqttAddr = testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
		srv, err = tryStartChild(t, bin, dataDir, admin, amqpAddr, mqttAddr, pw)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || try == 3 {
			t.Fatal(err)
		}
		t.Logf("start %d: %v; again on other ports", try, err)
	}
	v1 := func(method, path string, body any, status int) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, "http://"+admin+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("admin", pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != status {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, rb)
		}
	}
	v1("POST", "/v1/tenants/iot", map[string]any{"ext": map[string]any{"connection-events": "events"}}, 201)
	for _, d := range []string{"dev1", "dev3"} {
		v1("POST", "/v1/devices/iot/"+d, map[string]any{}, 201)
		v1("PUT", "/v1/credentials/iot/"+d, []any{map[string]any{"type": "hashed-password", "auth-id": d,
			"secrets": []any{map[string]any{"pwd-plain": d + "-secret"}}}}, 204)
	}

	// An MQTT device (paho.golang) connected before the crash.
	mqttDevice := func(id string) (*paho.Client, error) {
		nc, err := net.Dial("tcp", mqttAddr)
		if err != nil {
			return nil, err
		}
		c := paho.NewClient(paho.ClientConfig{Conn: nc})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			Username: "dev3@iot", UsernameFlag: true, Password: []byte("dev3-secret"), PasswordFlag: true})
		if err != nil || ack == nil || ack.ReasonCode != 0 {
			return nil, fmt.Errorf("connect: %v %+v", err, ack)
		}
		return c, nil
	}
	if _, err := mqttDevice("mqtt-dev3"); err != nil {
		t.Fatal(err)
	}

	// The AMQP device: events 0..n-1, each sent until accepted (Hono's
	// at least once), reconnecting whenever the connection fails.
	const n, killAt = 300, 100
	var mu sync.Mutex
	accepted, dials := 0, 0
	kill := make(chan struct{})
	devDone := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(3 * time.Minute)
		i := 0
		for i < n {
			if time.Now().After(deadline) {
				devDone <- fmt.Errorf("only %d of %d events accepted in time", i, n)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			conn, err := goamqp.Dial(ctx, "amqp://"+amqpAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("dev1@iot", "dev1-secret")})
			cancel()
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			mu.Lock()
			dials++
			mu.Unlock()
			func() {
				defer conn.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				s, err := conn.NewSession(ctx, nil)
				if err != nil {
					return
				}
				snd, err := s.NewSender(ctx, "", nil)
				if err != nil {
					return
				}
				for i < n {
					to := "event"
					m := goamqp.NewMessage([]byte(strconv.Itoa(i)))
					m.Properties = &goamqp.MessageProperties{To: &to}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					st, err := func() (goamqp.DeliveryState, error) {
						rc, err := snd.SendWithReceipt(ctx, m, nil)
						if err != nil {
							return nil, err
						}
						return rc.Wait(ctx)
					}()
					cancel()
					if err != nil {
						return // reconnect, send i again
					}
					if _, ok := st.(*goamqp.StateAccepted); !ok {
						time.Sleep(50 * time.Millisecond) // released: again
						continue
					}
					i++
					mu.Lock()
					accepted = i
					mu.Unlock()
					if i == killAt {
						close(kill)
					}
				}
			}()
		}
		devDone <- nil
	}()

	select {
	case <-kill:
	case err := <-devDone:
		t.Fatalf("device ended before the kill: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the device did not reach the kill point")
	}
	srv.kill()
	mu.Lock()
	atKill := accepted
	mu.Unlock()
	srv = startChild(t, bin, dataDir, admin, amqpAddr, mqttAddr, pw)
	if err := <-devDone; err != nil {
		t.Fatal(err)
	}
	// The MQTT device reconnects, then leaves cleanly.
	c, err := mqttDevice("mqtt-dev3")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Disconnect(&paho.Disconnect{})

	// The application reads the event queue: every event accepted, in
	// order of first acceptance (a resent one may come twice), and the
	// connection events.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	app, err := goamqp.Dial(ctx, "amqp://"+amqpAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("admin", pw)})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	s, err := app.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.NewReceiver(ctx, "event/iot", &goamqp.ReceiverOptions{Credit: 100})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	next, dups := 0, 0
	causes := map[string][]string{} // device → connection event causes in order
	mu.Lock()
	wantDials := dials
	mu.Unlock()
	for next < n || len(causes["dev1"]) < wantDials+1 || len(causes["dev3"]) < 3 {
		m, err := r.Receive(ctx, nil)
		if err != nil {
			t.Fatalf("after %d events (%d duplicates), connection events %v: %v", next, dups, causes, err)
		}
		_ = r.AcceptMessage(ctx, m)
		if m.Properties != nil && m.Properties.ContentType != nil && *m.Properties.ContentType == "application/vnd.eclipse-hono-dc-notification+json" {
			var ev struct {
				Cause string `json:"cause"`
			}
			_ = json.Unmarshal(m.GetData(), &ev)
			dev, _ := m.ApplicationProperties["device_id"].(string)
			causes[dev] = append(causes[dev], ev.Cause)
			continue
		}
		i, err := strconv.Atoi(string(m.GetData()))
		if err != nil {
			t.Fatalf("event %q", m.GetData())
		}
		seen[i]++
		switch {
		case i == next:
			next++
		case i < next:
			dups++ // sent again after an outcome the crash took away
		default:
			t.Fatalf("event %d before %d: one accepted event is missing", i, next)
		}
	}
	t.Logf("%d events, %d accepted before the kill, %d duplicates, %d AMQP connections; connection events %v", n, atKill, dups, wantDials, causes)
	// No "disconnected" for the connections the crash ended: a
	// "connected" for each connection, one "disconnected" for the AMQP
	// device's last (closed by the device) and the MQTT device's.
	want := make([]string, 0, wantDials+1)
	for range wantDials {
		want = append(want, "connected")
	}
	want = append(want, "disconnected")
	if fmt.Sprint(causes["dev1"]) != fmt.Sprint(want) {
		t.Fatalf("AMQP device's connection events %v, want %v", causes["dev1"], want)
	}
	if fmt.Sprint(causes["dev3"]) != "[connected connected disconnected]" {
		t.Fatalf("MQTT device's connection events %v", causes["dev3"])
	}
	srv.kill()
}
