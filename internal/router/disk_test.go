package router

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/message"
)

// TestDiskFullRefusesStored (issue 11, disk full): while the engine's disk
// guard is on, stored messages are refused with a limit error (the
// front-ends' resource-limit-exceeded / 0x97) instead of reaching a full
// disk; consumers still receive and settle what is stored; live messages
// still flow; once space is back, publishes are accepted again without a
// restart.
func TestDiskFullRefusesStored(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Int64
	free.Store(1 << 40)
	e := startWith(t, engine.Config{DataDir: dir, DiskFreeLimit: 8 << 20,
		DiskFree: func(string) (int64, error) { return free.Load(), nil }})
	r, eng := e.r, e.eng

	mustAddr(t, r, "default", &address.Address{Name: "q", Type: address.Queue})
	mustAddr(t, r, "default", &address.Address{Name: "events", Type: address.Topic})
	publish(t, r, "default", "q", "before")

	free.Store(1 << 20)
	Eventually(t, eng.DiskAlarm)
	for _, name := range []string{"q", "events"} {
		_, err := r.Publish(ctxT(t), "default", name, msg("while full"))
		if !errors.Is(err, ErrLimitExceeded) || !errors.Is(err, ErrDiskFull) {
			t.Fatalf("%s: publish on a full disk: %v, want ErrDiskFull", name, err)
		}
	}
	// A live (non-durable) message to the topic space is not stored.
	if _, err := r.Publish(ctxT(t), "default", "live/x", &message.Message{Body: []byte("live")}); err != nil {
		t.Fatalf("live publish on a full disk: %v", err)
	}
	// What is stored can still be consumed and settled.
	_, col := consume(t, r, "default", "q", ConsumeOptions{}, 10)
	d := col.next(t)
	if string(d.Message.Body) != "before" {
		t.Fatalf("got %q", d.Message.Body)
	}
	d.Settle(Outcome{Kind: Accepted})
	backlogIs(t, r, "q", 0)

	free.Store(1 << 40)
	Eventually(t, func() bool { return !eng.DiskAlarm() })
	publish(t, r, "default", "q", "after")
	if d := col.next(t); string(d.Message.Body) != "after" {
		t.Fatalf("got %q", d.Message.Body)
	}
}
