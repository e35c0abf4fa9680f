package mqtt

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/tenant"
)

// TestTLSFloodOverRateIsPaused: backpressure over the message rate for a
// connection read by its own goroutine (mqtts; WebSocket reads the same
// way). A TLS client publishing QoS 0 as fast as its socket takes it,
// to a tenant limited to 200 msg/s, is not read while the rate needs
// the time for what was refused (ratepause.go): the node parses and
// refuses about the rate's worth a second, not what the socket carries
// (without the pause: 152k a second, and the victim below made 895
// round trips in 4 s instead of 18,736; with it 182/s, load 28).
// Meanwhile another tenant's QoS 1 round trips keep going. "Written" is
// what the client's kernel accepted: its socket buffers hold megabytes,
// and a blocked writer is woken only when a third of them is free.
func TestTLSFloodOverRateIsPaused(t *testing.T) {
	const rate = 200
	e := startEnv(t, t.TempDir(), nil)
	reg := prometheus.NewRegistry()
	n := e.routerNodeWith(t, reg, nil)
	if err := n.r.CreateTenant(ctxT(t), &tenant.Tenant{Name: "flood", Limits: tenant.Limits{MaxMessagesInPerSecond: rate}}); err != nil {
		t.Fatal(err)
	}
	n.addUser(t, "flood", "f", "pw", tenant.Permission{Pattern: "#", Actions: []tenant.Action{tenant.ActionSend, tenant.ActionReceive}})
	cert, pool := testCert(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	go n.srv.Serve(l)

	nc, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fl := &raw{t: t, nc: nc, pr: packetReader{conn: nc}, v: 4}
	if ack := fl.connect(func(p *packets.Packet) {
		p.Connect.ClientIdentifier = "flooder"
		p.Connect.UsernameFlag, p.Connect.Username = true, []byte("f@flood")
		p.Connect.PasswordFlag, p.Connect.Password = true, []byte("pw")
	}); ack.ReasonCode != 0 {
		t.Fatalf("flooder CONNACK %#x", ack.ReasonCode)
	}
	// 32 QoS 0 publishes of 64 bytes a write, as bench isolation's
	// unpaced flood does.
	var batch bytes.Buffer
	for range 32 {
		pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "fl/x", Payload: make([]byte, 64), ProtocolVersion: 4}
		if err := pk.PublishEncode(&batch); err != nil {
			t.Fatal(err)
		}
	}
	// A write blocks while the node does not read (pushed back); the
	// flood ends when the connection is closed.
	var written atomic.Int64
	flooding := make(chan struct{})
	go func() {
		defer close(flooding)
		for {
			if _, err := nc.Write(batch.Bytes()); err != nil {
				return
			}
			written.Add(32)
		}
	}()
	defer func() { nc.Close(); <-flooding }()

	// Another tenant (default, no limits) on the same node.
	v := mustV5(t, n, "victim", true, 0)
	sub(t, v, packetsSub("v/#", 1))
	refused := func() float64 {
		return gatherCounter(t, reg, "throng_tenant_quota_refused_total", "tenant", "flood", "limit", "messagesIn")
	}

	// The bucket's burst and the first buffers are spent in the first
	// second; then measure.
	time.Sleep(time.Second)
	r0, w0, t0 := refused(), written.Load(), time.Now()
	var lat []time.Duration
	for i := 0; time.Since(t0) < 4*time.Second; i++ {
		s := time.Now()
		pub(t, v, "v/x", 1, fmt.Sprint(i))
		v.next(t)
		lat = append(lat, time.Since(s))
	}
	secs := time.Since(t0).Seconds()
	perSec := (refused() - r0) / secs
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50 := lat[len(lat)/2]
	t.Logf("flood written %.0f/s, refused %.0f/s (rate %d/s); victim %d round trips, p50 %v, max %v",
		float64(written.Load()-w0)/secs, perSec, rate, len(lat), p50, lat[len(lat)-1])
	// One 4 KiB read buffer holds ~50 publishes and pauses the
	// connection for their time at the rate: about the rate a second
	// is parsed and refused. 10× leaves room for a loaded machine.
	if perSec > 10*rate {
		t.Fatalf("refused %.0f publishes a second over a rate of %d: the TLS connection is not paused", perSec, rate)
	}
	if perSec == 0 {
		t.Fatal("nothing refused: the flood did not reach the node")
	}
	if p50 > 500*time.Millisecond {
		t.Fatalf("the other tenant's median round trip is %v during the flood", p50)
	}
}

// gatherCounter reads one counter from reg by its name and labels (0 if
// it has no such child yet).
func gatherCounter(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
