package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkRawWorkQueue measures the engine alone: async publish into a
// work-queue stream and a pull consumer acking every message. It is the
// ceiling for the router's queue path.
func BenchmarkRawWorkQueue(b *testing.B) {
	for _, ret := range []jetstream.RetentionPolicy{jetstream.WorkQueuePolicy, jetstream.LimitsPolicy} {
		b.Run(fmt.Sprintf("retention=%v", ret), func(b *testing.B) {
			e, err := Start(Config{DataDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Shutdown()
			e.EnsureAccount(AccountFor("x"))
			nc, _ := e.Connect(AccountFor("x"))
			nc2, _ := e.Connect(AccountFor("x"))
			js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
			js2, _ := jetstream.New(nc2)
			ctx := context.Background()
			js.CreateStream(ctx, jetstream.StreamConfig{Name: "Q", Subjects: []string{"q"}, Retention: ret})
			cons, _ := js2.CreateOrUpdateConsumer(ctx, "Q", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1 << 16})
			done := make(chan struct{})
			n := 0
			cc, _ := cons.Consume(func(m jetstream.Msg) {
				m.Ack()
				n++
				if n == b.N {
					close(done)
				}
			}, jetstream.PullMaxMessages(1024))
			defer cc.Stop()
			body := make([]byte, 64)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				js.PublishAsync("q", body)
			}
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				b.Fatal("timeout")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}
