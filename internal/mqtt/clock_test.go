package mqtt

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/clock"
)

// TestExpiryAcrossClockJumps (issue 11, docs/reliability.md "Wall-clock
// jumps"): session expiry and message expiry follow the node's wall
// clock. Forward by 10 minutes, a session of 2 minutes has expired and a
// message of an hour has 50 minutes left; back again, a session that
// disconnected at +10 minutes has not expired (nothing expires early).
func TestExpiryAcrossClockJumps(t *testing.T) {
	t.Cleanup(func() { clock.SetOffset(0) })
	e := startEnv(t, t.TempDir(), nil)
	c := mustV5(t, e, "j", true, 120)
	sub(t, c, paho.SubscribeOptions{Topic: "jx/#", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	eventually(t, "offline", func() bool { return !e.online("j") })
	k := mustV5(t, e, "keep", true, 3600)
	sub(t, k, paho.SubscribeOptions{Topic: "jx/#", QoS: 1})
	_ = k.Disconnect(&paho.Disconnect{})
	eventually(t, "offline", func() bool { return !e.online("keep") })
	p := mustV5(t, e, "p", true, 0)
	exp := uint32(3600)
	if _, err := p.Publish(ctxT(t), &paho.Publish{Topic: "jx/1", QoS: 1, Payload: []byte("hour"),
		Properties: &paho.PublishProperties{MessageExpiry: &exp}}); err != nil {
		t.Fatal(err)
	}

	clock.SetOffset(10 * time.Minute)
	c = mustV5(t, e, "j", false, 120)
	if c.ack.SessionPresent {
		t.Fatal("a session of 2 minutes is present 10 minutes after it disconnected")
	}
	k = mustV5(t, e, "keep", false, 3600)
	if !k.ack.SessionPresent {
		t.Fatal("a session of an hour is gone 10 minutes after it disconnected")
	}
	m := k.next(t)
	if string(m.Payload) != "hour" || m.Properties == nil || m.Properties.MessageExpiry == nil {
		t.Fatalf("got %q %+v", m.Payload, m.Properties)
	}
	if left := *m.Properties.MessageExpiry; left < 49*60 || left > 50*60 {
		t.Fatalf("message expiry interval %d s after a jump of 10 minutes, want about 3000", left)
	}
	_ = c.Disconnect(&paho.Disconnect{}) // at +10 min
	eventually(t, "offline", func() bool { return !e.online("j") })

	clock.SetOffset(0)
	c = mustV5(t, e, "j", false, 120)
	if !c.ack.SessionPresent {
		t.Fatal("a session of 2 minutes expired early after the clock went back")
	}
}
