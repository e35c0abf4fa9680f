package router

import (
	"testing"
	"time"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/tenant"
)

// TestLiveOutRateSeveralConsumers: the tenant's maxMessagesOutPerSecond
// bounds at-most-once live deliveries to all its consumers together when
// one publish reaches several of them (deliverLive reads the limit once
// per publish, session 15): 60 messages to 3 subscribers at 5/s deliver
// about the rate's burst, not 180, and the rest is dropped.
func TestLiveOutRateSeveralConsumers(t *testing.T) {
	e := newEnv(t)
	if err := e.r.CreateTenant(ctxT(t), &tenant.Tenant{Name: "slow", Limits: tenant.Limits{MaxMessagesOutPerSecond: 5}}); err != nil {
		t.Fatal(err)
	}
	var cols []*collector
	for range 3 {
		_, col := consume(t, e.r, "slow", "ts/x", ConsumeOptions{}, 1000)
		cols = append(cols, col)
	}
	p, err := e.r.Producer(ctxT(t), "slow", "ts/x")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 60 {
		p.Publish(&message.Message{Body: []byte("x")}, func(Outcome, error) {})
	}
	elapsed := time.Since(start)
	got := 0
	for _, col := range cols {
		got += len(col.ch) // local live deliveries happen within Publish
	}
	if limit := 5 + int(elapsed.Seconds()*5) + 1; got == 0 || got > limit {
		t.Fatalf("%d of 180 deliveries in %s at 5/s (want 1..%d)", got, elapsed, limit)
	}
}
