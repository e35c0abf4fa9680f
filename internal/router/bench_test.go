package router

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

// The benchmarks measure the router in-process with the real engine: one
// producer publishing asynchronously (a window of in-flight messages, as a
// front-end does) and one consumer settling every delivery. b.N messages
// per run; msg/s is reported.

const benchWindow = 1024

func benchSizes(b *testing.B, run func(b *testing.B, size int)) {
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) { run(b, size) })
	}
}

// pipe publishes b.N messages with at most benchWindow in flight and waits
// until the consumer has seen them all.
func pipe(b *testing.B, e *env, name string, size int, got *atomic.Int64) {
	p, err := e.r.Producer(context.Background(), "default", name)
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, size)
	sem := make(chan struct{}, benchWindow)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		p.Publish(&message.Message{Body: body, Durable: true}, func(o Outcome, err error) {
			if err != nil {
				b.Error(err)
			}
			<-sem
		})
	}
	for got.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// benchSettled runs pipe against a defined address with one consumer
// that accepts every delivery and gives its credit back.
func benchSettled(b *testing.B, a *address.Address, opts ConsumeOptions) {
	benchSizes(b, func(b *testing.B, size int) {
		e := newEnv(b)
		mustAddr(b, e.r, "default", a)
		var got atomic.Int64
		var c *Consumer
		c, err := e.r.Consume(context.Background(), "default", a.Name, opts, func(d *Delivery) {
			d.Settle(Outcome{Kind: Accepted})
			got.Add(1)
			c.AddCredit(1)
		})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		c.AddCredit(benchWindow)
		pipe(b, e, a.Name, size, &got)
	})
}

func BenchmarkQueue(b *testing.B) {
	benchSettled(b, &address.Address{Name: "bench", Type: address.Queue}, ConsumeOptions{})
}

func BenchmarkTopic(b *testing.B) {
	benchSettled(b, &address.Address{Name: "bench", Type: address.Topic}, ConsumeOptions{Durable: "b"})
}

func BenchmarkAnycast(b *testing.B) {
	benchSettled(b, &address.Address{Name: "bench", Type: address.Anycast}, ConsumeOptions{})
}

// BenchmarkMulticast publishes at-most-once; the consumer has ample
// credit. Delivered messages are counted; the run waits for all of them
// (drops would show as a hang, and fail via Eventually).
func BenchmarkMulticast(b *testing.B) {
	benchSizes(b, func(b *testing.B, size int) {
		e := newEnv(b)
		mustAddr(b, e.r, "default", &address.Address{Name: "bench", Type: address.Multicast})
		var got atomic.Int64
		c, err := e.r.Consume(context.Background(), "default", "bench", ConsumeOptions{}, func(d *Delivery) {
			got.Add(1)
		})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		c.AddCredit(1 << 30)
		p, err := e.r.Producer(context.Background(), "default", "bench")
		if err != nil {
			b.Fatal(err)
		}
		body := make([]byte, size)
		b.SetBytes(int64(size))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			p.Publish(&message.Message{Body: body}, func(Outcome, error) {})
			if i%4096 == 4095 {
				// keep the consumer within its pending limits
				for got.Load() < int64(i-32768) {
					Eventually(b, func() bool { return got.Load() >= int64(i-32768) })
				}
			}
		}
		Eventually(b, func() bool { return got.Load() >= int64(b.N) })
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
	})
}

// BenchmarkTopicSpaceLive: durable (QoS 1/2) topic-space messages to one
// live consumer on this node, unnamed (Publish) and named (PublishOnce,
// as an MQTT QoS 2 publisher's: once.go's memory of names).
func BenchmarkTopicSpaceLive(b *testing.B) {
	for _, named := range []bool{false, true} {
		b.Run(fmt.Sprintf("named=%v", named), func(b *testing.B) {
			e := newEnv(b)
			var got atomic.Int64
			var c *Consumer
			c, err := e.r.Consume(context.Background(), "default", "bench/live", ConsumeOptions{}, func(d *Delivery) {
				d.Settle(Outcome{Kind: Accepted})
				got.Add(1)
				c.AddCredit(1)
			})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.AddCredit(benchWindow)
			p, err := e.r.Producer(context.Background(), "default", "bench/live")
			if err != nil {
				b.Fatal(err)
			}
			body := make([]byte, 64)
			sem := make(chan struct{}, benchWindow)
			done := func(o Outcome, err error) {
				if err != nil {
					b.Error(err)
				}
				<-sem
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sem <- struct{}{}
				m := &message.Message{Body: body, Durable: true}
				if named {
					p.PublishOnce(m, "q2.benchsequence."+strconv.FormatUint(uint64(i+1), 36), done)
				} else {
					p.Publish(m, done)
				}
			}
			for got.Load() < int64(b.N) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}
