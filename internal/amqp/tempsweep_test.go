package amqp

import (
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/router"
)

// The temporary addresses of a dynamic source (reply address) and of a
// dynamic target (what a JMS temporary queue is) stay while their links
// live, consumer or not, and are swept by another node once the node
// serving them has crashed without detaching them.
func TestTempSweepDynamicAddressesOfCrashedNode(t *testing.T) {
	e := startEnv(t, nil) // the AMQP server runs on e.r: the node that will crash
	// Another node on the same engine, sweeping by hand with a grace
	// period short enough that two sweeps finding an address absent
	// delete it.
	other, err := router.New(ctxT(t), router.Config{Engine: e.eng, Store: e.store, TempSweepInterval: -1, TempGrace: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)

	s := e.session(t, nil)
	replies := receiver(t, s, "", &goamqp.ReceiverOptions{DynamicAddress: true, Credit: 10})
	tmpQueue := sender(t, s, "", &goamqp.SenderOptions{DynamicAddress: true})
	names := []string{replies.Address(), tmpQueue.Address()}
	for _, n := range names {
		if n == "" || n == tempPrefix {
			t.Fatalf("dynamic addresses %q", names)
		}
	}
	defined := func(n string) bool { _, ok := e.store.Address("default", n); return ok }

	for range 3 {
		if n := other.SweepTemps(ctxT(t)); n != 0 {
			t.Fatalf("a sweep deleted %d temporary addresses of live links", n)
		}
	}
	for _, n := range names {
		if !defined(n) {
			t.Fatalf("%s deleted while its link is attached", n)
		}
	}

	// The crash: the serving node's engine connections go; the links are
	// never detached.
	e.r.Close()
	eventually(t, func() bool {
		other.SweepTemps(ctxT(t))
		return !defined(names[0]) && !defined(names[1])
	})
}
