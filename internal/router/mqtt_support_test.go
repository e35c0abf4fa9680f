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
