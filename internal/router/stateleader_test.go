package router

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestStateGetWithoutLeader (issue 16): while a bucket's stream has no
// leader (its node just died), a cluster's State.Get must not answer
// with a replica's value, which may lack the latest write: the cluster
// soak stored an MQTT QoS 2 message twice when the node its publisher
// moved to read the session record from a replica that did not have the
// message's token yet. It waits for the leader (within its context), and
// only takes a replica's word that a key is absent (a first CONNECT right
// after a cluster's start, before the buckets' streams have leaders, is
// not held up).
func TestStateGetWithoutLeader(t *testing.T) {
	r := newEnv(t).r
	ctx := ctxT(t)
	st, err := r.StateBucket(ctx, "default", "noleader", true)
	if err != nil {
		t.Fatal(err)
	}
	st.leader = true // as in a cluster
	rev1, err := st.Put(ctx, "k", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	rev2, err := st.Put(ctx, "k", []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}

	// The members answer 503 until the election ends; the replica
	// that answers direct gets is one write behind.
	var elected atomic.Bool
	leader := func(string) error {
		if elected.Load() {
			return nil
		}
		return errors.New("router: state: code=503 err_code=10008 JetStream system temporarily unavailable")
	}
	testStateLeader.Store(&leader)
	direct := func(key string) ([]byte, uint64, error) {
		if key == "k" {
			return []byte("v1"), rev1, nil
		}
		return nil, 0, ErrNoState
	}
	testStateDirect.Store(&direct)
	t.Cleanup(func() { testStateLeader.Store(nil); testStateDirect.Store(nil) })

	// No leader within the caller's time: an error, not the stale value.
	sctx, cancel := context.WithTimeout(ctx, leaderReadWait+time.Second)
	b, _, err := st.Get(sctx, "k")
	cancel()
	if err == nil {
		t.Fatalf("got %q from a replica without a leader, want an error", b)
	}

	// The leader is elected meanwhile: its value.
	time.AfterFunc(leaderReadWait+500*time.Millisecond, func() { elected.Store(true) })
	b, rev, err := st.Get(ctx, "k")
	if err != nil || string(b) != "v2" || rev != rev2 {
		t.Fatalf("got %q at %d (%v), want v2 at %d", b, rev, err, rev2)
	}

	// A key the replica does not have is absent after leaderReadWait,
	// without waiting for the leader.
	elected.Store(false)
	start := time.Now()
	if _, _, err := st.Get(ctx, "missing"); !errors.Is(err, ErrNoState) {
		t.Fatalf("missing key without a leader: %v", err)
	}
	if d := time.Since(start); d > 4*leaderReadWait {
		t.Fatalf("missing key answered after %s", d)
	}
}
