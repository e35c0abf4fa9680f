package router

import (
	"errors"
	"testing"
	"time"
)

func TestSignalAndStateUpdate(t *testing.T) {
	r := newEnv(t).r
	ctx := ctxT(t)
	got := make(chan string, 2)
	stop, err := r.Listen(ctx, "default", "x", func(b []byte) { got <- string(b) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := r.Signal(ctx, "default", "x", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "hi" {
			t.Fatalf("got %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no signal")
	}

	st, err := r.StateBucket(ctx, "default", "upd", true)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := st.Update(ctx, "k", []byte("1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(ctx, "k", []byte("x"), 0); !errors.Is(err, ErrStateChanged) {
		t.Fatalf("create over existing: %v", err)
	}
	rev2, err := st.Update(ctx, "k", []byte("2"), rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(ctx, "k", []byte("3"), rev); !errors.Is(err, ErrStateChanged) {
		t.Fatalf("stale update: %v", err)
	}
	if b, r3, _ := st.Get(ctx, "k"); string(b) != "2" || r3 != rev2 {
		t.Fatalf("got %q at %d", b, r3)
	}
}

// TestStateLeaderRead: the cluster's read of a state key from the stream
// leader (State.getLeader) answers as the KV get does — value and
// revision, ErrNoState for a missing or deleted key. (On one node the
// leader is the only replica; the cluster tests resume MQTT sessions
// across nodes through it.)
func TestStateLeaderRead(t *testing.T) {
	r := newEnv(t).r
	ctx := ctxT(t)
	st, err := r.StateBucket(ctx, "default", "leader", true)
	if err != nil {
		t.Fatal(err)
	}
	st.leader = true
	if _, _, err := st.Get(ctx, "missing"); !errors.Is(err, ErrNoState) {
		t.Fatalf("missing key: %v", err)
	}
	rev, err := st.Put(ctx, "k/ä", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if b, r2, err := st.Get(ctx, "k/ä"); err != nil || string(b) != "v1" || r2 != rev {
		t.Fatalf("got %q at %d (%v), want v1 at %d", b, r2, err, rev)
	}
	rev, _ = st.Put(ctx, "k/ä", []byte("v2"))
	if b, r2, err := st.Get(ctx, "k/ä"); err != nil || string(b) != "v2" || r2 != rev {
		t.Fatalf("got %q at %d (%v), want v2 at %d", b, r2, err, rev)
	}
	if err := st.Delete(ctx, "k/ä", 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Get(ctx, "k/ä"); !errors.Is(err, ErrNoState) {
		t.Fatalf("deleted key: %v", err)
	}
}
