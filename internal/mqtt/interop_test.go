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
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			topic := "interop/" + v
			cmd := exec.CommandContext(ctx, sub, "-h", host, "-p", port, "-V", v, "-q", "1", "-t", "interop/#", "-C", "2", "-v", "-i", "sub-"+v)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			eventually(t, "mosquitto_sub connected", func() bool { return e.online("sub-" + v) })
			// A retained one then a plain QoS 1 one, until the subscription is in place.
			lines := make(chan string, 4)
			go func() {
				s := bufio.NewScanner(out)
				for s.Scan() {
					lines <- s.Text()
				}
				close(lines)
			}()
			for _, args := range [][]string{{"-q", "1", "-m", "one"}, {"-q", "2", "-m", "two"}} {
				a := append([]string{"-h", host, "-p", port, "-V", v, "-t", topic}, args...)
				if b, err := exec.CommandContext(ctx, pubc, a...).CombinedOutput(); err != nil {
					t.Fatalf("mosquitto_pub: %v %s", err, b)
				}
			}
			var got []string
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

const pyScript = `
import sys, paho.mqtt.client as mqtt
host, port, v = sys.argv[1], int(sys.argv[2]), sys.argv[3]
proto = mqtt.MQTTv5 if v == "5" else mqtt.MQTTv311
got = []
def on_message(c, u, m):
    got.append(m.payload.decode())
    c.disconnect()
c = mqtt.Client(client_id="py-" + v, protocol=proto)
c.on_message = on_message
c.connect(host, port)
c.subscribe("py/" + v, qos=1)
c.loop_start()
import time
time.sleep(0.3)
c.publish("py/" + v, "from python", qos=1).wait_for_publish()
for _ in range(100):
    if got: break
    time.sleep(0.1)
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
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			b, err := exec.CommandContext(ctx, py, "-c", pyScript, host, port, v).CombinedOutput()
			if err != nil || strings.TrimSpace(string(b)) != "from python" {
				t.Fatalf("python: %v %s", err, b)
			}
		})
	}
}
