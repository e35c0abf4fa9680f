package mqtt

import (
	"fmt"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// TestRouterCreditRefill reproduces a router bug (present at HEAD 4f29d28):
// a pull consumer stops delivering after its first batch when credit is
// granted again later. It limits MQTT QoS 1/2 subscriptions to their first
// 64 messages. Unskip once the router is fixed.
func TestRouterCreditRefill(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	ch := make(chan *router.Delivery, 1000)
	c, err := e.r.Consume(ctxT(t), "default", "rc/#", router.ConsumeOptions{StartTime: time.Now()}, func(d *router.Delivery) { ch <- d })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.AddCredit(64)
	for i := range 70 {
		if _, err := e.r.Publish(ctxT(t), "default", "rc/x", &message.Message{Body: []byte(fmt.Sprint(i)), Durable: true}); err != nil {
			t.Fatal(err)
		}
	}
	due := 0
	for i := range 70 {
		select {
		case d := <-ch:
			d.Settle(router.Outcome{Kind: router.Accepted})
			due++
			if due == 32 {
				c.AddCredit(32)
				due = 0
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("stuck after %d, credit %d", i, c.Credit())
		}
	}
}
