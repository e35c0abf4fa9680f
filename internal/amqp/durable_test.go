package amqp

import (
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/address"
)

// Closing a durable link (detach closed=true) ends the durable
// subscription: attaching again with the same container-id and link name
// starts a new one, without the messages published in between. Compare
// TestDurableSubscriptionResume, where the connection just goes away.
func TestDurableSubscriptionClosed(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "events", Type: address.Topic})
	opts := &goamqp.ReceiverOptions{Name: "sub1", SourceDurability: goamqp.DurabilityUnsettledState, SourceExpiryPolicy: goamqp.ExpiryPolicyNever, Credit: 10}
	c := e.dial(t, &goamqp.ConnOptions{ContainerID: "app-1"})
	s, err := c.NewSession(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	r1 := receiver(t, s, "events", opts)
	pub := sender(t, e.session(t, nil), "events", nil)
	send(t, pub, dataMsg("e1"))
	m := recv(t, r1)
	if err := r1.AcceptMessage(ctxT(t), m); err != nil {
		t.Fatal(err)
	}
	// go-amqp's Close detaches with closed=true and waits for our detach,
	// which is sent after the subscription is deleted.
	if err := r1.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { st, _ := e.r.AddressStats(ctxT(t), "default", "events"); return st.Consumers == 0 })
	send(t, pub, dataMsg("e2"))

	r2 := receiver(t, s, "events", opts)
	send(t, pub, dataMsg("e3"))
	if got := string(recv(t, r2).GetData()); got != "e3" {
		t.Fatalf("re-attached durable link got %q, want e3 (e2 was published while no subscription existed)", got)
	}
	noMessage(t, r2, 300*time.Millisecond)
}
