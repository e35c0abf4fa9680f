package app_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/app"
)

// TestShutdownWhileWaiting: Shutdown of a clustered node that waits for
// its peers (an embedder stopping it, as SIGTERM does through Run's
// context) gives the start up and returns once the engine has stopped:
// its route port is free and the data directory can be used by another
// App, whose Run gets past the lock (to the wait) instead of failing
// with DataDirLockedError. Before, Shutdown released the lock at once
// while the engine went on waiting, and Run returned only after the
// engine's 5-minute wait.
func TestShutdownWhileWaiting(t *testing.T) {
	var ports []int
	var lns []net.Listener
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Cluster.Listen = "127.0.0.1:" + strconv.Itoa(ports[0])
	for _, p := range ports {
		cfg.Cluster.Peers = append(cfg.Cluster.Peers, "127.0.0.1:"+strconv.Itoa(p))
	}
	cfg.Cluster.NodeName, cfg.Cluster.Secret = "n1", "s3cret"
	run := func() (*app.App, chan error) {
		t.Helper()
		a, err := app.New(cfg, app.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), app.WithStdout(io.Discard))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- a.Run(context.Background()) }()
		// Waiting: the route listener is up, the node not ready.
		for deadline := time.Now().Add(60 * time.Second); ; {
			if c, err := net.DialTimeout("tcp", cfg.Cluster.Listen, time.Second); err == nil {
				c.Close()
				break
			}
			select {
			case err := <-done:
				t.Fatalf("Run returned before the wait: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("the route listener never came up")
			}
			time.Sleep(50 * time.Millisecond)
		}
		select {
		case <-a.Ready():
			t.Fatal("ready without peers")
		case err := <-done:
			t.Fatalf("Run returned without peers: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
		return a, done
	}
	shutdown := func(a *app.App, done chan error) {
		t.Helper()
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stopped := make(chan struct{})
		go func() { a.Shutdown(ctx); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(15 * time.Second):
			t.Fatal("Shutdown still running 15 s after it was called")
		}
		t.Logf("Shutdown returned %s after it was called", time.Since(began).Round(time.Millisecond))
		ln, err := net.Listen("tcp", cfg.Cluster.Listen)
		if err != nil {
			t.Fatalf("Shutdown returned with the route port still taken: %v", err)
		}
		ln.Close()
		select {
		case err := <-done:
			t.Logf("Run: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("Run still running 5 s after Shutdown returned")
		}
	}
	a, done := run()
	shutdown(a, done)
	a, done = run() // gets past the data directory's lock, to the wait
	shutdown(a, done)
}
