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

func (e *env) dumpCredit(t *testing.T, id string) {
	e.srv.mu.Lock()
	c := e.srv.clients["default\x00"+id]
	e.srv.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("inflight %d pending %d recvMax %d", len(c.inflight), len(c.pending), c.recvMax)
	for _, s := range c.subs {
		for _, r := range s.refs {
			t.Logf("ref window %d due %d credit %d", r.window, r.due, r.rc.Credit())
		}
	}
}
