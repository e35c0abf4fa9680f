package mqtt

import (
	"bytes"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func TestConnectAssignedIDAndPubSubProperties(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	c := mustV5(t, e, "", true, 0)
	if c.ack.Properties == nil || c.ack.Properties.AssignedClientID == "" {
		t.Fatalf("no assigned client id: %+v", c.ack.Properties)
	}
	if sa := sub(t, c, paho.SubscribeOptions{Topic: "a/+", QoS: 1}); sa.Reasons[0] != 1 {
		t.Fatalf("suback %v", sa.Reasons)
	}
	p := mustV5(t, e, "pub", true, 0)
	exp := uint32(60)
	pf := byte(1)
	pr, err := p.Publish(ctxT(t), &paho.Publish{Topic: "a/b", QoS: 1, Payload: []byte("hello"), Properties: &paho.PublishProperties{
		ContentType: "text/plain", ResponseTopic: "reply/here", CorrelationData: []byte{1, 2, 3},
		MessageExpiry: &exp, PayloadFormat: &pf,
		User: paho.UserProperties{{Key: "k", Value: "v"}},
	}})
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish: %v %+v", err, pr)
	}
	m := c.next(t)
	if m.Topic != "a/b" || string(m.Payload) != "hello" || m.QoS != 1 {
		t.Fatalf("got %s %q qos %d", m.Topic, m.Payload, m.QoS)
	}
	pp := m.Properties
	if pp.ContentType != "text/plain" || pp.ResponseTopic != "reply/here" || !bytes.Equal(pp.CorrelationData, []byte{1, 2, 3}) ||
		pp.User.Get("k") != "v" || pp.MessageExpiry == nil || *pp.MessageExpiry > 60 || pp.PayloadFormat == nil || *pp.PayloadFormat != 1 {
		t.Fatalf("properties lost: %+v", pp)
	}
	if len(pp.User) != 1 {
		t.Fatalf("internal properties leaked: %+v", pp.User)
	}
	// QoS 0 publish reaches a QoS 1 subscription at QoS 0.
	pub(t, p, "a/c", 0, "zero")
	if m := c.next(t); string(m.Payload) != "zero" || m.QoS != 0 {
		t.Fatalf("got %q qos %d", m.Payload, m.QoS)
	}
	// QoS 2 end to end.
	if sa := sub(t, c, paho.SubscribeOptions{Topic: "q2/#", QoS: 2}); sa.Reasons[0] != 2 {
		t.Fatalf("suback %v", sa.Reasons)
	}
	if pr := pub(t, p, "q2/x", 2, "two"); pr.ReasonCode != 0 {
		t.Fatalf("pubcomp %+v", pr)
	}
	if m := c.next(t); string(m.Payload) != "two" || m.QoS != 2 {
		t.Fatalf("got %q qos %d", m.Payload, m.QoS)
	}
	c.none(t, 200*time.Millisecond)
}

func TestDollarTopicsAndNoLocal(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	c := mustV5(t, e, "c", true, 0)
	sub(t, c, paho.SubscribeOptions{Topic: "#", QoS: 0}, paho.SubscribeOptions{Topic: "nl/x", QoS: 1, NoLocal: true})
	pub(t, c, "nl/x", 1, "mine") // matches "#" (delivered) and nl/x (no-local: not)
	if m := c.next(t); string(m.Payload) != "mine" {
		t.Fatalf("got %q", m.Payload)
	}
	c.none(t, 300*time.Millisecond)
	// $-topics are not matched by a leading wildcard; publishing to $SYS is refused.
	pr := pub(t, c, "$SYS/x", 1, "sys")
	if pr.ReasonCode != 0x87 {
		t.Fatalf("publish to $SYS: reason %#x", pr.ReasonCode)
	}
	c.none(t, 200*time.Millisecond)
}

func TestRetained(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	p := mustV5(t, e, "p", true, 0)
	if _, err := p.Publish(ctxT(t), &paho.Publish{Topic: "r/1", QoS: 1, Retain: true, Payload: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	c := mustV5(t, e, "c", true, 0)
	sub(t, c, paho.SubscribeOptions{Topic: "r/+", QoS: 1})
	m := c.next(t)
	if string(m.Payload) != "kept" || !m.Retain {
		t.Fatalf("got %q retain=%v", m.Payload, m.Retain)
	}
	// Retain handling 2: none on subscribe.
	c2 := mustV5(t, e, "c2", true, 0)
	sub(t, c2, paho.SubscribeOptions{Topic: "r/#", QoS: 1, RetainHandling: 2, RetainAsPublished: true})
	c2.none(t, 200*time.Millisecond)
	// Retain-as-published keeps the flag on live delivery; c's does not.
	if _, err := p.Publish(ctxT(t), &paho.Publish{Topic: "r/2", QoS: 1, Retain: true, Payload: []byte("live")}); err != nil {
		t.Fatal(err)
	}
	if m := c2.next(t); !m.Retain {
		t.Fatal("retain-as-published lost the flag")
	}
	if m := c.next(t); m.Retain {
		t.Fatal("retain flag on a live delivery without retain-as-published")
	}
	// An empty retained payload deletes it.
	if _, err := p.Publish(ctxT(t), &paho.Publish{Topic: "r/1", QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	c3 := mustV5(t, e, "c3", true, 0)
	sub(t, c3, paho.SubscribeOptions{Topic: "r/1", QoS: 1})
	c3.none(t, 300*time.Millisecond)
}
