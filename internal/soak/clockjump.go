package soak

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// The clockjump fault jumps the node's (on a cluster: every node's) wall
// clock (the one of its expiry decisions, internal/clock) forward and
// back while every stream goes on, with messages of several TTLs waiting
// in a persistent session and sessions of several expiry intervals
// disconnected. The ledger then
// checks (stream mqtt5-expiry) that nothing acknowledged is missing that
// could not have expired, and that nothing is delivered once expired; the
// other streams must not notice the jumps at all.

// clockJump is how far the clock jumps: far beyond the short TTLs, well
// within the long ones.
const clockJump = 10 * time.Minute

// expiryTopic is what the mqtt5-expiry stream's persistent session
// subscribes to.
const expiryTopic = "soak/exp"

func faultClockJump(ctx context.Context, h *harness) (note string, err error) {
	st := h.expiry
	ctl := h.ctl(st)
	var problems []string
	jump := func(off time.Duration) error { return h.setClocks(ctx, off) }
	defer func() {
		if e := jump(0); e != nil && err == nil {
			err = e
		}
		ctl.away.Store(false)
	}()
	away := func() error {
		ctl.away.Store(true)
		ctl.reconnect()
		for deadline := time.Now().Add(15 * time.Second); ctl.online.Load(); {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return errors.New("clockjump: the expiry stream's consumer did not disconnect")
			}
			sleep(ctx, 20*time.Millisecond)
		}
		return nil
	}
	back := func() {
		ctl.away.Store(false)
		h.catchUp(ctx, st, 5*time.Second)
	}

	pub, _, err := h.m5Connect(ctx, nil, "soak-exp-pub", true, nil, nil, nil)
	if err != nil {
		return "", fmt.Errorf("clockjump: publisher: %w", err)
	}
	defer closeM5(pub)
	pid := h.newPID()
	send := func(ttl time.Duration, n int) error {
		for i := 0; i < n; i++ {
			var seq int
			p := &paho.Publish{Topic: fmt.Sprintf("%s/p%d", expiryTopic, pid), QoS: 1}
			if ttl > 0 {
				seq = st.NextTTL(pid, ttl)
				secs := uint32(ttl / time.Second)
				p.Properties = &paho.PublishProperties{MessageExpiry: &secs}
			} else {
				seq = st.Next(pid)
			}
			p.Payload = encodePayload(st.Name, pid, seq, payload)
			pctx, cancel := context.WithTimeout(ctx, opTimeout)
			resp, err := pub.Publish(pctx, p)
			cancel()
			if err != nil {
				return fmt.Errorf("clockjump: publish: %w", err)
			}
			if resp != nil && resp.ReasonCode >= 0x80 {
				st.Refuse(pid, seq)
				h.noteRefusal(st, fmt.Sprintf("MQTT 5 reason 0x%02x", resp.ReasonCode))
				continue
			}
			st.Ack(pid, seq)
		}
		return nil
	}
	// Sessions that expire 2 minutes, and a day, after they disconnect.
	sessions := func(present map[string]bool) {
		for cid, want := range present {
			got, err := h.expirySession(ctx, cid)
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("session %s: %v", cid, err))
			case got != want && want:
				h.finding("clockjump: session %s gone after the jump although it had not expired", cid)
				problems = append(problems, cid+" lost")
			case got != want:
				h.finding("clockjump: session %s still present after the jump although it had expired", cid)
				problems = append(problems, cid+" not expired")
			}
		}
	}

	// 1. At offset 0: messages of 1 min, 1 h and without a TTL wait in the
	// session; sessions of 2 min and 1 day are disconnected.
	if err := away(); err != nil {
		return "", err
	}
	for _, b := range []struct {
		ttl time.Duration
		n   int
	}{{time.Minute, 20}, {time.Hour, 20}, {0, 20}} {
		if err := send(b.ttl, b.n); err != nil {
			return "", err
		}
	}
	for _, cid := range []string{"soak-exp-s2m", "soak-exp-s1d"} {
		if _, err := h.expirySession(ctx, cid); err != nil {
			return "", fmt.Errorf("clockjump: session %s: %w", cid, err)
		}
	}

	// 2. Forward by clockJump: the 1-minute messages and the 2-minute
	// session have expired, nothing else has.
	if err := jump(clockJump); err != nil {
		return "", err
	}
	if err := send(time.Minute, 20); err != nil { // expire at +11 min
		return "", err
	}
	if err := send(time.Hour, 20); err != nil {
		return "", err
	}
	back()
	sessions(map[string]bool{"soak-exp-s2m": false, "soak-exp-s1d": true})
	// The 2-minute session again, disconnected at +10 min.
	if _, err := h.expirySession(ctx, "soak-exp-s2m"); err != nil {
		return "", err
	}

	// 3. Messages of 30 s and 5 min wait, published at +10 min, then the
	// clock goes back by clockJump: nothing expires early.
	if err := away(); err != nil {
		return "", err
	}
	if err := send(30*time.Second, 20); err != nil {
		return "", err
	}
	if err := send(5*time.Minute, 20); err != nil {
		return "", err
	}
	if err := jump(0); err != nil {
		return "", err
	}
	if err := send(time.Minute, 20); err != nil {
		return "", err
	}
	back()
	sessions(map[string]bool{"soak-exp-s2m": true, "soak-exp-s1d": true})

	s := st.Stats()
	note = fmt.Sprintf("clock +%s and back; %s: %d sent with a TTL, %d expired, %d delivered after expiry, %d missing",
		clockJump, st.Name, s.TTLSent, s.Expired, s.ExpiredDelivered, s.Missing)
	if len(problems) > 0 {
		note += "; sessions: " + strings.Join(problems, ", ")
	}
	return note, nil
}

// setClocks jumps every node's wall clock to ours plus off. On a cluster
// all nodes jump together: the ledger knows one wall clock (a message's
// expiry is fixed by the node that accepts it and decided by the one that
// delivers it), so the jump is the cluster's, from the first node's
// offset file written to the last one's acknowledgement (the ledger allows
// either clock meanwhile). A node that is down applies it when it starts.
func (h *harness) setClocks(ctx context.Context, off time.Duration) error {
	var first, last time.Time
	var errs []error
	for _, n := range h.nodes {
		w, a, err := n.SetClock(ctx, off)
		if first.IsZero() {
			first = w
		}
		last = a
		errs = append(errs, err)
	}
	noteClock(first, last, off)
	return errors.Join(errs...)
}

// expirySession connects an MQTT 5 client with a persistent session that
// expires 2 minutes after it disconnects ("-s2m") or a day ("-s1d"),
// disconnects it normally, and reports whether the session was present.
func (h *harness) expirySession(ctx context.Context, cid string) (bool, error) {
	exp := uint32(24 * 3600)
	if strings.HasSuffix(cid, "-s2m") {
		exp = 120
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", h.node.MQTT)
	if err != nil {
		return false, err
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: cid, Conn: conn})
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ca, err := c.Connect(cctx, &paho.Connect{ClientID: cid, CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	if err != nil {
		conn.Close()
		return false, err
	}
	closeM5(c)
	return ca.SessionPresent, nil
}

// catchUp waits until the stream misses nothing, or nothing was delivered
// for quiet.
func (h *harness) catchUp(ctx context.Context, st *Stream, quiet time.Duration) {
	last, since := st.progress(), time.Now()
	for ctx.Err() == nil && st.Stats().Missing > 0 && time.Since(since) < quiet {
		sleep(ctx, 100*time.Millisecond)
		if p := st.progress(); p != last {
			last, since = p, time.Now()
		}
	}
}
