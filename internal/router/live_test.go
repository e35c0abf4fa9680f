package router

import (
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/message"
)

// TestLiveOrderWhileCatchingUp: a live topic-space subscriber that runs
// out of credit gets its queued durable messages and the ones published
// while it catches up in publish order. (CI once saw one message out of
// order after a 10 s MQTT pause: a publish delivered directly while the
// pump was still handing over the last queued message.)
func TestLiveOrderWhileCatchingUp(t *testing.T) {
	e := newEnv(t)
	const n = 20000
	var mu sync.Mutex
	var got []int
	acks := make(chan *Delivery, n)
	c, err := e.r.Consume(ctxT(t), "default", "t/x", ConsumeOptions{}, func(d *Delivery) {
		// Deliveries run outside the consumer's lock; a slow hand-over
		// widens any window in which a newer message could overtake.
		i, _ := strconv.Atoi(string(d.Message.Body))
		if i%7 == 0 {
			time.Sleep(50 * time.Microsecond)
		} else {
			runtime.Gosched()
		}
		mu.Lock()
		got = append(got, i)
		mu.Unlock()
		acks <- d
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	c.AddCredit(16)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		k := 0
		for {
			var d *Delivery
			select {
			case d = <-acks:
			case <-stop:
				return
			}
			if k++; k%100 == 0 {
				time.Sleep(2 * time.Millisecond) // a short pause: credit runs out, messages queue
			}
			d.Settle(Outcome{Kind: Accepted})
			c.AddCredit(1)
		}
	}()

	p, err := e.r.Producer(ctxT(t), "default", "t/x")
	if err != nil {
		t.Fatal(err)
	}
	window := make(chan struct{}, 200)
	for i := range n {
		window <- struct{}{}
		p.Publish(&message.Message{Body: []byte(strconv.Itoa(i)), Durable: true}, func(o Outcome, err error) {
			if err != nil {
				t.Error(err)
			}
			<-window
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		l := len(got)
		mu.Unlock()
		if l == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d delivered", l, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, v := range got {
		if v != i {
			t.Fatalf("delivery %d is message %d", i, v)
		}
	}
}
