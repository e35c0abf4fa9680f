package amqp

import (
	"context"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/address"
)

// BenchmarkEndToEnd: one go-amqp sender → one go-amqp receiver through
// the server, unsettled (the sender waits for each outcome, up to a
// window of outstanding sends), 64-byte bodies. Reported as msg/s.
//
//	go test -run '^$' -bench EndToEnd -benchtime 20000x ./internal/amqp/
func BenchmarkEndToEnd(b *testing.B) {
	for _, typ := range []address.Type{address.Queue, address.Anycast} {
		b.Run("type="+string(typ)+"/size=64", func(b *testing.B) { benchEndToEnd(b, typ, 64) })
	}
}

func benchEndToEnd(b *testing.B, typ address.Type, size int) {
	e := startEnv(b, nil)
	e.addrDef(b, "default", &address.Address{Name: "bench", Type: typ})
	ctx := context.Background()
	rc := e.dial(b, nil)
	rs, _ := rc.NewSession(ctx, nil)
	rcv := receiver(b, rs, "bench", &goamqp.ReceiverOptions{Credit: 1000})
	sc := e.dial(b, nil)
	ss, _ := sc.NewSession(ctx, nil)
	snd := sender(b, ss, "bench", nil)
	body := make([]byte, size)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < b.N; i++ {
			m, err := rcv.Receive(ctx, nil)
			if err != nil {
				b.Error(err)
				return
			}
			if err := rcv.AcceptMessage(ctx, m); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	const window = 512
	receipts := make(chan goamqp.SendReceipt, window)
	errs := make(chan error, 1)
	go func() {
		for r := range receipts {
			if st, err := r.Wait(ctx); err != nil {
				errs <- err
				return
			} else if _, ok := st.(*goamqp.StateAccepted); !ok {
				errs <- &goamqp.Error{Condition: "unexpected-outcome"}
				return
			}
		}
		close(errs)
	}()
	for i := 0; i < b.N; i++ {
		r, err := snd.SendWithReceipt(ctx, goamqp.NewMessage(body), nil)
		if err != nil {
			b.Fatal(err)
		}
		receipts <- r
	}
	close(receipts)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}
