package mqtt

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRestartedNodeTakesOverAtOnce: a node restarted after a kill -9 (the
// same Config.NodeName, a new process) takes the sessions of its previous
// process over at once — that process is dead, since the new one holds
// the node's data directory — instead of waiting takeoverWait (5 s) for a
// node whose lease still looks alive. A node of another name still waits:
// that node may be alive and saving the session.
func TestRestartedNodeTakesOverAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("waits takeoverWait once")
	}
	named := func(n string) func(*Config) { return func(c *Config) { c.NodeName = n } }
	for _, tc := range []struct {
		name, restartedAs string
		fast              bool
	}{
		{"same node", "n1", true},
		{"other node", "n2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startEnv(t, t.TempDir(), named("n1"))
			c := mustV5(t, a, "keeper", true, 300)
			sub(t, c, paho.SubscribeOptions{Topic: "x", QoS: 1})
			a.srv.halt() // as kill -9: nothing more is written
			b := a.node(t, named(tc.restartedAs))
			start := time.Now()
			k := mustV5(t, b, "keeper", false, 300)
			took := time.Since(start)
			if !k.ack.SessionPresent {
				t.Fatal("session not resumed")
			}
			t.Logf("reconnect to the node restarted as %s took %s", tc.restartedAs, took.Round(time.Millisecond))
			if tc.fast && took >= takeoverWait-time.Second {
				t.Fatalf("took %s: waited for the killed process's lease", took)
			}
			if !tc.fast && took < takeoverWait-time.Second {
				t.Fatalf("took %s: another node's session taken without waiting", took)
			}
		})
	}
}
