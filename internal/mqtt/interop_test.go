package mqtt

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// need finds an external client: missing is a failure when CI=true and a
// skip otherwise.
func need(t *testing.T, path string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (apt-get install -y mosquitto-clients python3-paho-mqtt)", path)
		}
		t.Skipf("%s not installed", path)
	}
	return p
}

func TestInteropMosquitto(t *testing.T) {
	sub := need(t, "mosquitto_sub")
	pubc := need(t, "mosquitto_pub")
	e := startEnv(t, t.TempDir(), nil)
	host, port, _ := strings.Cut(e.addr, ":")
	for _, v := range []string{"mqttv311", "5"} {
		t.Run(v, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			topic := "interop/" + v
			pub := func(args ...string) {
				t.Helper()
				a := append([]string{"-h", host, "-p", port, "-V", v, "-t", topic}, args...)
				if b, err := exec.CommandContext(ctx, pubc, a...).CombinedOutput(); err != nil {
					t.Fatalf("mosquitto_pub: %v %s", err, b)
				}
			}
			// A retained message first: it reaches the subscriber whenever
			// its subscription is in place, which tells us it is.
			pub("-q", "1", "-r", "-m", "one")
			cmd := exec.CommandContext(ctx, sub, "-h", host, "-p", port, "-V", v, "-q", "1", "-t", "interop/#", "-C", "2", "-v", "-i", "sub-"+v)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 4)
			go func() {
				s := bufio.NewScanner(out)
				for s.Scan() {
					lines <- s.Text()
				}
				close(lines)
			}()
			first := <-lines
			pub("-q", "2", "-m", "two")
			pub("-q", "1", "-r", "-n") // clear the retained message
			got := []string{first}
			for l := range lines {
				got = append(got, l)
			}
			_ = cmd.Wait()
			if len(got) != 2 || got[0] != topic+" one" || got[1] != topic+" two" {
				t.Fatalf("mosquitto_sub got %q", got)
			}
		})
	}
}

// pyScript subscribes, waits for the SUBACK, publishes to itself and
// prints what it receives. Every wait is bounded, so a slow machine gives a
// clear "NOTHING" or "NO SUBACK" instead of a killed process.
const pyScript = `
import sys, time, threading, paho.mqtt.client as mqtt
host, port, v = sys.argv[1], int(sys.argv[2]), sys.argv[3]
proto = mqtt.MQTTv5 if v == "5" else mqtt.MQTTv311
got = []
subscribed = threading.Event()
def on_message(c, u, m):
    got.append(m.payload.decode())
def on_subscribe(c, u, mid, *rest):
    subscribed.set()
c = mqtt.Client(client_id="py-" + v, protocol=proto)
c.on_message = on_message
c.on_subscribe = on_subscribe
c.connect(host, port)
c.loop_start()
c.subscribe("py/" + v, qos=1)
if not subscribed.wait(30):
    print("NO SUBACK"); sys.exit(1)
c.publish("py/" + v, "from python", qos=1).wait_for_publish(30)
deadline = time.time() + 30
while not got and time.time() < deadline:
    time.sleep(0.05)
c.disconnect()
c.loop_stop()
print(got[0] if got else "NOTHING")
`

func TestInteropPythonPaho(t *testing.T) {
	py := need(t, "/usr/bin/python3")
	if err := exec.Command(py, "-c", "import paho.mqtt").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3-paho-mqtt not installed")
		}
		t.Skip("python3-paho-mqtt not installed")
	}
	e := startEnv(t, t.TempDir(), nil)
	host, port, _ := strings.Cut(e.addr, ":")
	for _, v := range []string{"311", "5"} {
		t.Run(v, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			b, err := exec.CommandContext(ctx, py, "-c", pyScript, host, port, v).CombinedOutput()
			if err != nil || strings.TrimSpace(string(b)) != "from python" {
				t.Fatalf("python: %v %s", err, b)
			}
		})
	}
}
