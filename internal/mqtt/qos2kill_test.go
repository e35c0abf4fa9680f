package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// killChildEnv makes TestQoS2OutboundSurvivesKill run as the broker child:
// the engine, router and MQTT server on the data directory it names.
const killChildEnv = "THRONG_MQTT_KILL_CHILD"

// killChild is the broker process of the kill -9 tests: it prints its
// address and serves until it is killed (or stdin closes).
func killChild(t *testing.T, dir string) {
	e := startEnv(t, dir, nil)
	fmt.Printf("kill-child: addr %s\n", e.addr)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
	}
}

// broker is a broker child process (the test binary re-executed) that a
// test kills with SIGKILL: the engine dies with it, as in production,
// with whatever it had not yet written.
type broker struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	log  *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startBroker starts a broker child on dir; test names the test function
// that runs killChild when killChildEnv is set.
func startBroker(t *testing.T, test, dir string) *broker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), killChildEnv+"="+dir)
	b := &broker{t: t, cmd: cmd, log: &syncBuf{}}
	cmd.Stderr = b.log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.StdinPipe(); err != nil { // held open: the child serves until killed
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.kill)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker child's log:\n%s", b.log)
		}
	})
	addr := make(chan string, 1)
	go func() {
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			if rest, ok := strings.CutPrefix(lines.Text(), "kill-child: addr "); ok {
				addr <- rest
			}
		}
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("broker child ended before it served:\n%s", b.log)
		}
		b.addr = a
	case <-time.After(60 * time.Second):
		t.Fatalf("broker child did not start:\n%s", b.log)
	}
	return b
}

// kill ends the child with SIGKILL and waits for it.
func (b *broker) kill() {
	if b.cmd.ProcessState != nil {
		return
	}
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
}

func (b *broker) dial(v byte) *raw {
	b.t.Helper()
	nc, err := net.Dial("tcp", b.addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { nc.Close() })
	return &raw{t: b.t, nc: nc, pr: packetReader{conn: nc}, v: v}
}

// disconnect sends DISCONNECT and waits until the server closed the
// connection and a moment more, so that the session is offline: a message
// published meanwhile would go to the connection and come back later,
// after newer ones.
func (r *raw) disconnect() {
	r.t.Helper()
	if _, err := r.nc.Write([]byte{packets.Disconnect << 4, 0}); err != nil {
		r.t.Fatal(err)
	}
	if !r.closed() {
		r.t.Fatal("connection not closed after DISCONNECT")
	}
	time.Sleep(200 * time.Millisecond)
}

// connect311 connects a raw MQTT 3.1.1 client with a persistent session
// and returns it with CONNACK's session present flag.
func (b *broker) connect311(id string) (*raw, bool) {
	b.t.Helper()
	r := b.dial(4)
	ack := r.connect(func(p *packets.Packet) {
		p.Connect.ClientIdentifier = id
		p.Connect.Clean = false
	})
	if ack.ReasonCode != 0 {
		b.t.Fatalf("connack %#x", ack.ReasonCode)
	}
	return r, ack.SessionPresent
}

// publish2 publishes payloads at QoS 2 from a raw MQTT 3.1.1 client, all
// PUBLISH packets in one write (the soak's 3.1.1 publisher has 16 in
// flight), so that the router stores them in batch entries; it returns
// once every exchange is complete (PUBCOMP).
func (b *broker) publish2(topic string, payloads []string) {
	b.t.Helper()
	r := b.dial(4)
	r.connect(func(p *packets.Packet) { p.Connect.ClientIdentifier = "kill-pub" })
	var buf bytes.Buffer
	for i, p := range payloads {
		pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: uint16(i + 1), TopicName: topic, Payload: []byte(p), ProtocolVersion: 4}
		if err := pk.PublishEncode(&buf); err != nil {
			b.t.Fatal(err)
		}
	}
	if _, err := r.nc.Write(buf.Bytes()); err != nil {
		b.t.Fatal(err)
	}
	for done := 0; done < len(payloads); {
		pk := r.read()
		switch {
		case pk == nil:
			b.t.Fatal("publisher: connection closed")
		case pk.FixedHeader.Type == packets.Pubrec:
			if pk.ReasonCode >= 0x80 {
				b.t.Fatalf("publisher: PUBREC %#x", pk.ReasonCode)
			}
			r.ack(packets.Pubrel, pk.PacketID)
		case pk.FixedHeader.Type == packets.Pubcomp:
			done++
		default:
			b.t.Fatalf("publisher: unexpected packet type %d", pk.FixedHeader.Type)
		}
	}
	r.nc.Close()
}

// TestQoS2OutboundSurvivesKill (issue 11): a persistent MQTT 3.1.1
// session subscribed at QoS 2 has received messages — completed ones,
// PUBRECed ones (PUBREL received, no PUBCOMP), and ones it has not
// acknowledged at all — when the broker process is killed with SIGKILL.
// After the restart and the client's reconnect, nothing it has may come
// as a new message: PUBREL again for the PUBRECed ones, and the
// unacknowledged ones again only with their packet id and DUP=1, which a
// client keeping its session state recognises [MQTT-4.3.3], [MQTT-4.4.0-1]
// (paho.mqtt.golang, like many clients, passes a QoS 2 message on when it
// receives the PUBLISH: one sent again under a new packet id is delivered
// twice). The second case also loses what the engine wrote after the
// messages were stored (its consumer state and the router's settlements),
// as a kill right after a restart can (the soak's kill9-startup).
func TestQoS2OutboundSurvivesKill(t *testing.T) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		killChild(t, dir)
		return
	}
	for _, forget := range []bool{false, true} {
		t.Run("forget="+strconv.FormatBool(forget), func(t *testing.T) {
			qos2KillCase(t, forget)
		})
	}
}

func qos2KillCase(t *testing.T, forget bool) {
	const (
		n        = 48 // three entries of 16
		complete = 16 // PUBREC, PUBREL, PUBCOMP
		released = 24 // PUBREC and PUBREL: [complete, released)
	)
	dir := t.TempDir()
	b := startBroker(t, "TestQoS2OutboundSurvivesKill", dir)
	r, _ := b.connect311("k2")
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1, Filters: packets.Subscriptions{{Filter: "k2/#", Qos: 2}}})
	r.expect(packets.Suback, 1)
	r.disconnect()

	payloads := make([]string, n)
	for i := range payloads {
		payloads[i] = "m" + strconv.Itoa(i)
	}
	for i := 0; i < n; i += 16 {
		b.publish2("k2/t", payloads[i:i+16])
	}
	var before map[string][]byte
	if forget {
		b.kill()
		before = engineStates(t, dir) // stored, never delivered
		b = startBroker(t, "TestQoS2OutboundSurvivesKill", dir)
	}

	// The session gets every message and acknowledges some, then the
	// broker is killed.
	r, present := b.connect311("k2")
	if !present {
		t.Fatal("session not present")
	}
	ids := make([]uint16, n) // packet id of each message
	idx := map[uint16]int{}
	for got := 0; got < n; got++ {
		pk := r.expect(packets.Publish, 0)
		if want := payloads[got]; string(pk.Payload) != want || pk.FixedHeader.Qos != 2 {
			t.Fatalf("got %q qos %d, want %q qos 2", pk.Payload, pk.FixedHeader.Qos, want)
		}
		ids[got], idx[pk.PacketID] = pk.PacketID, got
	}
	for i := range released {
		r.ack(packets.Pubrec, ids[i])
	}
	for i := range released {
		r.expect(packets.Pubrel, ids[i])
	}
	for i := range complete {
		r.ack(packets.Pubcomp, ids[i])
	}
	b.kill()
	if forget {
		forgetSettlements(t, before)
	}

	b = startBroker(t, "TestQoS2OutboundSurvivesKill", dir)
	r, present = b.connect311("k2")
	if !present {
		t.Fatal("session not present after the kill")
	}
	// PUBREL (again) for the PUBRECed ones — for completed ones too if
	// the kill came before their PUBCOMP was handled — and the others
	// again with their packet id and DUP.
	again := map[int]bool{} // sent again (and PUBRECed)
	finished := 0           // of those, PUBREL received
	for finished < n-released {
		pk := r.read()
		if pk == nil {
			t.Fatal("connection closed")
		}
		switch pk.FixedHeader.Type {
		case packets.Pubrel:
			i, ok := idx[pk.PacketID]
			switch {
			case ok && i < released:
			case ok && again[i]:
				finished++
			default:
				t.Fatalf("PUBREL for packet id %d, which the client has not PUBRECed", pk.PacketID)
			}
			r.ack(packets.Pubcomp, pk.PacketID)
		case packets.Publish:
			i, err := strconv.Atoi(strings.TrimPrefix(string(pk.Payload), "m"))
			if err != nil || i < 0 || i >= n {
				t.Fatalf("unexpected message %q", pk.Payload)
			}
			switch {
			case i < released:
				t.Fatalf("%q (PUBRECed before the kill under packet id %d) sent again under packet id %d (dup %v): delivered twice at QoS 2",
					pk.Payload, ids[i], pk.PacketID, pk.FixedHeader.Dup)
			case pk.PacketID != ids[i] || !pk.FixedHeader.Dup:
				t.Fatalf("%q (sent before the kill under packet id %d) sent again under packet id %d, dup %v: want its packet id and DUP=1",
					pk.Payload, ids[i], pk.PacketID, pk.FixedHeader.Dup)
			case again[i]:
				t.Fatalf("%q sent twice after the restart", pk.Payload)
			}
			again[i] = true
			r.ack(packets.Pubrec, pk.PacketID)
		default:
			t.Fatalf("unexpected packet type %d", pk.FixedHeader.Type)
		}
	}
	r.noPublish(time.Second)

	// Exactly once, not at most once: a new message still comes.
	b.publish2("k2/t", []string{"after"})
	m := r.expect(packets.Publish, 0)
	if string(m.Payload) != "after" || m.FixedHeader.Dup {
		t.Fatalf("got %q dup %v, want %q", m.Payload, m.FixedHeader.Dup, "after")
	}
	r.ack(packets.Pubrec, m.PacketID)
	r.expect(packets.Pubrel, m.PacketID)
	r.ack(packets.Pubcomp, m.PacketID)
}

// TestQoS2InboundStoredOnce (issue 11): a QoS 2 message a persistent
// session published is routed once even when its node dies after the
// message was stored and before anything else about it was written (the
// session write of the packet id was still on its way): the client,
// without PUBREC, resends it with DUP to another node, which must not
// store it a second time. The soak saw this as runs of up to 16 messages
// (its 3.1.1 publisher's window) delivered twice in a row after a kill -9,
// under consecutive packet ids.
func TestQoS2InboundStoredOnce(t *testing.T) {
	a := startEnv(t, t.TempDir(), shortLease)
	b := a.node(t, shortLease)
	w := mustV5(t, b, "watch", false, 3600)
	sub(t, w, paho.SubscribeOptions{Topic: "in2/#", QoS: 2}) // a persistent session: stored

	// Node a dies once the messages are routed: nothing it writes after
	// that reaches the engine.
	hook := func(c *conn) {
		if c.s == a.srv {
			a.srv.halted.Store(true)
		}
	}
	testQoS2Routed.Store(&hook)
	t.Cleanup(func() { testQoS2Routed.Store(nil) })
	r := dialRaw(t, a, 4)
	r.connect(func(p *packets.Packet) {
		p.Connect.ClientIdentifier = "pub-in2"
		p.Connect.Clean = false
	})
	// Node b's sweeper takes a session of a node without a lease for one
	// long dead: a's lease is there first.
	eventually(t, "node a's lease", func() bool {
		_, _, nodes := b.srv.stateOf("default")
		_, ok := b.srv.liveNodes(ctxT(t), nodes)[a.srv.node]
		return ok
	})
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 9, TopicName: "in2/x", Payload: []byte("once")})
	if m := w.next(t); string(m.Payload) != "once" {
		t.Fatalf("got %q", m.Payload)
	}
	testQoS2Routed.Store(nil)
	a.srv.halt()

	// The client did not get PUBREC (or lost it with the connection):
	// it resends the PUBLISH to node b.
	r = dialRaw(t, b, 4)
	ack := r.connect(func(p *packets.Packet) {
		p.Connect.ClientIdentifier = "pub-in2"
		p.Connect.Clean = false
	})
	if !ack.SessionPresent {
		t.Fatal("session lost")
	}
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: true}, PacketID: 9, TopicName: "in2/x", Payload: []byte("once")})
	r.expect(packets.Pubrec, 9)
	r.ack(packets.Pubrel, 9)
	if pc := r.expect(packets.Pubcomp, 9); pc.ReasonCode != 0 {
		t.Fatalf("pubcomp %#x", pc.ReasonCode)
	}
	w.none(t, time.Second)
	// The id is free again: a new message with it is routed.
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 9, TopicName: "in2/x", Payload: []byte("next")})
	r.expect(packets.Pubrec, 9)
	if m := w.next(t); string(m.Payload) != "next" {
		t.Fatalf("got %q", m.Payload)
	}
	r.ack(packets.Pubrel, 9)
	r.expect(packets.Pubcomp, 9)
}
