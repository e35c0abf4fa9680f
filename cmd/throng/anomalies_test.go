package main

import (
	"context"
	"strings"
	"testing"
	"time"

	mqtt311 "github.com/eclipse/paho.mqtt.golang"

	"github.com/throngmq/throng/internal/testkit"
)

// TestCLIAnomalies: throng anomalies lists a publishing MQTT client (real
// paho.mqtt.golang client, its own connection) among the top talkers, with
// the findings table and -o json; an unknown tenant is an error.
func TestCLIAnomalies(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)
	mustCLI(t, env, 0, "user", "create", "talker", "--user-password", "pw-talker", "--permission", "t/#=send,receive")
	o := mqtt311.NewClientOptions().AddBroker("tcp://" + p.MQTTAddr).SetClientID("loud-one").
		SetUsername("talker").SetPassword("pw-talker").SetProtocolVersion(4).SetAutoReconnect(false)
	c := mqtt311.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			c.Publish("t/x", 0, false, "hello").WaitTimeout(time.Second)
			time.Sleep(2 * time.Millisecond)
		}
	}()

	deadline := time.Now().Add(time.Minute)
	for {
		out := mustCLI(t, env, 0, "anomalies").stdout
		head, talkers, _ := strings.Cut(out, "\n\n")
		if head != "no findings" && !strings.HasPrefix(head, "KIND") {
			t.Fatalf("findings part: %q", head)
		}
		if !strings.HasPrefix(talkers, "no talkers") {
			rows := columns(t, talkers)
			if len(rows) > 0 && rows[0][3] == "loud-one" && rows[0][1] != "" && rows[0][2] == "mqtt3" && rows[0][4] == "talker" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the publishing client is not a top talker within a minute:\n%s", out)
		}
		time.Sleep(time.Second)
	}
	if out := mustCLI(t, env, 0, "anomalies", "--tenant", "default", "-o", "json").stdout; !strings.Contains(out, `"topTalkers"`) || !strings.Contains(out, `"findings"`) {
		t.Fatalf("-o json: %s", out)
	}
	if r := mustCLI(t, env, 1, "anomalies", "--tenant", "nosuch"); !strings.Contains(r.stderr, "nosuch") && !strings.Contains(r.stderr, "not found") {
		t.Fatalf("unknown tenant: %q", r.stderr)
	}
}
