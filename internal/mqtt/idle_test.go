package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// idleChildEnv makes TestIdleConnectionMemory run as the broker child.
const idleChildEnv = "THRONG_MQTT_IDLE_CHILD"

// TestIdleConnectionMemory measures the broker's memory per idle MQTT
// connection (DESIGN.md §9). The broker runs in a child process (this test
// binary re-executed) so the figure excludes the client sockets: the
// parent opens n idle 3.1.1 connections from 127.0.0.x source addresses
// and the child reports its VmRSS (after GC and returning free memory to
// the OS) before and after. THRONG_MQTT_IDLE=n sets n (default 5000);
// THRONG_MQTT_IDLE_PROF=prefix writes the child's heap profiles.
func TestIdleConnectionMemory(t *testing.T) {
	if os.Getenv(idleChildEnv) != "" {
		idleChild(t)
		return
	}
	if testing.Short() {
		t.Skip("short")
	}
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("THRONG_MQTT_IDLE")); err == nil {
		n = v
	}
	if lim := raiseNoFile() - 256; n > lim {
		t.Logf("RLIMIT_NOFILE allows %d connections only", lim)
		n = lim
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleConnectionMemory$", "-test.count=1")
	cmd.Env = append(os.Environ(), idleChildEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()
	lines := bufio.NewScanner(stdout)
	// next returns the fields of the child's next report line.
	next := func() []string {
		for lines.Scan() {
			if rest, ok := strings.CutPrefix(lines.Text(), "idle-child: "); ok {
				return strings.Fields(rest)
			}
		}
		t.Fatalf("child ended: %v", lines.Err())
		return nil
	}
	type sample struct{ rss, heap, stack, goroutines float64 }
	measure := func() sample {
		fmt.Fprintln(stdin, "measure")
		f := next()
		var s sample
		for i, p := range []*float64{&s.rss, &s.heap, &s.stack, &s.goroutines} {
			*p, _ = strconv.ParseFloat(f[2*i+1], 64)
		}
		return s
	}
	addr := next()[1]

	// Warm up pools, the tenant's state buckets and the connect path.
	var conns []net.Conn
	var mu sync.Mutex
	dial := func(i int) error {
		ip := net.IPv4(127, 0, byte(1+i/250%250), byte(1+i%250))
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		if err := idleConnect(nc, "idle-"+strconv.Itoa(i)); err != nil {
			nc.Close()
			return err
		}
		mu.Lock()
		conns = append(conns, nc)
		mu.Unlock()
		return nil
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 20 {
		if err := dial(n + i); err != nil {
			t.Fatal(err)
		}
	}
	before := measure()

	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if err := dial(i); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := measure()

	per := func(a, b float64) float64 { return (a - b) / float64(n) }
	rss := per(after.rss, before.rss)
	t.Logf("idle connections: %d; broker memory per connection: RSS %.0f B (%.2f KiB), Go heap %.0f B, stacks %.0f B, goroutines %+.3f",
		n, rss, rss/1024, per(after.heap, before.heap), per(after.stack, before.stack), per(after.goroutines, before.goroutines))
	switch {
	case raceEnabled:
		// The race detector's shadow memory inflates every figure.
	case rss > 4096:
		t.Errorf("%.0f bytes of broker memory per idle connection, want ≤ 4096", rss)
	}
	if g := per(after.goroutines, before.goroutines); g > 0.05 {
		t.Errorf("%.3f goroutines per idle connection, want none", g)
	}
}

// idleChild is the broker side of TestIdleConnectionMemory: it prints its
// address, then answers "measure" lines on stdin until stdin closes.
func idleChild(t *testing.T) {
	raiseNoFile()
	if os.Getenv("THRONG_MQTT_IDLE_PROF") != "" {
		runtime.MemProfileRate = 64
	}
	e := startEnv(t, t.TempDir(), nil)
	fmt.Printf("idle-child: addr %s\n", e.addr)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "measure" {
			continue
		}
		time.Sleep(500 * time.Millisecond) // let connect-time goroutines end
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if f := os.Getenv("THRONG_MQTT_IDLE_PROF"); f != "" {
			w, _ := os.Create(f + strconv.Itoa(int(time.Now().UnixNano()%1000)))
			_ = pprof.Lookup("heap").WriteTo(w, 0)
			w.Close()
		}
		fmt.Printf("idle-child: rss %d heap %d stack %d goroutines %d\n",
			vmRSS(t), ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine())
	}
}

// idleConnect sends an MQTT 3.1.1 CONNECT and waits for the CONNACK.
func idleConnect(nc net.Conn, id string) error {
	pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4}
	pk.Connect.ProtocolName = []byte("MQTT")
	pk.Connect.Clean = true
	pk.Connect.ClientIdentifier = id
	pk.Connect.Keepalive = 600
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		return err
	}
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := nc.Write(buf.Bytes()); err != nil {
		return err
	}
	var ack [4]byte
	if _, err := io.ReadFull(nc, ack[:]); err != nil {
		return err
	}
	if ack[0] != packets.Connack<<4 || ack[3] != 0 {
		return fmt.Errorf("connack % x", ack)
	}
	return nc.SetDeadline(time.Time{})
}

// raiseNoFile raises the open-file limit to the hard limit and returns it.
func raiseNoFile() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return int(rl.Cur)
}

func vmRSS(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestEventReaderBoundaries exercises the event-driven reader: packets
// pipelined behind CONNECT, a packet larger than the read buffer arriving
// in pieces, a header split across reads, and a client that does not
// read while megabytes are queued for it (the writer blocks on the
// taken-over socket).
func TestEventReaderBoundaries(t *testing.T) {
	e := startEnv(t, t.TempDir(), func(c *Config) { c.WriteQueueBytes = 64 << 20 })
	r := dialRaw(t, e, 5)
	var buf bytes.Buffer
	con := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5}
	con.Connect.ProtocolName = []byte("MQTT")
	con.Connect.Clean, con.Connect.ClientIdentifier, con.Connect.Keepalive = true, "boundaries", 30
	sub := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 5, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "big", Qos: 0}}}
	if err := con.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if err := sub.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := r.nc.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if ack := r.read(); ack == nil || ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("want CONNACK, got %+v", ack)
	}
	if sa := r.read(); sa == nil || sa.FixedHeader.Type != packets.Suback || sa.ReasonCodes[0] != 0 {
		t.Fatalf("want SUBACK, got %+v", sa)
	}

	const n, size = 24, 256 << 10
	for i := range n {
		payload := bytes.Repeat([]byte{byte('a' + i)}, size)
		pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 5, TopicName: "big", Payload: payload}
		buf.Reset()
		if err := pk.PublishEncode(&buf); err != nil {
			t.Fatal(err)
		}
		b := buf.Bytes()
		if i < 2 {
			// In pieces: one byte of the header, the rest of the header
			// and a little body, then the body.
			for _, part := range [][]byte{b[:1], b[1:10], b[10:]} {
				if _, err := r.nc.Write(part); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			continue
		}
		if _, err := r.nc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // let the server's socket buffer fill
	for i := range n {
		pk := r.read()
		if pk == nil || pk.FixedHeader.Type != packets.Publish {
			t.Fatalf("message %d: got %+v", i, pk)
		}
		if len(pk.Payload) != size || pk.Payload[0] != byte('a'+i) || pk.Payload[size-1] != byte('a'+i) {
			t.Fatalf("message %d: %d bytes of %q", i, len(pk.Payload), pk.Payload[:1])
		}
	}
}
