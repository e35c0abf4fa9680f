package amqp

import (
	"bytes"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
	"github.com/throngmq/throng/internal/tenant"
)

// sendFrames sends payload as one delivery in transfer frames of at most
// size bytes.
func (p *rawPeer) sendFrames(h, id uint32, payload []byte, size int) {
	p.t.Helper()
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		t := &frames.Transfer{Handle: h, More: end < len(payload)}
		if off == 0 {
			t.DeliveryID, t.HasDeliveryID = id, true
			t.DeliveryTag = []byte{byte(id)}
			t.MessageFormat, t.HasMessageFormat = 0, true
		}
		p.sendPayload(0, t, payload[off:end])
	}
}

// TestLargeRefusedOtherLinksGoOn: the default max-message-size is 64 MiB,
// announced on attach; a 65 MiB message detaches its link with
// amqp:link:message-size-exceeded (part 2.7.3) and the connection's other
// link goes on working.
func TestLargeRefusedOtherLinksGoOn(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "q1", Type: address.Queue})
	p := dialRaw(t, e)
	p.openSession()
	p.send(0, &frames.Attach{Name: "big", Handle: 0, Role: frames.RoleSender, SndSettleMode: frames.SenderSettleMixed,
		Source: &encoding.Source{}, Target: &encoding.Target{Address: "q1"}, HasInitialDeliveryCount: true})
	if a := expect[*frames.Attach](p); a.MaxMessageSize != 64<<20+messageOverhead {
		t.Fatalf("max-message-size %d, want 64 MiB + overhead", a.MaxMessageSize)
	}
	p.expectFlow()
	p.attachSender(1, "q1")
	p.expectFlow()
	p.sendFrames(0, 0, minimalMessage(strings.Repeat("x", 65<<20)), 60000)
	var d *framesDetach
	for d == nil {
		switch f := p.next().(type) {
		case *framesDetach:
			d = f
		case *frames.Flow, *frames.Disposition:
		default:
			t.Fatalf("unexpected %T", f)
		}
	}
	if d.Handle != 0 || d.Error == nil || d.Error.Condition != "amqp:link:message-size-exceeded" {
		t.Fatalf("detach %+v", d)
	}
	p.transfer(1, 1, false, minimalMessage("small"))
	for {
		switch f := p.next().(type) {
		case *frames.Disposition:
			if !isAccepted(f.State) {
				t.Fatalf("small message: %+v", f.State)
			}
			return
		case *frames.Flow:
		default:
			t.Fatalf("unexpected %T", f)
		}
	}
}

// TestTenantMaxMessageSize: a tenant's maxMessageSize replaces the node's
// on its links (announced on attach), and a bigger message is refused.
func TestTenantMaxMessageSize(t *testing.T) {
	e := startEnv(t, nil)
	tn, _ := e.store.Tenant(tenant.Default)
	up := *tn
	up.Limits.MaxMessageSize = 1 << 20
	if err := e.store.UpdateTenant(ctxT(t), &up); err != nil {
		t.Fatal(err)
	}
	e.addrDef(t, "default", &address.Address{Name: "q1", Type: address.Queue})
	s := e.session(t, nil)
	if snd := sender(t, s, "q1", nil); snd.MaxMessageSize() != 1<<20+messageOverhead {
		t.Fatalf("go-amqp sees max-message-size %d, want 1 MiB + overhead", snd.MaxMessageSize())
	}
	p := dialRaw(t, e)
	p.openSession()
	p.attachSender(0, "q1")
	p.expectFlow()
	p.sendFrames(0, 0, minimalMessage(strings.Repeat("y", 2<<20)), 60000)
	for {
		switch f := p.next().(type) {
		case *framesDetach:
			if f.Error == nil || f.Error.Condition != "amqp:link:message-size-exceeded" {
				t.Fatalf("detach %+v", f.Error)
			}
			return
		case *frames.Flow:
		default:
			t.Fatalf("unexpected %T", f)
		}
	}
}

// TestLargeQueueSeparateConnections: a 4 MiB message (in chunks: over the
// router's threshold) from one connection to a queue reaches a receiver
// on another, intact.
func TestLargeQueueSeparateConnections(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "big", Type: address.Queue})
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<18)
	send(t, sender(t, e.session(t, nil), "big", nil), goamqp.NewMessage(body))
	m := recv(t, receiver(t, e.session(t, nil), "big", nil))
	if !bytes.Equal(m.GetData(), body) {
		t.Fatalf("body of %d bytes differs", len(m.GetData()))
	}
}

// protonLarge sends (mode "send") or receives and checks (mode "recv") one
// message of n random bytes with the given sha256, in its own process.
const protonLarge = `
import sys, hashlib, os
from proton import Message
from proton.utils import BlockingConnection
mode, url, n, digest = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = BlockingConnection(url, timeout=120)
if mode == "send":
    data = bytearray(n)
    for i in range(0, n, 4096):
        data[i] = (i // 4096) % 251
    c.create_sender("big").send(Message(body=bytes(data)))
    print(hashlib.sha256(bytes(data)).hexdigest())
else:
    r = c.create_receiver("big", credit=1)
    m = r.receive(timeout=120)
    r.accept()
    got = hashlib.sha256(bytes(m.body)).hexdigest()
    if got != digest:
        sys.exit("digest %s, want %s (%d bytes)" % (got, digest, len(m.body)))
c.close()
`

// TestLargeHeapProton measures the server's peak heap for one 64 MiB
// message queue → consumer, the clients (Qpid Proton) in processes of
// their own so that only the server's memory (router, engine, AMQP) is
// counted. The figure is logged (docs/router.md "Large messages").
func TestLargeHeapProton(t *testing.T) {
	requireProton(t)
	if testing.Short() {
		t.Skip("64 MiB")
	}
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "big", Type: address.Queue})
	url := "amqp://" + e.addr
	n := strconv.Itoa(64<<20 - 64)
	stop := heapPeak()
	out, err := exec.Command(protonPython, "-c", protonLarge, "send", url, n, "-").CombinedOutput()
	if err != nil {
		t.Fatalf("proton sender: %v\n%s", err, out)
	}
	sendPeak := stop()
	stop = heapPeak()
	if out, err := exec.Command(protonPython, "-c", protonLarge, "recv", url, n, strings.TrimSpace(string(out))).CombinedOutput(); err != nil {
		t.Fatalf("proton receiver: %v\n%s", err, out)
	}
	t.Logf("server heap above idle for one 64 MiB message: publish (store in chunks) peak %d MiB, consume (load, send) peak %d MiB",
		sendPeak>>20, stop()>>20)
}

// heapPeak samples the heap until stopped and returns its peak above the
// level at start; GOGC is lowered meanwhile so that the figure is close to
// the live heap rather than to garbage not yet collected.
func heapPeak() (stop func() uint64) {
	old := debug.SetGCPercent(5)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		debug.SetGCPercent(old)
		return peak.Load() - min(base, peak.Load())
	}
}
