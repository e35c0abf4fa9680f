package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	mqtt311 "github.com/eclipse/paho.mqtt.golang"

	"github.com/throngmq/throng/internal/testkit"
)

// TestCLIConnectionsAndQueueActions: throng connection list|get|close and
// address peek|move|purge against a platform, with a real MQTT 3.1.1
// client (paho.mqtt.golang) on its own connection.
func TestCLIConnectionsAndQueueActions(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)
	mustCLI(t, env, 0, "user", "create", "app1", "--user-password", "pw-app1", "--permission", "jobs/#=send,receive")
	mustCLI(t, env, 0, "address", "create", "jobs/todo", "--type", "queue")
	mustCLI(t, env, 0, "address", "create", "jobs/dlq", "--type", "queue")

	lost := make(chan struct{})
	o := mqtt311.NewClientOptions().AddBroker("tcp://" + p.MQTTAddr).SetClientID("cli-dev").
		SetUsername("app1").SetPassword("pw-app1").SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectionLostHandler(func(mqtt311.Client, error) { close(lost) })
	c := mqtt311.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	for i := range 3 {
		if tok := c.Publish("jobs/dlq", 1, false, fmt.Sprint("job ", i)); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}

	rows := columns(t, mustCLI(t, env, 0, "connection", "list").stdout)
	if len(rows) != 1 || rows[0][2] != "mqtt3" || rows[0][3] != "cli-dev" || rows[0][4] != "app1" || rows[0][6] != "3" {
		t.Fatalf("connection list: %q", rows)
	}
	id := rows[0][0]
	if out := mustCLI(t, env, 0, "connection", "get", id).stdout; !strings.Contains(out, "cli-dev") || !strings.Contains(out, "mqtt3") {
		t.Fatalf("connection get: %s", out)
	}
	if rows := columns(t, mustCLI(t, env, 0, "address", "peek", "jobs/dlq", "--limit", "2").stdout); len(rows) != 2 || rows[0][4] != `"job 0"` {
		t.Fatalf("peek: %q", rows)
	}
	if out := mustCLI(t, env, 0, "address", "move", "jobs/dlq", "--to", "jobs/todo").stdout; !strings.Contains(out, "3 messages moved") {
		t.Fatalf("move: %s", out)
	}
	if out := mustCLI(t, env, 0, "address", "purge", "jobs/todo").stdout; !strings.Contains(out, "3 messages removed") {
		t.Fatalf("purge: %s", out)
	}
	if r := mustCLI(t, env, 2, "address", "move", "jobs/dlq"); !strings.Contains(r.stderr, "--to") {
		t.Fatalf("move without --to: %s", r.stderr)
	}
	mustCLI(t, env, 0, "connection", "close", id)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the client was not disconnected")
	}
	if r := mustCLI(t, env, 1, "connection", "get", "nope-1"); !strings.Contains(r.stderr, "404") {
		t.Fatalf("get unknown: %s", r.stderr)
	}
}
