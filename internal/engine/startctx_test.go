package engine

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestStartContextWhileWaiting: a node whose peers never come waits for
// its cluster (here up to 10 minutes); when ctx ends meanwhile,
// StartContext returns promptly with ctx's error, its server stopped:
// the route port is free again and the data directory can be started on
// once more.
func TestStartContextWhileWaiting(t *testing.T) {
	ports := freePorts(t, 3)
	var peers []string
	for _, p := range ports {
		peers = append(peers, "127.0.0.1:"+strconv.Itoa(p))
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		e   *Engine
		err error
	}
	done := make(chan result, 1)
	go func() {
		e, err := StartContext(ctx, clusterConfig(dir, "n0", ports[0], peers, "s3cret", 10*time.Minute))
		done <- result{e, err}
	}()
	// Waiting: the route listener is up, no start result yet.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", peers[0], time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the route listener never came up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case r := <-done:
		t.Fatalf("StartContext returned without peers: %v", r.err)
	case <-time.After(time.Second):
	}
	began := time.Now()
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("StartContext still waiting 10 s after ctx ended")
	}
	t.Logf("returned %s after the cancel: %v", time.Since(began).Round(time.Millisecond), r.err)
	if r.e != nil || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("StartContext = %v, %v; want nil, an error wrapping context.Canceled", r.e, r.err)
	}
	ln, err := net.Listen("tcp", peers[0])
	if err != nil {
		t.Fatalf("the route port is still taken: %v", err)
	}
	ln.Close()
	// The stores were closed: the same directory starts again (and gives
	// up after its join timeout, still alone).
	_, err = Start(clusterConfig(dir, "n0", ports[0], peers, "s3cret", 500*time.Millisecond))
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("second start alone: %v, want the join timeout", err)
	}
}
