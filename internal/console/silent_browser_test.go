package console_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/testkit"
)

// TestConsoleSilentDevice: a registered device publishes telemetry at a
// regular interval with a real MQTT client, then stops (its connection
// stays open, as a stuck sensor's would); the platform administrator
// finds it in the anomalies page's silent devices, follows the link to
// its device page. A device that keeps publishing is not in the list.
// The tenant's thresholds (a second of silence at least) make it quick.
func TestConsoleSilentDevice(t *testing.T) {
	p := platform(t)
	bctx := browser(t)
	api := func(method, path, body string, want int) {
		t.Helper()
		resp := p.Do(t, method, path, strings.NewReader(body))
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
		}
	}
	api("POST", "/v1/tenants/iot", `{}`, http.StatusCreated)
	for _, d := range []string{"meter7", "meter8"} {
		api("POST", "/v1/devices/iot/"+d, `{}`, http.StatusCreated)
		api("PUT", "/v1/credentials/iot/"+d, `[{"type":"hashed-password","auth-id":"`+d+`","secrets":[{"pwd-plain":"pw-`+d+`"}]}]`, http.StatusNoContent)
	}
	api("PUT", "/api/tenants/iot/anomaly-thresholds", `{"silentFactor":3,"silentMinSeconds":1}`, http.StatusOK)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	device := func(id string, n int) {
		c := mqttDevice(t, p, id)
		go func() {
			tk := time.NewTicker(200 * time.Millisecond)
			defer tk.Stop()
			for i := 0; n == 0 || i < n; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
					_, _ = c.Publish(ctx, &paho.Publish{Topic: "telemetry", QoS: 0, Payload: []byte(fmt.Sprint(i))})
				}
			}
		}()
	}
	device("meter7", 5) // then silent
	device("meter8", 0) // steady

	admin := newTab(t, bctx, p.AdminURL)
	admin.login(p.AdminUser, p.AdminPassword)
	admin.open("/anomalies?tenant=iot")
	row := `#silent tr[data-device="meter7"]`
	got := admin.waitText(row, 90*time.Second, func(s string) bool { return strings.Contains(s, "meter7") })
	t.Logf("silent list: %s", got)
	if s := admin.text(`#silent tr[data-device="meter8"]`); s != "" {
		t.Errorf("the steady device is in the silent list: %q", s)
	}
	if s := admin.text(`#findings tr[data-kind="silent_device"][data-subject="meter7"]`); !strings.Contains(s, "not seen for") {
		t.Errorf("findings row: %q", s)
	}
	admin.do("device page", chromedp.Click(chromedp.CSS(row+" a")), chromedp.WaitVisible(chromedp.CSS("#dev-enabled")))
	if l := admin.location(); !strings.HasSuffix(l, "/t/iot/device/meter7") {
		t.Errorf("the link went to %s", l)
	}
}

// mqttDevice connects a registered device of tenant iot (password
// pw-<id>) with MQTT 5.
func mqttDevice(t *testing.T, p *testkit.Platform, id string) *paho.Client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", p.MQTTAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc, OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: id + "@iot", UsernameFlag: true, Password: []byte("pw-" + id), PasswordFlag: true})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("mqtt connect %s: %v %+v", id, err, ack)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}
