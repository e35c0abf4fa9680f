package bench

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestRunHTTP: the http mode counts answers by status and keeps one
// connection per worker.
func TestRunHTTP(t *testing.T) {
	var n, conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _, ok := r.BasicAuth()
		if !ok || u != "d1@bench" || r.URL.Path != "/telemetry" || r.Header.Get("Qos-Level") != "1" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if n.Add(1)%10 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	r, err := RunHTTP(context.Background(), HTTPConfig{URL: srv.URL, User: "d1@bench", Password: "x", QoS: 1, Workers: 4, Count: 200})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 200 || r.Received != 180 || r.Lost != 20 || r.Latency.Count != 180 || len(r.Errors) != 1 {
		t.Fatalf("result %+v", r)
	}
	if c := conns.Load(); c != 4 {
		t.Fatalf("%d connections for 4 workers", c)
	}
	if _, err := RunHTTP(context.Background(), HTTPConfig{URL: srv.URL}); err == nil {
		t.Fatal("no --user accepted")
	}
}
