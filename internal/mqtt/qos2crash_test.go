package mqtt

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// engineStates copies the engine's consumer states (JetStream
// obs/<consumer>/o.dat) of the store under dir.
func engineStates(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(filepath.Join(dir, "jetstream"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && filepath.Base(filepath.Dir(p)) == "obs" {
			b, err := os.ReadFile(filepath.Join(p, "o.dat"))
			if err != nil && !os.IsNotExist(err) {
				return err
			}
			out[p] = b // nil: no state written yet
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// forgetSettlements puts back consumer states taken earlier, as a crash
// does that comes before the engine wrote the settlements made since
// (nats-server writes a consumer's state at most every 100 ms, and the
// router acknowledges batch entries and records their progress lazily).
func forgetSettlements(t *testing.T, states map[string][]byte) {
	t.Helper()
	for p, b := range states {
		f := filepath.Join(p, "o.dat")
		if b == nil {
			if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// connect311 connects a raw MQTT 3.1.1 client with a persistent session.
func connect311(t *testing.T, e *env, id string) *raw {
	t.Helper()
	r := dialRaw(t, e, 4)
	ack := r.connect(func(p *packets.Packet) {
		p.Connect.ClientIdentifier = id
		p.Connect.Clean = false
	})
	if ack.ReasonCode != 0 {
		t.Fatalf("connack %#x", ack.ReasonCode)
	}
	return r
}

// noPublish fails if the server sends a PUBLISH within d.
func (r *raw) noPublish(d time.Duration) {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(d))
	for {
		fh, body, err := r.pr.readPacket(0)
		if err != nil {
			if !isTimeout(err) {
				r.t.Fatalf("connection ended: %v", err)
			}
			return
		}
		if fh.Type == packets.Publish {
			pk := &packets.Packet{FixedHeader: fh, ProtocolVersion: r.v}
			_ = pk.PublishDecode(body)
			r.t.Fatalf("%q sent again under packet id %d (dup %v): delivered twice at QoS 2", pk.Payload, pk.PacketID, fh.Dup)
		}
	}
}

// TestQoS2CompletedNotResentAfterCrashes (issue 11): messages a persistent
// MQTT 3.1.1 session received at QoS 2 and completed (PUBCOMP) just
// before a crash that the engine did not survive with their settlements
// come again from the engine; the session must settle them without
// sending them, under a new packet id, a second time — for many
// messages (more than the 64 the session record used to keep, a third of
// a second of the soak's load), and again after a second crash before the
// engine heard of those settlements (the record written on reconnect used
// to drop them: the soak's kill9-startup and storm cycles).
func TestQoS2CompletedNotResentAfterCrashes(t *testing.T) {
	const n = 100
	dir := t.TempDir()
	e := startEnv(t, dir, nil)
	r := connect311(t, e, "sub")
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1, Filters: packets.Subscriptions{{Filter: "c2/#", Qos: 2}}})
	r.expect(packets.Suback, 1)
	r.nc.Close()
	eventually(t, "offline", func() bool { return !e.online("sub") })
	p := mustV5(t, e, "pub", true, 0)
	for i := range n {
		pub(t, p, fmt.Sprintf("c2/%d", i%4), 2, fmt.Sprint("m", i))
	}
	e.stop()
	before := engineStates(t, dir) // the stored messages, none delivered

	// The session receives and completes them all.
	e = startEnv(t, dir, nil)
	r = connect311(t, e, "sub")
	for got, done := 0, 0; done < n; {
		switch pk := r.read(); {
		case pk == nil:
			t.Fatal("connection closed")
		case pk.FixedHeader.Type == packets.Publish:
			if want := fmt.Sprint("m", got); string(pk.Payload) != want || pk.FixedHeader.Qos != 2 {
				t.Fatalf("got %q qos %d, want %q qos 2", pk.Payload, pk.FixedHeader.Qos, want)
			}
			got++
			r.ack(packets.Pubrec, pk.PacketID)
		case pk.FixedHeader.Type == packets.Pubrel:
			done++
			r.ack(packets.Pubcomp, pk.PacketID)
		default:
			t.Fatalf("unexpected packet type %d", pk.FixedHeader.Type)
		}
	}
	time.Sleep(100 * time.Millisecond) // the last PUBCOMP is handled
	r.nc.Close()
	eventually(t, "offline", func() bool { return !e.online("sub") })
	e.stop()

	// Crash 1: the engine lost the settlements and delivers everything
	// again; the session has them and sends nothing.
	forgetSettlements(t, before)
	e = startEnv(t, dir, nil)
	r = connect311(t, e, "sub")
	r.noPublish(time.Second)
	r.nc.Close()
	eventually(t, "offline", func() bool { return !e.online("sub") })
	e.stop()

	// Crash 2, before the engine heard of the settlements made after
	// crash 1: still nothing is sent again.
	forgetSettlements(t, before)
	e = startEnv(t, dir, nil)
	r = connect311(t, e, "sub")
	r.noPublish(time.Second)

	// Exactly once, not at most once: a new message still comes.
	p = mustV5(t, e, "pub", true, 0)
	pub(t, p, "c2/x", 2, "after")
	m := r.expect(packets.Publish, 0)
	if string(m.Payload) != "after" {
		t.Fatalf("got %q, want %q", m.Payload, "after")
	}
	r.ack(packets.Pubrec, m.PacketID)
	r.expect(packets.Pubrel, m.PacketID)
	r.ack(packets.Pubcomp, m.PacketID)
}

// offlineWithKept leaves a 3.1.1 persistent session id subscribed to
// id/# at QoS 1, offline, with one message "kept" stored for it.
func offlineWithKept(t *testing.T, e *env, id string) {
	t.Helper()
	r := connect311(t, e, id)
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1, Filters: packets.Subscriptions{{Filter: id + "/#", Qos: 1}}})
	r.expect(packets.Suback, 1)
	r.nc.Close()
	eventually(t, "offline", func() bool { return !e.online(id) })
	p := mustV5(t, e, "pub", true, 0)
	pub(t, p, id+"/1", 1, "kept")
}

// TestRestoreFailureKeepsSubscription (issue 11): a subscription of a
// resumed session that cannot be attached in time (a node busy with a
// reconnect storm) stays in the session: the connection is closed and the
// client's next connection restores it. It used to be dropped, and the
// client, told that its session was present, received nothing more.
func TestRestoreFailureKeepsSubscription(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	offlineWithKept(t, e, "rs")

	testRestoreTimeout.Store(int64(time.Nanosecond)) // no time to attach
	t.Cleanup(func() { testRestoreTimeout.Store(0) })
	r := connect311(t, e, "rs")
	if !r.closed() {
		t.Fatal("the connection stays open without its subscription")
	}
	eventually(t, "offline", func() bool { return !e.online("rs") })

	testRestoreTimeout.Store(0)
	r = connect311(t, e, "rs")
	m := r.expect(packets.Publish, 0)
	if string(m.Payload) != "kept" {
		t.Fatalf("got %q, want %q", m.Payload, "kept")
	}
	r.ack(packets.Puback, m.PacketID)
}

// TestRestoreEngineErrorKeepsSubscription (issue 11, found by the cluster
// soak): a subscription whose attach fails with an engine error — a
// stream without a leader answers 503 — stays in the session like a
// timeout; only a permanent refusal (the permission withdrawn) drops it.
// The 503 used to drop it: the session was resumed without it and its
// acknowledged messages were never delivered.
func TestRestoreEngineErrorKeepsSubscription(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	offlineWithKept(t, e, "re")

	inject := func(err error) {
		testRestoreErr.Store(&err)
		t.Cleanup(func() { testRestoreErr.Store(nil) })
	}
	engineErr := reason(rcUnspecified, "nats: API error: code=503 err_code=10008 description=JetStream system temporarily unavailable", nil)
	inject(engineErr)
	r := connect311(t, e, "re")
	if !r.closed() {
		t.Fatal("the connection stays open without its subscription after an engine error")
	}
	eventually(t, "offline", func() bool { return !e.online("re") })

	testRestoreErr.Store(nil)
	r = connect311(t, e, "re")
	m := r.expect(packets.Publish, 0)
	if string(m.Payload) != "kept" {
		t.Fatalf("got %q, want %q", m.Payload, "kept")
	}
	r.ack(packets.Puback, m.PacketID)
	r.nc.Close()
	eventually(t, "offline", func() bool { return !e.online("re") })

	// A permanent refusal drops the subscription; the session goes on
	// without it.
	inject(reason(rcNotAuthorized, "not authorized", nil))
	r = connect311(t, e, "re")
	if r.closed() {
		t.Fatal("a withdrawn permission closed the connection instead of dropping the subscription")
	}
	testRestoreErr.Store(nil)
}
