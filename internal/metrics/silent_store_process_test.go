package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/metrics"
	"github.com/throngmq/throng/internal/testkit"
)

// The silent-device tracker across restarts of a real `throng serve`
// process on one data directory (docs/anomalies.md, "Across restarts"):
//
//  1. a device that connected and published at an interval and stopped,
//     and a device that waited for commands (MQTT command///req/#), both
//     before a clean stop (SIGTERM): after the start they are found
//     silent, with their history from before;
//  2. a device seen by the second process, which is killed (SIGKILL)
//     after it wrote the tracker's file: the third process finds it;
//  3. a damaged file: the fourth process starts anyway, says so, and
//     starts with an empty tracker.
//
// Without the file the restarted process knows none of them.
func TestSilentDevicesAcrossRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildServe()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	file := filepath.Join(dataDir, "silent-devices")
	const pw = "silent-admin-pw"

	srv := startServe(t, bin, dataDir, pw)
	srv.v1(t, "POST", "/v1/tenants/iot", map[string]any{}, 201)
	for _, d := range []string{"r-quiet", "r-cmd", "r-late"} {
		srv.v1(t, "POST", "/v1/devices/iot/"+d, map[string]any{}, 201)
		srv.v1(t, "PUT", "/v1/credentials/iot/"+d, []any{map[string]any{"type": "hashed-password", "auth-id": d,
			"secrets": []any{map[string]any{"pwd-plain": "pw-" + d}}}}, 204)
	}

	// r-quiet: connected and published every 300 ms, five sightings.
	quiet := srv.device(t, "r-quiet")
	srv.telemetry(t, quiet, 4, 300*time.Millisecond)
	_ = quiet.Disconnect(&paho.Disconnect{})
	// r-cmd: waits for commands until the node stops.
	cmd := srv.device(t, "r-cmd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cmd.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "command///req/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	// It waits for commands: not silent, although the minimum silence
	// passes (its one sighting would not be judged anyway).
	time.Sleep(1500 * time.Millisecond)
	if s := srv.silent(t); s["r-cmd"].Device != "" || s["r-quiet"].Device == "" {
		t.Errorf("before the restart: %v", s)
	}
	stopped := time.Now()
	srv.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("no tracker file after a clean stop: %v", err)
	}

	// 1. After a clean stop.
	srv = startServe(t, bin, dataDir, pw)
	s := srv.waitSilent(t, "r-quiet", "r-cmd")
	q := s["r-quiet"]
	t.Logf("after SIGTERM: %s %v", q.Summary, q.Evidence)
	if q.Evidence["reason"] != "interval" || q.Evidence["sightings"].(float64) < 5 {
		t.Errorf("r-quiet: %+v", q)
	}
	if last, _ := time.Parse(time.RFC3339, q.Evidence["lastSeen"].(string)); last.After(stopped) {
		t.Errorf("r-quiet last seen %s, after the stop at %s", last, stopped)
	}
	c := s["r-cmd"]
	t.Logf("after SIGTERM: %s %v", c.Summary, c.Evidence)
	if c.Evidence["reason"] != "commands" {
		t.Errorf("r-cmd: %+v", c)
	}

	// 2. A device of the second process, killed after a write.
	late := srv.device(t, "r-late")
	srv.telemetry(t, late, 4, 300*time.Millisecond)
	_ = late.Disconnect(&paho.Disconnect{})
	seen := time.Now()
	fi0, _ := os.Stat(file)
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		// The file is replaced (renamed over): a new write is a new
		// modification time after the device's last sighting.
		if fi, err := os.Stat(file); err == nil && fi.ModTime().After(seen) && !os.SameFile(fi, fi0) {
			t.Logf("the tracker written %s after the last sighting", fi.ModTime().Sub(seen).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the tracker's file not written within 90 s")
		}
	}
	srv.stop(t, syscall.SIGKILL)
	srv = startServe(t, bin, dataDir, pw)
	s = srv.waitSilent(t, "r-late", "r-quiet")
	t.Logf("after SIGKILL: %s %v", s["r-late"].Summary, s["r-late"].Evidence)
	if s["r-late"].Evidence["reason"] != "interval" {
		t.Errorf("r-late: %+v", s["r-late"])
	}

	// 3. A damaged file: the start goes on, with a warning.
	srv.stop(t, syscall.SIGKILL)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b[:len(b)/2], 0o640); err != nil {
		t.Fatal(err)
	}
	srv = startServe(t, bin, dataDir, pw)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(srv.stderr.String(), "silent-device tracker not restored"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about the damaged file; log:\n%s", srv.stderr.String())
		}
	}
	if s := srv.silent(t); len(s) != 0 {
		t.Errorf("silent devices from a damaged file: %v", s)
	}
}

var buildServe = sync.OnceValues(func() (string, error) {
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

// serveProc is a `throng serve` child process.
type serveProc struct {
	cmd         *exec.Cmd
	done        chan struct{}
	admin, mqtt string
	pw          string
	stderr      *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if os.Getenv("THRONG_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServe starts `throng serve` on dataDir and waits until /readyz
// answers 200.
func startServe(t *testing.T, bin, dataDir, pw string) *serveProc {
	t.Helper()
	p := &serveProc{admin: testkit.FreeAddr(t), mqtt: testkit.FreeAddr(t), pw: pw, done: make(chan struct{}), stderr: &syncBuffer{}}
	p.cmd = exec.Command(bin, "serve", "--data-dir", dataDir, "--admin", p.admin,
		"--amqp", "", "--amqps", "", "--mqtt", p.mqtt, "--mqtts", "", "--http", "", "--https", "",
		"--admin-password", pw, "--log-format", "json")
	p.cmd.Env = append(os.Environ(), "THRONG_ADMIN_PASSWORD=")
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t, syscall.SIGKILL) })
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + p.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("throng serve exited while starting:\n%s", p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("throng serve not ready within 90 s")
		}
	}
}

// stop sends sig and waits for the process to end.
func (p *serveProc) stop(t *testing.T, sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("throng serve did not stop within 60 s of %s", sig)
	}
}

func (p *serveProc) v1(t *testing.T, method, path string, body any, status int) []byte {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+p.admin+path, r)
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("admin", p.pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, status, b)
	}
	return b
}

// device connects a registered device of iot over MQTT 5 (paho.golang).
func (p *serveProc) device(t *testing.T, id string) *paho.Client {
	t.Helper()
	nc, err := net.Dial("tcp", p.mqtt)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: id + "@iot", UsernameFlag: true, Password: []byte("pw-" + id), PasswordFlag: true})
	if err != nil || ack == nil || ack.ReasonCode != 0 {
		t.Fatalf("connect %s: %v %+v", id, err, ack)
	}
	return c
}

// telemetry publishes n QoS 0 readings, one every d.
func (p *serveProc) telemetry(t *testing.T, c *paho.Client, n int, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range n {
		time.Sleep(d)
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "telemetry", QoS: 0, Payload: []byte("21.5")}); err != nil {
			t.Fatal(err)
		}
	}
}

// silent is the node's silent devices of iot by id, with a minimum
// silence of a second (the node's 3× the usual interval).
func (p *serveProc) silent(t *testing.T) map[string]metrics.Finding {
	t.Helper()
	var rep metrics.Report
	if err := json.Unmarshal(p.v1(t, "GET", "/api/anomalies?silentMinSeconds=1", nil, 200), &rep); err != nil {
		t.Fatal(err)
	}
	out := map[string]metrics.Finding{}
	for _, f := range rep.Findings {
		if f.Kind == metrics.KindSilent && f.Tenant == "iot" {
			out[f.Device] = f
		}
	}
	return out
}

// waitSilent waits until all of devices are silent.
func (p *serveProc) waitSilent(t *testing.T, devices ...string) map[string]metrics.Finding {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		s := p.silent(t)
		all := true
		for _, d := range devices {
			all = all && s[d].Device != ""
		}
		if all {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v not all silent within 60 s: %v", devices, s)
		}
	}
}
