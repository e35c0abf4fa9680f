package httpapi

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/tenant"
)

type noTenants struct{}

func (noTenants) Tenant(string) (*tenant.Tenant, bool) { return nil, false }

// TestReadBody: a body with a Content-Length (read into a buffer of its
// size up to exactBody, as it comes above) and a chunked one arrive
// byte for byte through net/http; a body shorter than its Content-Length
// is a bad request, one over the limit too large, and a chunked one cut at
// the limit too large.
func TestReadBody(t *testing.T) {
	const limit = 256 << 10
	s := &Server{cfg: Config{Tenants: noTenants{}, MaxMessageSize: limit, ReadTimeout: 10 * time.Second}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := s.readBody(w, r, "t")
		switch {
		case errors.Is(err, ErrTooLarge):
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		case errors.Is(err, ErrBadRequest):
			w.WriteHeader(http.StatusBadRequest)
		case err != nil:
			w.WriteHeader(http.StatusInternalServerError)
		default:
			_, _ = w.Write(body)
		}
	}))
	defer srv.Close()
	post := func(body []byte, chunked bool) (int, []byte) {
		t.Helper()
		var rd io.Reader = bytes.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // no length known: Transfer-Encoding chunked
		}
		resp, err := http.Post(srv.URL, "application/octet-stream", rd)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, got
	}
	for _, n := range []int{0, 1, 64, exactBody - 1, exactBody, exactBody + 1, 200 << 10, limit} {
		body := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
		for _, chunked := range []bool{false, true} {
			st, got := post(body, chunked)
			if st != http.StatusOK || !bytes.Equal(got, body) {
				t.Fatalf("%d bytes (chunked %v): %d, %d bytes back", n, chunked, st, len(got))
			}
		}
	}
	if st, _ := post(make([]byte, limit+1), false); st != http.StatusRequestEntityTooLarge {
		t.Fatalf("over the limit: %d", st)
	}
	if st, _ := post(make([]byte, limit+1), true); st != http.StatusRequestEntityTooLarge {
		t.Fatalf("over the limit, chunked: %d", st)
	}

	// A Content-Length of 100 and 50 bytes, then the end of the stream.
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(100)+"\r\n\r\n"+string(make([]byte, 50)))
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("short body: %d", resp.StatusCode)
	}
}

// TestObserve: the resolved series count as WithLabelValues did.
func TestObserve(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	for range 3 {
		m.observe(EndpointTelemetry, http.StatusAccepted, time.Millisecond)
	}
	m.observe(EndpointTelemetry, http.StatusUnauthorized, time.Millisecond)
	m.observe(EndpointEvent, http.StatusAccepted, time.Millisecond)
	m.observe(0, http.StatusNotFound, time.Millisecond)
	m.observe(EndpointEvent, 999, time.Millisecond) // outside the resolved range
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range mt.GetLabel() {
				key += " " + l.GetValue()
			}
			if h := mt.GetHistogram(); h != nil {
				got[key] = float64(h.GetSampleCount())
			} else {
				got[key] = mt.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{
		"throng_http_requests_total telemetry 202":       3,
		"throng_http_requests_total telemetry 401":       1,
		"throng_http_requests_total event 202":           1,
		"throng_http_requests_total other 404":           1,
		"throng_http_requests_total event 999":           1,
		"throng_http_request_duration_seconds telemetry": 4,
		"throng_http_request_duration_seconds event":     2,
		"throng_http_request_duration_seconds other":     1,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("series %v, want %v", got, want)
	}
}
