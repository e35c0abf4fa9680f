package mqtt

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestSysTopics: a subscriber of $SYS/# sees the broker statistics, and
// "#" alone does not match them [MQTT-4.7.2-1].
func TestSysTopics(t *testing.T) {
	e := startEnv(t, t.TempDir(), func(c *Config) { c.SysInterval = 200 * time.Millisecond })
	all := mustV5(t, e, "all", true, 0)
	sub(t, all, paho.SubscribeOptions{Topic: "#", QoS: 0})
	s := mustV5(t, e, "sys", true, 0)
	sub(t, s, paho.SubscribeOptions{Topic: "$SYS/#", QoS: 0})
	pub(t, s, "some/topic", 1, "x")

	want := map[string]bool{
		"$SYS/broker/clients/connected": false, "$SYS/broker/messages/received": false,
		"$SYS/broker/messages/sent": false, "$SYS/broker/uptime": false, "$SYS/broker/version": false,
	}
	deadline := time.After(10 * time.Second)
	for left := len(want); left > 0; {
		select {
		case m := <-s.msgs:
			seen, ok := want[m.Topic]
			if !ok {
				t.Fatalf("unexpected topic %q", m.Topic)
			}
			v := string(m.Payload)
			switch m.Topic {
			case "$SYS/broker/clients/connected":
				if n, err := strconv.Atoi(v); err != nil || n != 2 {
					continue // an earlier round may predate the second client
				}
			case "$SYS/broker/messages/received":
				if n, err := strconv.Atoi(v); err != nil || n < 1 {
					continue
				}
			case "$SYS/broker/uptime":
				if !strings.HasSuffix(v, " seconds") {
					t.Fatalf("uptime %q", v)
				}
			}
			if !seen {
				want[m.Topic] = true
				left--
			}
		case <-deadline:
			t.Fatalf("$SYS topics not all seen: %v", want)
		}
	}
	for {
		select {
		case m := <-all.msgs:
			if strings.HasPrefix(m.Topic, "$") {
				t.Fatalf("# matched %q", m.Topic)
			}
			continue
		default:
		}
		break
	}
	// Retained: a late subscriber gets the last values at once.
	late := mustV5(t, e, "late", true, 0)
	sub(t, late, paho.SubscribeOptions{Topic: "$SYS/broker/+", QoS: 0})
	for {
		m := late.next(t)
		if m.Topic == "$SYS/broker/version" {
			if !m.Retain || string(m.Payload) != "throng" {
				t.Fatalf("got %q retain %v", m.Payload, m.Retain)
			}
			break
		}
	}
}
