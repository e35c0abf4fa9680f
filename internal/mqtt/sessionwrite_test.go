package mqtt

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// failSessionWrites makes the session writes of clientID fail from the
// from-th one on (1: the next), as the engine's Put does while the
// bucket's stream elects a leader (issue 16); retries are given 300 ms.
// The returned function ends the failures.
func failSessionWrites(t *testing.T, clientID string, from int) (stop func()) {
	t.Helper()
	testSessionWriteFor.Store(int64(300 * time.Millisecond))
	var n atomic.Int64
	var off atomic.Bool
	hook := func(c *conn) error {
		if c.clientID != clientID || off.Load() {
			return nil
		}
		if n.Add(1) >= int64(from) {
			return errors.New("nats: no response from stream (test)")
		}
		return nil
	}
	testSessionWrite.Store(&hook)
	stop = func() {
		off.Store(true)
		testSessionWrite.Store(nil)
		testSessionWriteFor.Store(0)
	}
	t.Cleanup(stop)
	return stop
}

// connectPersistent connects a raw client of version v (4 or 5) with a
// persistent session and returns it with CONNACK.
func connectPersistent(t *testing.T, e *env, v byte, id string) (*raw, *packets.Packet) {
	t.Helper()
	r := dialRaw(t, e, v)
	if v == 5 {
		return r, persistentV5(e, r, id, false)
	}
	return r, r.connect(func(p *packets.Packet) {
		p.Connect.ClientIdentifier = id
		p.Connect.Clean = false
	})
}

// closedForWrite checks that the server closes the connection without
// sending anything else (v5: DISCONNECT 0x88 first).
func closedForWrite(t *testing.T, r *raw, what string) {
	t.Helper()
	if r.v == 5 {
		pk := r.read()
		if pk == nil {
			t.Fatalf("%s: connection closed without DISCONNECT", what)
		}
		if pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != rcServerUnavailable {
			t.Fatalf("%s: got packet type %d id %d rc %#x, want DISCONNECT 0x88", what, pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
		}
	}
	if !r.closed() {
		t.Fatalf("%s: the server sent something or kept the connection open", what)
	}
}

func publishQoS2(r *raw, id uint16, topic, payload string, dup bool) {
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: dup}, PacketID: id, TopicName: topic, Payload: []byte(payload)})
}

// TestSessionWriteFailureQoS2 (issue 16): a session write that fails
// (the engine's Put, for longer than its retries) must not let anything
// act that depends on it. The cluster soak stored a QoS 2 message twice
// after its publisher moved nodes: writeSession only logged "session not
// saved" and the waiters ran anyway — the message was routed although its
// token was not stored, PUBREC went out although the routed id was not
// stored, PUBCOMP although the id's removal was not (a stale id makes a
// new message with it look like a resend: lost). Now the connection is
// closed instead, and the client's resend on its next connection is
// stored exactly once.
func TestSessionWriteFailureQoS2(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run("v"+string('0'+v), func(t *testing.T) {
			e := startEnv(t, t.TempDir(), nil)
			w := mustV5(t, e, "watch", true, 0)
			sub(t, w, packetsSub("sw/#", 2))

			// The token's write fails: the message is not routed, no
			// PUBREC; the resend is routed once.
			r, _ := connectPersistent(t, e, v, "sw-tok")
			stop := failSessionWrites(t, "sw-tok", 1)
			publishQoS2(r, 7, "sw/a", "tok", false)
			closedForWrite(t, r, "token not stored")
			w.none(t, 500*time.Millisecond)
			eventually(t, "offline", func() bool { return !e.online("sw-tok") })
			stop()
			r, ack := connectPersistent(t, e, v, "sw-tok")
			if !ack.SessionPresent || ack.ReasonCode != 0 {
				t.Fatalf("reconnect: connack %#x present %v", ack.ReasonCode, ack.SessionPresent)
			}
			publishQoS2(r, 7, "sw/a", "tok", true)
			r.expect(packets.Pubrec, 7)
			r.ack(packets.Pubrel, 7)
			r.expect(packets.Pubcomp, 7)
			if m := w.next(t); string(m.Payload) != "tok" {
				t.Fatalf("got %q", m.Payload)
			}
			w.none(t, 500*time.Millisecond)

			// The token is stored, the routed id's write fails: routed
			// once, PUBREC all the same (the token suffices), then the
			// connection is closed. The client that got PUBREC sends
			// PUBREL on its next connection: completed, not routed again.
			r, _ = connectPersistent(t, e, v, "sw-rec")
			stop = failSessionWrites(t, "sw-rec", 2)
			publishQoS2(r, 8, "sw/b", "rec", false)
			if m := w.next(t); string(m.Payload) != "rec" {
				t.Fatalf("got %q", m.Payload)
			}
			r.expect(packets.Pubrec, 8)
			closedForWrite(t, r, "routed id not stored")
			eventually(t, "offline", func() bool { return !e.online("sw-rec") })
			stop()
			r, _ = connectPersistent(t, e, v, "sw-rec")
			r.ack(packets.Pubrel, 8)
			r.expect(packets.Pubcomp, 8)
			w.none(t, 500*time.Millisecond)
			// The id is free again.
			publishQoS2(r, 8, "sw/b", "rec2", false)
			r.expect(packets.Pubrec, 8)
			if m := w.next(t); string(m.Payload) != "rec2" {
				t.Fatalf("got %q", m.Payload)
			}
			r.ack(packets.Pubrel, 8)
			r.expect(packets.Pubcomp, 8)

			// A client that lost that PUBREC resends the PUBLISH: routed
			// again under the same name, which a stored copy (a persistent
			// session's) does not take twice.
			p := mustV5(t, e, "watch-stored", false, 3600)
			sub(t, p, packetsSub("sx/s", 2))
			r, _ = connectPersistent(t, e, v, "sw-rec2")
			stop = failSessionWrites(t, "sw-rec2", 2)
			publishQoS2(r, 10, "sx/s", "rec3", false)
			if m := p.next(t); string(m.Payload) != "rec3" {
				t.Fatalf("got %q", m.Payload)
			}
			r.expect(packets.Pubrec, 10)
			closedForWrite(t, r, "routed id not stored")
			eventually(t, "offline", func() bool { return !e.online("sw-rec2") })
			stop()
			r, _ = connectPersistent(t, e, v, "sw-rec2")
			publishQoS2(r, 10, "sx/s", "rec3", true)
			r.expect(packets.Pubrec, 10)
			r.ack(packets.Pubrel, 10)
			r.expect(packets.Pubcomp, 10)
			p.none(t, time.Second)

			// The id's removal fails to be stored: no PUBCOMP; the client
			// sends PUBREL again, then a new message under the same id,
			// which must be routed, not taken for a resend.
			r, _ = connectPersistent(t, e, v, "sw-comp")
			stop = failSessionWrites(t, "sw-comp", 3)
			publishQoS2(r, 9, "sw/c", "comp", false)
			r.expect(packets.Pubrec, 9)
			if m := w.next(t); string(m.Payload) != "comp" {
				t.Fatalf("got %q", m.Payload)
			}
			r.ack(packets.Pubrel, 9)
			closedForWrite(t, r, "removal not stored")
			eventually(t, "offline", func() bool { return !e.online("sw-comp") })
			stop()
			r, _ = connectPersistent(t, e, v, "sw-comp")
			r.ack(packets.Pubrel, 9)
			r.expect(packets.Pubcomp, 9)
			publishQoS2(r, 9, "sw/c", "next", false)
			r.expect(packets.Pubrec, 9)
			if m := w.next(t); string(m.Payload) != "next" {
				t.Fatalf("got %q", m.Payload)
			}
			r.ack(packets.Pubrel, 9)
			r.expect(packets.Pubcomp, 9)
			w.none(t, 500*time.Millisecond)
		})
	}
}

// TestSessionWriteFailureRefusesConnect (issue 16): when the CONNECT's
// session write fails, the CONNECT is refused with server unavailable
// (0x88; 3.1.1: 0x03) rather than accepted with a session record the
// engine does not have — and the CONNECT does not hang.
func TestSessionWriteFailureRefusesConnect(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	for _, v := range []byte{4, 5} {
		id := "cw" + string('0'+v)
		stop := failSessionWrites(t, id, 1)
		start := time.Now()
		_, ack := connectPersistent(t, e, v, id)
		want := byte(rcServerUnavailable)
		if v == 4 {
			want = v3ConnackCode(rcServerUnavailable)
		}
		if ack.ReasonCode != want {
			t.Fatalf("v%d: connack %#x, want %#x", v, ack.ReasonCode, want)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("v%d: refused after %s", v, d)
		}
		stop()
		eventually(t, "offline", func() bool { return !e.online(id) })
		_, ack = connectPersistent(t, e, v, id)
		if ack.ReasonCode != 0 {
			t.Fatalf("v%d: connack %#x after the engine came back", v, ack.ReasonCode)
		}
	}
}

// TestSlowSessionWriteClosedConnection (issue 16): a session write that
// completes only after the connection closed (the engine without a
// leader for seconds, the client gone to another node, which read the
// record before the write landed) must not let the QoS 2 message it
// held the token of be routed: the other node routes the client's resend
// under a name of its own, and the message would be stored twice.
func TestSlowSessionWriteClosedConnection(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	w := mustV5(t, e, "watch", true, 0)
	sub(t, w, packetsSub("slow/#", 2))
	r, _ := connectPersistent(t, e, 4, "slow")

	entered := make(chan struct{})
	release := make(chan struct{})
	var once atomic.Bool
	hook := func(c *conn) error {
		if c.clientID == "slow" && once.CompareAndSwap(false, true) {
			close(entered)
			<-release
		}
		return nil
	}
	testSessionWrite.Store(&hook)
	t.Cleanup(func() { testSessionWrite.Store(nil) })

	publishQoS2(r, 5, "slow/a", "m", false)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the token's write did not start")
	}
	r.nc.Close()
	eventually(t, "offline", func() bool { return !e.online("slow") })
	close(release)
	w.none(t, time.Second)

	// The resend on the next connection is routed once.
	r, ack := connectPersistent(t, e, 4, "slow")
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	publishQoS2(r, 5, "slow/a", "m", true)
	r.expect(packets.Pubrec, 5)
	if m := w.next(t); string(m.Payload) != "m" {
		t.Fatalf("got %q", m.Payload)
	}
	r.ack(packets.Pubrel, 5)
	r.expect(packets.Pubcomp, 5)
	w.none(t, 500*time.Millisecond)
}
