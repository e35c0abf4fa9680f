//go:build conformance_pending

// MQTT conformance tests that fail today on throng (issue 10; the
// mosquitto subtests pass); the lead removes the build tag, moving each
// test to mqtt_test.go, when its fix lands. Run them with
//
//	go test -tags conformance_pending -run TestMQTT ./internal/conformance/
package conformance

import (
	"fmt"
	"testing"

	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/testkit"
)

// maxKeepAlive sets throng's maximum keep-alive through the settings table
// (docs/operations.md), under the names issue 10 item 11 suggests.
// A problem is reported in *errp (the option runs inside testkit.Start).
func maxKeepAlive(v string, errp *error) testkit.Option {
	return func(c *config.Config) {
		for _, s := range config.Settings {
			switch s.Key {
			case "mqtt.maxKeepAlive", "mqtt.max-keep-alive", "mqtt.keepAliveMax":
				if err := s.Set(c, v); err != nil {
					*errp = fmt.Errorf("%s: %v", s.Key, err)
				}
				return
			}
		}
		*errp = fmt.Errorf("no setting mqtt.maxKeepAlive in config.Settings (issue 10 item 11)")
	}
}

// TestMQTTServerKeepAlive (issue 10 item 11): a broker with a maximum
// keep-alive of 60 s answers an MQTT 5 client asking for 120 s with
// Server Keep Alive 60 in CONNACK, and one asking for 30 s without a
// different value. MQTT 5 only: 3.1.1 cannot be told another value
// (docs/conformance.md).
func TestMQTTServerKeepAlive(t *testing.T) {
	var optErr error
	eachBroker(t, brokerSetup{
		mosquitto: []string{"max_keepalive 60"},
		throng:    []testkit.Option{maxKeepAlive("60s", &optErr)},
	}, func(t *testing.T, b *broker) {
		if b.isThrong && optErr != nil {
			t.Fatal(optErr)
		}
		_, ack := b.client(t, "ka-long", m{"v": "5", "keepalive": 120})
		if ack.ServerKeepAlive == nil || *ack.ServerKeepAlive != 60 {
			t.Errorf("keep-alive 120 asked, maximum 60: CONNACK server keep alive %v; want 60", ack.ServerKeepAlive)
		}
		_, ack = b.client(t, "ka-short", m{"v": "5", "keepalive": 30})
		if ack.ServerKeepAlive != nil && *ack.ServerKeepAlive != 30 {
			t.Errorf("keep-alive 30 asked, maximum 60: CONNACK server keep alive %v; want none or 30", *ack.ServerKeepAlive)
		}
	})
}
