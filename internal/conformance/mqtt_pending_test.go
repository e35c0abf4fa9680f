//go:build conformance_pending

// MQTT conformance tests that fail today on throng (issue 10; the
// mosquitto subtests pass); the lead removes the build tag, moving each
// test to mqtt_test.go, when its fix lands. Run them with
//
//	go test -tags conformance_pending -run TestMQTT ./internal/conformance/
package conformance

import (
	"fmt"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/testkit"
)

// TestMQTTDollarTopics (issue 10 item 9): an anonymous client may use
// application topics starting with `$` (not `$SYS/`): a QoS 1 publish to
// `$TopicA/B` is acknowledged with success (MQTT 5) and the 3.1.1
// connection stays open; a subscriber of the exact name gets both.
func TestMQTTDollarTopics(t *testing.T) {
	eachBroker(t, brokerSetup{}, func(t *testing.T, b *broker) {
		sub, _ := b.client(t, "dollar-sub", m{"v": "5"})
		if g := sub.do("sub", m{"subs": [][]any{{"$TopicA/B", 1}}}).Granted; len(g) != 1 || g[0] != 1 {
			t.Fatalf("SUBACK %v", g)
		}
		p5, _ := b.client(t, "dollar-pub5", m{"v": "5"})
		if r := p5.do("pub", m{"topic": "$TopicA/B", "qos": 1, "payload": "v5"}); len(r.RCs) != 1 || rc(r.RCs[0]) != "0x00" {
			t.Errorf("MQTT 5 QoS 1 publish to $TopicA/B: PUBACK %v", rc(r.RCs[0]))
		}
		p3, _ := b.client(t, "dollar-pub3", m{"v": "311"})
		if r := p3.do("pub", m{"topic": "$TopicA/B", "qos": 1, "payload": "v311"}); !r.Connected || r.RCs[0] == nil {
			t.Errorf("MQTT 3.1.1 QoS 1 publish to $TopicA/B: connected %v, PUBACK %v", r.Connected, rc(r.RCs[0]))
		}
		// mosquitto_pub, the CLI users try first.
		out := b.cli(t, "mosquitto_pub", "-V", "5", "-q", "1", "-t", "$TopicA/B", "-m", "cli", "-d")
		if !strings.Contains(out, "PUBACK") || strings.Contains(out, "failed") {
			t.Errorf("mosquitto_pub -q 1 -t $TopicA/B:\n%s", out)
		}
		got := sub.do("recv", m{"count": 3, "timeout": 5})
		if !sameSet(payloads(got.Msgs), []string{"v5", "v311", "cli"}) {
			t.Errorf("subscriber of $TopicA/B got %v", payloads(got.Msgs))
		}
	})
}

// TestMQTTSharedSubscriptionEveryQoS (issue 10 item 8): `$share/g/x`
// receives publishes of every QoS, each by exactly one member.
func TestMQTTSharedSubscriptionEveryQoS(t *testing.T) {
	eachBroker(t, brokerSetup{}, func(t *testing.T, b *broker) {
		var members []*agent
		for _, id := range []string{"member1", "member2"} {
			a, _ := b.client(t, id, m{"v": "5"})
			a.do("sub", m{"subs": [][]any{{"$share/g/shared/x", 2}}})
			members = append(members, a)
		}
		pub, _ := b.client(t, "shared-pub", m{"v": "5"})
		for q := 0; q <= 2; q++ {
			pub.do("pub", m{"topic": "shared/x", "qos": q, "count": 10, "prefix": fmt.Sprintf("q%d-", q)})
		}
		var all []string
		per := map[string]int{}
		for i, a := range members {
			got := a.do("recv", m{"quiet": true, "timeout": 2})
			for _, x := range got.Msgs {
				all = append(all, x.Payload)
			}
			per[fmt.Sprint("member", i+1)] = len(got.Msgs)
		}
		for q := 0; q <= 2; q++ {
			prefix := fmt.Sprintf("q%d-", q)
			var these []string
			for _, p := range all {
				if strings.HasPrefix(p, prefix) {
					these = append(these, p)
				}
			}
			if len(these) != 10 || !sameSet(these, names(prefix, 0, 10)) {
				t.Errorf("QoS %d publishes reached the group as %v; want each of %s0..9 exactly once (per member: %v)", q, sorted(these), prefix, per)
			}
		}
	})
}

// TestMQTTOverlappingSubscriptions (issue 10 item 10): one session with
// `ov/a` (id 2) and `ov/a/#` (id 3). throng sends one copy carrying both
// identifiers; mosquitto sends one copy per subscription, each with its
// own identifier (MQTT 5 section 3.3.4 allows both; docs/conformance.md).
func TestMQTTOverlappingSubscriptions(t *testing.T) {
	eachBroker(t, brokerSetup{}, func(t *testing.T, b *broker) {
		s, _ := b.client(t, "overlap", m{"v": "5"})
		s.do("sub", m{"subs": [][]any{{"ov/a", 1, 2}}})
		s.do("sub", m{"subs": [][]any{{"ov/a/#", 1, 3}}})
		pub, _ := b.client(t, "overlap-pub", m{"v": "5"})
		pub.do("pub", m{"topic": "ov/a", "qos": 1, "payload": "x"})
		got := s.do("recv", m{"quiet": true, "timeout": 1.5}).Msgs
		var desc []string
		for _, x := range got {
			desc = append(desc, fmt.Sprintf("%s qos%d ids%v", x.Payload, x.QoS, x.SubIDs))
		}
		if b.isThrong {
			if len(got) != 1 || fmt.Sprint(sortedInts(got[0].SubIDs)) != "[2 3]" || got[0].QoS != 1 {
				t.Fatalf("got %v; want one copy at QoS 1 with subscription identifiers 2 and 3", desc)
			}
			return
		}
		if len(got) != 2 || fmt.Sprint(sortedInts(append(got[0].SubIDs, got[1].SubIDs...))) != "[2 3]" {
			t.Fatalf("mosquitto sent %v; want one copy per subscription, ids 2 and 3", desc)
		}
	})
}

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
