package testkit_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Hono devices' QoS 0 telemetry over the tenant's message rate is
// backpressured like any QoS 0 publish (internal/mqtt ratepause.go,
// evread.go): a device writing telemetry as fast as its socket takes it
// is not read for the time the rate needs for what was refused, over
// plain TCP (the epoll loop) and over TLS (its reader goroutine). The
// node parses and refuses about the rate's worth a second instead of
// the line rate (rate 100/s, load ~25: 90/s over TCP and 202/s over TLS;
// without the pause 61,696/s over TCP).
func TestHonoTelemetryFloodIsPaused(t *testing.T) {
	const rate = 100
	e := startHono(t)
	// The IoT tenant gets a message rate (its IoT settings stay).
	resp := e.Do(t, "PUT", "/api/tenants/iot", strings.NewReader(fmt.Sprintf(`{"name":"iot","limits":{"maxMessagesInPerSecond":%d}}`, rate)))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT tenant: %d %s", resp.StatusCode, body)
	}
	pool := x509.NewCertPool()
	pool.AddCert(e.serverCA.cert)
	for _, tr := range []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"tcp", func() (net.Conn, error) { return net.DialTimeout("tcp", e.MQTTAddr, 10*time.Second) }},
		{"tls", func() (net.Conn, error) {
			return tls.Dial("tcp", e.mqtts, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})
		}},
	} {
		nc, err := tr.dial()
		if err != nil {
			t.Fatal(err)
		}
		if err := rawConnect(nc, "sensor1@iot", "secret1", "flood-"+tr.name); err != nil {
			t.Fatalf("%s: %v", tr.name, err)
		}
		go func() { _, _ = io.Copy(io.Discard, nc) }()
		var batch []byte
		for range 32 {
			batch = append(batch, rawPublish0("telemetry", make([]byte, 64))...)
		}
		flooding := make(chan struct{})
		go func() {
			defer close(flooding)
			for {
				if _, err := nc.Write(batch); err != nil {
					return
				}
			}
		}()
		refused := func() float64 { return quotaRefused(t, e.Platform, "iot", "messagesIn") }
		time.Sleep(time.Second) // the burst and the first buffers
		r0, t0 := refused(), time.Now()
		time.Sleep(3 * time.Second)
		perSec := (refused() - r0) / time.Since(t0).Seconds()
		nc.Close()
		<-flooding
		t.Logf("%s: refused %.0f/s (rate %d/s)", tr.name, perSec, rate)
		if perSec == 0 {
			t.Fatalf("%s: nothing refused: the flood did not reach the node", tr.name)
		}
		if perSec > 10*rate {
			t.Fatalf("%s: refused %.0f telemetry messages a second over a rate of %d: the device is not paused", tr.name, perSec, rate)
		}
	}
}

// rawConnect sends an MQTT 3.1.1 CONNECT (clean session) and waits for
// an accepting CONNACK.
func rawConnect(c net.Conn, user, password, clientID string) error {
	str := func(b []byte, s string) []byte { return append(append(b, byte(len(s)>>8), byte(len(s))), s...) }
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 60}
	body = str(str(str(body, clientID), user), password)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		return err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		return fmt.Errorf("CONNACK % x %v", ack, err)
	}
	return nil
}

// rawPublish0 encodes a QoS 0 PUBLISH (body under 128 bytes).
func rawPublish0(topic string, payload []byte) []byte {
	body := append([]byte{byte(len(topic) >> 8), byte(len(topic))}, topic...)
	body = append(body, payload...)
	return append([]byte{0x30, byte(len(body))}, body...)
}
