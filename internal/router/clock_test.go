package router

import (
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/message"
)

// TestExpiryAcrossWallClockJumps (issue 11, docs/reliability.md
// "Wall-clock jumps"): a message's expiry is a wall-clock time fixed when
// it is published. After a jump forward, stored messages whose expiry the
// new wall clock has passed are not delivered, the others are; after a
// jump back nothing expires early and nothing is lost.
func TestExpiryAcrossWallClockJumps(t *testing.T) {
	t.Cleanup(func() { clock.SetOffset(0) })
	e := newEnv(t)
	ttl := func(body string, d time.Duration) {
		t.Helper()
		m := msg(body)
		m.TTL = d
		if _, err := e.r.Publish(ctxT(t), "default", "jump", m); err != nil {
			t.Fatal(err)
		}
	}
	mustAddr(t, e.r, "default", &address.Address{Name: "jump", Type: address.Queue})

	// Forward by 2 h: the message of 1 h has expired, the one of 3 h
	// and the one without a TTL have not.
	ttl("1h", time.Hour)
	ttl("3h", 3*time.Hour)
	publish(t, e.r, "default", "jump", "none")
	clock.SetOffset(2 * time.Hour)
	c, col := consume(t, e.r, "default", "jump", ConsumeOptions{}, 10)
	for _, want := range []string{"3h", "none"} {
		d := col.next(t)
		if string(d.Message.Body) != want {
			t.Fatalf("after a jump of +2h got %q, want %q", d.Message.Body, want)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	col.none(t, 300*time.Millisecond)
	c.Close()

	// Published at +2 h, then back by 3 h (to -1 h): nothing expires
	// early, not even a message of a few seconds.
	ttl("30m", 30*time.Minute)
	ttl("5s", 5*time.Second)
	clock.SetOffset(-time.Hour)
	_, col = consume(t, e.r, "default", "jump", ConsumeOptions{}, 10)
	for _, want := range []string{"30m", "5s"} {
		d := col.next(t)
		if string(d.Message.Body) != want {
			t.Fatalf("after a jump of -3h got %q, want %q", d.Message.Body, want)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	col.none(t, 300*time.Millisecond)

	// Retained messages too: one of 1 h is gone after +2 h.
	clock.SetOffset(0)
	rm := msg("retained")
	rm.Expiry = clock.Now().Add(time.Hour)
	if err := e.r.Retain(ctxT(t), "default", "jump/r", rm); err != nil {
		t.Fatal(err)
	}
	got := func() (n int) {
		if err := e.r.Retained(ctxT(t), "default", "jump/#", func(string, *message.Message) { n++ }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := got(); n != 1 {
		t.Fatalf("%d retained messages, want 1", n)
	}
	clock.SetOffset(2 * time.Hour)
	if n := got(); n != 0 {
		t.Fatalf("%d retained messages after +2h, want 0 (expired)", n)
	}
}
