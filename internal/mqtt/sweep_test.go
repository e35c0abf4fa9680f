package mqtt

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// TestSweepNodeStartingMeanwhile (issue 11): a sweep that read the node
// leases just before another node started serving the tenant, and then
// read a session (and an armed will) that node had just stored, took the
// node for one long dead — no lease in what it had read — and dropped
// the session as expired at once, and published the will of a client
// still connected. TestQoS2InboundSurvivesCrash failed 3 times in 11 on
// a busy machine this way ("session lost": node b's sweeper dropped the
// session node a had just created). The sweep now reads such a node's
// lease again before it decides.
func TestSweepNodeStartingMeanwhile(t *testing.T) {
	e := startEnv(t, t.TempDir(), func(c *Config) { c.SweepInterval = time.Hour }) // sweeps only when called here
	ctx := ctxT(t)
	sessions, wills, err := e.srv.buckets(ctx, "default", true)
	if err != nil {
		t.Fatal(err)
	}
	_, _, nodes := e.srv.stateOf("default")

	// Another node starts between this sweep's read of the leases and
	// its read of the sessions and wills: lease first, then what it holds.
	const other = "node-starting"
	hook := func() {
		testAfterLeases.Store(nil) // once
		lb, _ := json.Marshal(nodeLease{Seen: clock.Now()})
		if _, err := nodes.Put(ctx, other, lb); err != nil {
			t.Error(err)
		}
		rb, _ := json.Marshal(&sessionRecord{Expiry: 3600, Node: other})
		if _, err := sessions.Put(ctx, "held-there", rb); err != nil {
			t.Error(err)
		}
		wb, _ := json.Marshal(&will{Topic: "wills/held-there", QoS: 1, Msg: (&message.Message{Body: []byte("gone")}).Marshal(), Node: other})
		if _, err := wills.Put(ctx, "held-there", wb); err != nil {
			t.Error(err)
		}
	}
	testAfterLeases.Store(&hook)
	t.Cleanup(func() { testAfterLeases.Store(nil) })
	e.srv.sweepTenant(ctx, "default", true)

	if _, _, err := sessions.Get(ctx, "held-there"); err != nil {
		t.Fatalf("the session held by a live node was dropped by the sweep: %v", err)
	}
	b, _, err := wills.Get(ctx, "held-there")
	if err != nil {
		t.Fatalf("the armed will of a client connected to a live node was taken by the sweep: %v", err)
	}
	var w will
	if json.Unmarshal(b, &w) != nil || w.Claim != "" {
		t.Fatalf("the armed will of a client connected to a live node was claimed: %s", b)
	}

	// A node without a lease is still taken for long dead: its session
	// (its disconnection unknown, so as old as can be) is dropped.
	rb, _ := json.Marshal(&sessionRecord{Expiry: 3600, Node: "node-long-gone"})
	if _, err := sessions.Put(ctx, "held-by-the-dead", rb); err != nil {
		t.Fatal(err)
	}
	e.srv.sweepTenant(ctx, "default", true)
	if _, _, err := sessions.Get(ctx, "held-by-the-dead"); !errors.Is(err, router.ErrNoState) {
		t.Fatalf("a session of a node without a lease is kept: %v", err)
	}
	if _, _, err := sessions.Get(ctx, "held-there"); err != nil {
		t.Fatalf("the session held by a live node was dropped by a later sweep: %v", err)
	}
}
