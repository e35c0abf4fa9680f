package mqtt

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// TestManyQoS1 pushes more messages than one credit window through.
func TestManyQoS1(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	c := mustV5(t, e, "c", true, 0)
	sub(t, c, paho.SubscribeOptions{Topic: "many/#", QoS: 1})
	p := mustV5(t, e, "p", true, 0)
	const n = 500
	for i := range n {
		pub(t, p, "many/x", 1, fmt.Sprint(i))
	}
	for i := range n {
		if m := c.next(t); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %q want %d", m.Payload, i)
		}
	}
}
