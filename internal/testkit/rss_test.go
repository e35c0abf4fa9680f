package testkit_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/testkit"
)

// TestRSSDistinctNames is the measurement of issue 10.13 (docs/benchmarks.md,
// "Memory after many distinct names"): a whole platform in this process;
// THRONG_RSS_TOPICS distinct MQTT topics (default 1M), each subscribed
// to, published to at QoS 1 and unsubscribed from, over pipelining
// MQTT 3.1.1 connections; then THRONG_RSS_DYNAMIC dynamic AMQP reply
// addresses (default 100k), each a go-amqp receiver attached with
// dynamic=true and detached. It logs VmRSS and the Go heap before, after
// each phase, and after a GC and debug.FreeOSMemory (THRONG_RSS_HEAPPROFILE
// names a file for a heap profile taken at the end). Gated because it runs
// for minutes:
//
//	THRONG_RSS=1 go test -run TestRSSDistinctNames -v -timeout 60m ./internal/testkit/
func TestRSSDistinctNames(t *testing.T) {
	if os.Getenv("THRONG_RSS") == "" {
		t.Skip("set THRONG_RSS=1 to run the distinct-names memory measurement")
	}
	topics := envInt(t, "THRONG_RSS_TOPICS", 1_000_000)
	dynamic := envInt(t, "THRONG_RSS_DYNAMIC", 100_000)
	p := testkit.Start(t)

	// Warm up both protocols so their one-off allocations are in the
	// baseline.
	mqttDistinctTopics(t, p.MQTTAddr, "warm", 1, 1000)
	amqpDynamicAddresses(t, p.AMQPAddr, 1, 100)
	base := measure(t, "baseline (after warm-up)")

	start := time.Now()
	mqttWindow = envInt(t, "THRONG_RSS_WINDOW", mqttWindow)
	got := mqttDistinctTopics(t, p.MQTTAddr, "rss", envInt(t, "THRONG_RSS_CONNS", 16), topics)
	t.Logf("mqtt: %d distinct topics subscribed, published to (QoS 1) and unsubscribed in %v; %d deliveries", topics, time.Since(start).Round(time.Millisecond), got)
	afterMQTT := measure(t, "after the MQTT topics")
	afterMQTTGC := measureGC(t, "after the MQTT topics, GC + FreeOSMemory")

	start = time.Now()
	amqpDynamicAddresses(t, p.AMQPAddr, 8, dynamic)
	t.Logf("amqp: %d dynamic receivers attached and detached in %v", dynamic, time.Since(start).Round(time.Millisecond))
	afterAMQP := measure(t, "after the dynamic addresses")
	afterAMQPGC := measureGC(t, "after the dynamic addresses, GC + FreeOSMemory")
	// The router has the store purge delete markers 30 minutes old every
	// 10 minutes (router/prune.go); here at once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n, err := p.Store.PurgeDeleted(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("store: %d delete markers purged", n)
	afterPurge := measureGC(t, "after purging the store's delete markers, GC + FreeOSMemory")

	if path := os.Getenv("THRONG_RSS_HEAPPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	t.Logf("| phase | VmRSS MiB | Go heap in use MiB | goroutines |")
	for _, m := range []mem{base, afterMQTT, afterMQTTGC, afterAMQP, afterAMQPGC, afterPurge} {
		t.Logf("| %s | %.1f | %.1f | %d |", m.label, mib(m.rss), mib(m.heap), m.goroutines)
	}
	t.Logf("growth per MQTT topic after GC: %.1f B heap, %.1f B RSS", float64(int64(afterMQTTGC.heap)-int64(base.heap))/float64(topics), float64(int64(afterMQTTGC.rss)-int64(base.rss))/float64(topics))
	t.Logf("growth per dynamic address after GC: %.1f B heap, %.1f B RSS", float64(int64(afterAMQPGC.heap)-int64(afterMQTTGC.heap))/float64(dynamic), float64(int64(afterAMQPGC.rss)-int64(afterMQTTGC.rss))/float64(dynamic))
	t.Logf("growth per dynamic address after the purge: %.1f B heap, %.1f B RSS", float64(int64(afterPurge.heap)-int64(afterMQTTGC.heap))/float64(dynamic), float64(int64(afterPurge.rss)-int64(afterMQTTGC.rss))/float64(dynamic))
}

// mqttWindow is how many topics' packets an MQTT connection writes
// before it waits for their acknowledgements (THRONG_RSS_WINDOW).
var mqttWindow = 20

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

type mem struct {
	label      string
	rss, heap  uint64
	goroutines int
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func measure(t *testing.T, label string) mem {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := mem{label: label, rss: vmRSS(t), heap: ms.HeapInuse, goroutines: runtime.NumGoroutine()}
	t.Logf("%s: VmRSS %.1f MiB, heap in use %.1f MiB, %d goroutines", label, mib(m.rss), mib(m.heap), m.goroutines)
	return m
}

func measureGC(t *testing.T, label string) mem {
	runtime.GC()
	debug.FreeOSMemory()
	return measure(t, label)
}

func vmRSS(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status:", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// mqttDistinctTopics runs n distinct topics over conns connections: each
// topic is subscribed to (QoS 0), published to (QoS 1) and unsubscribed
// from, the packets of mqttWindow topics written at once and their
// acknowledgements awaited together. It returns the deliveries seen.
func mqttDistinctTopics(t *testing.T, addr, prefix string, conns, n int) int64 {
	var delivered atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for k := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := mqttWorker(addr, fmt.Sprintf("%s-%d", prefix, k), prefix, n, &next, &delivered); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return delivered.Load()
}

func mqttWorker(addr, clientID, prefix string, n int, next, delivered *atomic.Int64) error {
	mqttWindow := mqttWindow
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	r := bufio.NewReaderSize(nc, 64<<10)
	var w bytes.Buffer
	// CONNECT, MQTT 3.1.1, clean session, keep-alive 60 s.
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60}
	writePacket(&w, 0x10, append(vh, mqttString(clientID)...))
	if _, err := nc.Write(w.Bytes()); err != nil {
		return err
	}
	if typ, _, err := readPacket(r); err != nil || typ != 0x20 {
		return fmt.Errorf("mqtt connect: packet %#x, %v", typ, err)
	}
	for {
		first := int(next.Add(int64(mqttWindow))) - mqttWindow
		if first >= n {
			break
		}
		last := min(first+mqttWindow, n)
		w.Reset()
		for i := first; i < last; i++ {
			topic := mqttString(fmt.Sprintf("%s/%d/x", prefix, i))
			id := uint16(i-first) * 3
			writePacket(&w, 0x82, append(append(pid(id+1), topic...), 0))
			writePacket(&w, 0x32, append(append(append([]byte{}, topic...), pid(id+2)...), "payload"...))
			writePacket(&w, 0xa2, append(pid(id+3), topic...))
		}
		_ = nc.SetDeadline(time.Now().Add(time.Minute))
		if _, err := nc.Write(w.Bytes()); err != nil {
			return err
		}
		for acks := 0; acks < 3*(last-first); {
			typ, _, err := readPacket(r)
			if err != nil {
				return fmt.Errorf("mqtt %s: %w", clientID, err)
			}
			switch typ & 0xf0 {
			case 0x90, 0x40, 0xb0: // SUBACK, PUBACK, UNSUBACK
				acks++
			case 0x30:
				delivered.Add(1)
			default:
				return fmt.Errorf("mqtt %s: unexpected packet %#x", clientID, typ)
			}
		}
	}
	w.Reset()
	writePacket(&w, 0xe0, nil)
	_, _ = nc.Write(w.Bytes())
	return nil
}

func pid(id uint16) []byte { return binary.BigEndian.AppendUint16(nil, id) }

func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func writePacket(w *bytes.Buffer, first byte, body []byte) {
	w.WriteByte(first)
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		w.WriteByte(b)
		if n == 0 {
			break
		}
	}
	w.Write(body)
}

func readPacket(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		mul *= 128
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return typ, body, err
}

// amqpDynamicAddresses attaches and detaches n go-amqp receivers with
// dynamic=true, spread over par sessions of one connection.
func amqpDynamicAddresses(t *testing.T, addr string, par, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	conn, err := goamqp.Dial(ctx, "amqp://"+addr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypeAnonymous()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, par)
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := conn.NewSession(ctx, nil)
			if err != nil {
				errs <- err
				return
			}
			defer s.Close(ctx)
			for next.Add(1) <= int64(n) {
				rc, err := s.NewReceiver(ctx, "", &goamqp.ReceiverOptions{DynamicAddress: true, Credit: 1})
				if err != nil {
					errs <- err
					return
				}
				if !strings.HasPrefix(rc.Address(), "$temp/") {
					errs <- fmt.Errorf("dynamic address %q", rc.Address())
					return
				}
				if err := rc.Close(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
