package guard

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Sources are loopback addresses other than 127.0.0.1 (Linux routes all
// of 127.0.0.0/8 to lo), so that one test has many "clients".

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// server is a guarded listener whose admitted connections arrive on
// accepted.
type server struct {
	g        *Guard
	addr     string
	accepted chan net.Conn
	clock    *fakeClock
}

func newServer(t *testing.T, cfg Config, protocol string, how Refusal, hs Handshake) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	cfg.Now = clock.now
	cfg.Metrics = prometheus.NewRegistry()
	g := New(cfg)
	s := &server{g: g, addr: ln.Addr().String(), accepted: make(chan net.Conn, 1000), clock: clock}
	gl := g.Listener(ln, protocol, how, hs)
	go func() {
		for {
			c, err := gl.Accept()
			if err != nil {
				return
			}
			s.accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-s.accepted:
				c.Close()
			default:
				return
			}
		}
	})
	return s
}

// dialFrom connects from the source address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// admitted reports whether the server handed on the next connection
// (true) or closed it (false).
func (s *server) admitted(t *testing.T, c net.Conn) bool {
	t.Helper()
	select {
	case sc := <-s.accepted:
		t.Cleanup(func() { sc.Close() })
		return true
	case <-time.After(50 * time.Millisecond):
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	// A refusal closes (MQTT) or sends the AMQP header first.
	if _, err := c.Read(b[:]); err == nil {
		return false
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		// Neither handed on nor closed yet: wait for one of them.
		select {
		case sc := <-s.accepted:
			t.Cleanup(func() { sc.Close() })
			return true
		case <-time.After(5 * time.Second):
			t.Fatal("connection neither admitted nor refused")
		}
	}
	return false
}

// next returns the next admitted connection.
func (s *server) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.accepted:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("nothing admitted")
	}
	return nil
}

func TestRatePerSource(t *testing.T) {
	s := newServer(t, Config{RatePerSource: 2, BurstPerSource: 3}, "mqtt", RefuseClose, Reported)
	for range 3 {
		dialFrom(t, "127.0.0.2", s.addr)
		HandshakeDone(s.next(t)) // the handshake is not what is limited here
	}
	c := dialFrom(t, "127.0.0.2", s.addr)
	if s.admitted(t, c) {
		t.Fatal("4th connection within the burst admitted")
	}
	// Another source has its own bucket.
	if c := dialFrom(t, "127.0.0.3", s.addr); !s.admitted(t, c) {
		t.Fatal("another source refused")
	}
	// Half a second later the bucket has a token again (2 a second).
	s.clock.add(500 * time.Millisecond)
	if c := dialFrom(t, "127.0.0.2", s.addr); !s.admitted(t, c) {
		t.Fatal("refused after the bucket refilled")
	}
	if c := dialFrom(t, "127.0.0.2", s.addr); s.admitted(t, c) {
		t.Fatal("admitted beyond the refill")
	}
	if n := counterOf(s.g.Refused().WithLabelValues("mqtt", ReasonRate)); n != 2 {
		t.Fatalf("refused{mqtt,rate} = %v, want 2", n)
	}
}

func TestHalfOpenCaps(t *testing.T) {
	s := newServer(t, Config{MaxHalfOpen: 5, MaxHalfOpenPerSource: 2}, "amqp", RefuseAMQP, Reported)
	var held []net.Conn
	for range 2 {
		dialFrom(t, "127.0.0.2", s.addr)
		held = append(held, s.next(t))
	}
	// A third from the same source is refused with the AMQP header.
	c := dialFrom(t, "127.0.0.2", s.addr)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "AMQP\x00\x01\x00\x00" {
		t.Fatalf("refusal: %q %v", got, err)
	}
	// One handshake ends: the source may open one more.
	HandshakeDone(held[0])
	if c := dialFrom(t, "127.0.0.2", s.addr); !s.admitted(t, c) {
		t.Fatal("refused after a handshake ended")
	}
	// The node's cap: 2 + 3 more from other sources fill it.
	for _, src := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		if c := dialFrom(t, src, s.addr); !s.admitted(t, c) {
			t.Fatalf("%s refused", src)
		}
	}
	if n := s.g.HalfOpen(); n != 5 {
		t.Fatalf("half-open %d, want 5", n)
	}
	if c := dialFrom(t, "127.0.0.6", s.addr); s.admitted(t, c) {
		t.Fatal("admitted beyond the node's cap")
	}
	// Handshakes never reported are forgotten after the timeout.
	s.clock.add(12 * time.Second)
	if c := dialFrom(t, "127.0.0.6", s.addr); !s.admitted(t, c) {
		t.Fatal("stale handshakes still counted")
	}
	if n := s.g.HalfOpen(); n != 1 {
		t.Fatalf("half-open %d after the sweep, want 1", n)
	}
	for reason, want := range map[string]float64{ReasonHalfOpenPerSource: 1, ReasonHalfOpen: 1} {
		if n := counterOf(s.g.Refused().WithLabelValues("amqp", reason)); n != want {
			t.Errorf("refused{amqp,%s} = %v, want %v", reason, n, want)
		}
	}
}

func TestHTTPRefusal(t *testing.T) {
	s := newServer(t, Config{RatePerSource: 1, BurstPerSource: 1}, "http", RefuseHTTP, FirstByte)
	go func() {
		// A minimal server for the admitted connections.
		for c := range s.accepted {
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				req.Body.Close()
				io.WriteString(c, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
			}()
		}
	}()
	client := &http.Client{Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext,
	}}
	resp, err := client.Get("http://" + s.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	// The first byte ended the handshake.
	deadline := time.Now().Add(5 * time.Second)
	for s.g.HalfOpen() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := s.g.HalfOpen(); n != 0 {
		t.Fatalf("half-open %d after a request", n)
	}
	resp, err = client.Get("http://" + s.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || body.Error.Code != "too_many_connections" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("refusal: %d Retry-After %q %+v", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

func TestExempt(t *testing.T) {
	s := newServer(t, Config{RatePerSource: 1, BurstPerSource: 1, MaxHalfOpenPerSource: 1,
		Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.7/32")}}, "mqtt", RefuseClose, Reported)
	for range 5 {
		if c := dialFrom(t, "127.0.0.7", s.addr); !s.admitted(t, c) {
			t.Fatal("an exempt source refused")
		}
	}
}

// counterOf returns a counter's value.
func counterOf(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
