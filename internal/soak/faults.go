package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/Azure/go-amqp"
	paho "github.com/eclipse/paho.golang/paho"
)

// A fault runs in the middle of a cycle while the clients keep going; it
// returns a note for the progress line. An error means the fault could not
// be carried out as intended (the run fails), not that the checker found a
// violation (that is in the streams' figures).
type faultFunc func(ctx context.Context, h *harness) (string, error)

var faultFuncs map[string]faultFunc

func init() {
	faultFuncs = map[string]faultFunc{
		"kill9":         faultKill9,
		"kill9-startup": faultKill9Startup,
		"kill9-purge":   faultKill9Purge,
		"stopcont":      faultStopCont,
		"slow":          faultSlow,
		"stuck":         faultStuck,
		"storm":         faultStorm,
		"diskfull":      faultDiskFull,
		"clockjump":     faultClockJump,
	}
}

// faultKill9 kills the node (on a cluster: a random one) under load at a
// random point of the cycle and restarts it.
func faultKill9(ctx context.Context, h *harness) (string, error) {
	n := h.victim()
	n.Kill()
	t0 := time.Now()
	if err := h.restartNode(ctx, n); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s killed -9 under load; ready again in %s", n.label(), time.Since(t0).Round(10*time.Millisecond)), nil
}

// faultKill9Startup kills the node, starts it, and kills it again during
// its startup recovery (a random point within the last recovery time).
func faultKill9Startup(ctx context.Context, h *harness) (string, error) {
	n := h.victim()
	n.Kill()
	h.mu.Lock()
	rec := h.res.recoverMax
	h.mu.Unlock()
	if rec < 200*time.Millisecond {
		rec = 200 * time.Millisecond
	}
	if err := n.Start(); err != nil {
		return "", err
	}
	d := time.Duration(h.rnd.Int64N(int64(rec)))
	sleep(ctx, d)
	when := "before ready"
	if probeReady(n) {
		when = "after ready"
	}
	n.Kill()
	t0 := time.Now()
	if err := h.restartNode(ctx, n); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s killed -9, restarted, killed -9 again %s into startup (%s); ready in %s",
		n.label(), d.Round(time.Millisecond), when, time.Since(t0).Round(10*time.Millisecond)), nil
}

func probeReady(n *Node) bool {
	c := net.Dialer{Timeout: 200 * time.Millisecond}
	conn, err := c.Dial("tcp", n.Admin)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	_, _ = io.WriteString(conn, "GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n")
	b := make([]byte, 12)
	_, err = io.ReadFull(conn, b)
	return err == nil && strings.Contains(string(b), "200")
}

var purgeSeq atomic.Int64

// faultKill9Purge fills a queue, deletes it (the admin API's DELETE removes
// its stored messages: a purge of the whole stream) and kills the node
// while that runs. The other streams must not notice; the queue must be
// gone or deletable after the restart.
func faultKill9Purge(ctx context.Context, h *harness) (string, error) {
	name := fmt.Sprintf("soak/purge/%d", purgeSeq.Add(1))
	if err := h.node.CreateAddress(ctx, fmt.Sprintf(`{"name":%q,"type":"queue"}`, name)); err != nil {
		return "", err
	}
	const n = 20000
	conn, sess, err := h.amqpDial(ctx, nil)
	if err != nil {
		return "", err
	}
	snd, err := sess.NewSender(ctx, name, nil)
	if err != nil {
		conn.Close()
		return "", err
	}
	st := NewStream("purge", Semantics{})
	filled := 0
	for filled < n && ctx.Err() == nil {
		if !h.amqpBatch(ctx, st, 1, snd, 500, opTimeout) {
			break
		}
		filled += 500
	}
	conn.Close()
	path := "/api/tenants/default/addresses/" + url.PathEscape(name)
	delDone := make(chan string, 1)
	go func() {
		code, _, err := h.node.admin(ctx, "DELETE", path, "")
		delDone <- fmt.Sprintf("%d %v", code, err)
	}()
	// Deleting 20,000 stored messages takes a few milliseconds.
	d := time.Duration(h.rnd.Int64N(int64(10 * time.Millisecond)))
	sleep(ctx, d)
	h.node.Kill()
	del := <-delDone
	if err := h.restart(ctx); err != nil {
		return "", err
	}
	code, _, err := h.node.admin(ctx, "GET", path, "")
	if err != nil {
		return "", err
	}
	after := "gone"
	if code == 200 {
		c2, body, err := h.node.admin(ctx, "DELETE", path, "")
		if err != nil || c2 != 204 {
			return "", fmt.Errorf("queue %s survived the purge crash and cannot be deleted: HTTP %d %s %v", name, c2, body, err)
		}
		after = "still there, deleted again"
	}
	return fmt.Sprintf("queue of %d messages deleted, killed -9 %s later (delete answered: %s); after restart: %s",
		st.acked, d.Round(time.Millisecond), del, after), nil
}

// faultStopCont freezes the node (on a cluster: a random one) with
// SIGSTOP for 1–5 s.
func faultStopCont(ctx context.Context, h *harness) (string, error) {
	n := h.victim()
	d := time.Second + time.Duration(h.rnd.Int64N(int64(4*time.Second)))
	if err := n.Signal(syscall.SIGSTOP); err != nil {
		return "", err
	}
	sleep(ctx, d)
	if err := n.Signal(syscall.SIGCONT); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s SIGSTOP for %s", n.label(), d.Round(10*time.Millisecond)), nil
}

// pickStreams chooses k distinct streams with producers at random (among
// cfg.Only, when set).
func (h *harness) pickStreams(k int) []*Stream {
	idx := h.rnd.Perm(len(h.streams))
	var out []*Stream
	for _, i := range idx {
		st := h.streams[i]
		if len(out) < k && st != h.expiry && (len(h.cfg.Only) == 0 || slices.Contains(h.cfg.Only, st.Name)) {
			out = append(out, st)
		}
	}
	return out
}

// faultSlow makes two consumers take 20 ms per message (slower than their
// producers) for a third of the interval.
func faultSlow(ctx context.Context, h *harness) (string, error) {
	slow := h.pickStreams(2)
	var names []string
	for _, st := range slow {
		h.ctl(st).delay.Store(int64(20 * time.Millisecond))
		names = append(names, st.Name)
	}
	d := h.cfg.Interval / 3
	stalled := h.watchOthers(ctx, slow, d)
	for _, st := range slow {
		h.ctl(st).delay.Store(0)
	}
	return fmt.Sprintf("slow consumers %s for %s%s", strings.Join(names, ","), d.Round(time.Second), stalled), nil
}

// faultStuck makes one or two consumers stop handling messages (they keep
// their connections) for 2 s to 75 s, bounded by the interval.
func faultStuck(ctx context.Context, h *harness) (string, error) {
	stuck := h.pickStreams(1 + h.rnd.IntN(2))
	choices := []time.Duration{2 * time.Second, 10 * time.Second, 30 * time.Second, 75 * time.Second, h.cfg.Interval / 2}
	var ok []time.Duration
	for _, c := range choices {
		if c <= h.cfg.Interval/2 {
			ok = append(ok, c)
		}
	}
	d := h.cfg.Interval / 2
	if len(ok) > 0 {
		d = ok[h.rnd.IntN(len(ok))]
	}
	var names []string
	until := time.Now().Add(d).UnixNano()
	for _, st := range stuck {
		h.ctl(st).stuckUntil.Store(until)
		names = append(names, st.Name)
	}
	stalled := h.watchOthers(ctx, stuck, d)
	return fmt.Sprintf("stuck consumers %s for %s%s", strings.Join(names, ","), d, stalled), nil
}

// watchOthers waits d and reports the streams outside except whose
// consumers made no progress meanwhile (a slow or stuck consumer must
// never stall others).
func (h *harness) watchOthers(ctx context.Context, except []*Stream, d time.Duration) string {
	skip := map[*Stream]bool{}
	for _, s := range except {
		skip[s] = true
	}
	before := map[*Stream]int64{}
	for _, st := range h.streams {
		before[st] = st.progress()
	}
	sleep(ctx, d)
	var stalled []string
	for _, st := range h.streams {
		// Anycast has no backlog: nothing to see while its consumer
		// waits; a two-second window may hold no delivery at low rates.
		if skip[st] || d < 5*time.Second || st == h.expiry { // no producer of its own
			continue
		}
		if st.progress() == before[st] {
			stalled = append(stalled, st.Name)
		}
	}
	if len(stalled) == 0 {
		return ""
	}
	h.finding("consumers of %s made no progress for %s while %s was slow or stuck", strings.Join(stalled, ","), d, except[0].Name)
	return "; STALLED: " + strings.Join(stalled, ",")
}

// faultStorm connects cfg.Storm MQTT clients, kills the node, and has them
// all reconnect at once when it is back.
func faultStorm(ctx context.Context, h *harness) (string, error) {
	if len(h.nodes) > 1 {
		return faultStormCluster(ctx, h)
	}
	n := h.cfg.Storm
	conns := make([]net.Conn, n)
	t0 := time.Now()
	failed := stormConnect(ctx, h.node.MQTT, conns, 256, 30*time.Second)
	first := time.Since(t0)
	if failed > 0 {
		closeAll(conns)
		return "", fmt.Errorf("storm: %d of %d clients could not connect in the first place", failed, n)
	}
	ps, _ := h.node.Stats()
	h.node.Kill()
	closeAll(conns)
	if err := h.restart(ctx); err != nil {
		return "", err
	}
	t1 := time.Now()
	failed = stormConnect(ctx, h.node.MQTT, conns, n, 90*time.Second)
	again := time.Since(t1)
	ps2, _ := h.node.Stats()
	closeAll(conns)
	note := fmt.Sprintf("storm: %d clients connected in %s (node files %d), node killed -9, all reconnected at once in %s (node files %d, RSS %.0f MB)",
		n, first.Round(10*time.Millisecond), ps.OpenFiles, again.Round(10*time.Millisecond), ps2.OpenFiles, float64(ps2.RSS)/(1<<20))
	if failed > 0 {
		return note, fmt.Errorf("storm: %d of %d clients could not reconnect within 90s", failed, n)
	}
	return note, nil
}

// faultStormCluster is the storm on a cluster: cfg.Storm clients spread
// over the nodes (client i on node i mod n); a random node is killed and
// its clients fail over to the next node all at once while it is down (as
// clients with several hosts do); it restarts, and then every client
// drops its connection and reconnects to its own node at once.
func faultStormCluster(ctx context.Context, h *harness) (string, error) {
	n, nn := h.cfg.Storm, len(h.nodes)
	conns := make([]net.Conn, n)
	at := func(i int) string { return h.nodes[i%nn].MQTT }
	t0 := time.Now()
	failed := stormConnectTo(ctx, at, conns, nil, 256, 30*time.Second)
	first := time.Since(t0)
	if failed > 0 {
		closeAll(conns)
		return "", fmt.Errorf("storm: %d of %d clients could not connect in the first place", failed, n)
	}
	files := func() string {
		var parts []string
		for _, nd := range h.nodes {
			ps, _ := nd.Stats()
			parts = append(parts, fmt.Sprintf("%s %d files %.0f MB", nd.label(), ps.OpenFiles, float64(ps.RSS)/(1<<20)))
		}
		return strings.Join(parts, ", ")
	}
	before := files()
	vi := h.rnd.IntN(nn)
	victim := h.nodes[vi]
	victim.Kill()
	// The victim's clients, all at once, to the next node (under their
	// own client ids: the server takes their sessions over).
	mine := func(i int) bool { return i%nn == vi }
	moved := make([]net.Conn, n)
	nMoved := 0
	for i := range conns {
		if mine(i) {
			conns[i].Close()
			conns[i] = nil
			nMoved++
		}
	}
	t1 := time.Now()
	failedOver := stormConnectTo(ctx, func(i int) string { return h.nodes[(i+1)%nn].MQTT }, moved, mine, nMoved, 90*time.Second)
	over := time.Since(t1)
	closeAll(moved)
	if err := h.restartNode(ctx, victim); err != nil {
		closeAll(conns)
		return "", err
	}
	closeAll(conns)
	t2 := time.Now()
	failed = stormConnectTo(ctx, at, conns, nil, n, 90*time.Second)
	again := time.Since(t2)
	after := files()
	closeAll(conns)
	note := fmt.Sprintf("storm: %d clients over %d nodes connected in %s (%s), %s killed -9, its %d clients failed over at once in %s, "+
		"restarted, all reconnected at once in %s (%s)",
		n, nn, first.Round(10*time.Millisecond), before, victim.label(), nMoved, over.Round(10*time.Millisecond),
		again.Round(10*time.Millisecond), after)
	switch {
	case failedOver > 0:
		return note, fmt.Errorf("storm: %d of %d clients of the killed node could not connect to another node within 90s", failedOver, nMoved)
	case failed > 0:
		return note, fmt.Errorf("storm: %d of %d clients could not reconnect within 90s", failed, n)
	}
	return note, nil
}

// stormConnect opens raw MQTT 3.1.1 connections (clean session, keep-alive
// 0) with at most par dials at once, retrying each until limit; it returns
// how many failed.
func stormConnect(ctx context.Context, addr string, conns []net.Conn, par int, limit time.Duration) int {
	return stormConnectTo(ctx, func(int) string { return addr }, conns, nil, par, limit)
}

// stormConnectTo is stormConnect with client i connecting to addr(i), only
// the clients only accepts (nil: all).
func stormConnectTo(ctx context.Context, addr func(int) string, conns []net.Conn, only func(int) bool, par int, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	sem := make(chan struct{}, par)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i := range conns {
		if only != nil && !only(i) {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for attempt := 0; ; attempt++ {
				c, err := rawConnect(addr(i), i)
				if err == nil {
					conns[i] = c
					return
				}
				if time.Now().After(deadline) || ctx.Err() != nil {
					failed.Add(1)
					return
				}
				backoff(ctx, attempt)
			}
		}()
	}
	wg.Wait()
	return int(failed.Load())
}

// rawConnect dials from 127.0.0.2–127.0.0.65 in turn (by client number):
// tens of thousands of connections from one source address to one port,
// twice (the storm reconnects), would exhaust the ephemeral ports.
func rawConnect(addr string, i int) (net.Conn, error) {
	cid := fmt.Sprintf("soak-storm-%d", i)
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%64))}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, byte(len(cid) >> 8), byte(len(cid))}
	body := append(vh, cid...)
	pkt := append([]byte{0x10, byte(len(body))}, body...) // ids are short: one length byte
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(pkt); err != nil {
		c.Close()
		return nil, err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		c.Close()
		return nil, err
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("connack % x", ack)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func closeAll(conns []net.Conn) {
	for i, c := range conns {
		if c != nil {
			c.Close()
			conns[i] = nil
		}
	}
}

// faultDiskFull runs a second node on a 64 MiB tmpfs, fills the file
// system, checks that publishes are refused with the protocol's error and
// nothing acknowledged is lost, frees the space and checks that the
// service resumes. It needs root (mount); without it the fault is skipped
// with a log line, unless RequireDiskFull.
func faultDiskFull(ctx context.Context, h *harness) (string, error) {
	if os.Geteuid() != 0 {
		if h.cfg.RequireDiskFull {
			return "", errors.New("diskfull: needs root to mount a tmpfs, and RequireDiskFull is set (CI=true)")
		}
		h.logf("diskfull: SKIPPED: not root, cannot mount a tmpfs as the data directory")
		return "skipped (not root)", nil
	}
	dir, err := os.MkdirTemp(h.cfg.WorkDir, "diskfull-")
	if err != nil {
		return "", err
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", dir).CombinedOutput(); err != nil {
		if h.cfg.RequireDiskFull {
			return "", fmt.Errorf("diskfull: mount tmpfs: %v %s", err, out)
		}
		h.logf("diskfull: SKIPPED: mount tmpfs failed: %v %s", err, strings.TrimSpace(string(out)))
		return "skipped (mount failed)", nil
	}
	defer func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			h.logf("diskfull: umount %s: %v %s", dir, err, out)
		}
		os.Remove(dir)
	}()
	node, err := NewNode(h.cfg.Bin, filepath.Join(dir, "data"), filepath.Join(h.cfg.WorkDir, "diskfull.log"))
	if err != nil {
		return "", err
	}
	if err := node.Restart(ctx, 2*time.Minute); err != nil {
		return "", err
	}
	defer node.Kill()
	d := &diskRun{h: h, node: node}
	return d.run(ctx, dir)
}

type diskRun struct {
	h    *harness
	node *Node
}

func (d *diskRun) run(ctx context.Context, dir string) (string, error) {
	h, node := d.h, d.node
	if err := node.CreateAddress(ctx, `{"name":"soak/disk","type":"queue"}`); err != nil {
		return "", err
	}
	qst := h.diskStream("diskfull-amqp-queue")
	mst := h.diskStream("diskfull-mqtt5-persist-qos1")
	// The persistent session that keeps the MQTT messages.
	sub, _, err := m5ConnectAddr(ctx, node.MQTT, "soak-disk-sub", false, nil, nil, nil)
	if err != nil {
		return "", err
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = sub.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "soak/disk/m/#", QoS: 1}}})
	cancel()
	closeM5(sub)
	if err != nil {
		return "", fmt.Errorf("diskfull: subscribe: %w", err)
	}

	// Messages stored before the disk fills must survive it.
	for _, proto := range []struct {
		st   *Stream
		name string
	}{{qst, "amqp"}, {mst, "mqtt5"}} {
		pid := h.newPID()
		for i := 0; i < 4; i++ {
			if refused, _, fatal := d.publish(ctx, proto.st, pid, proto.name, 50); refused || fatal != "" {
				return "", fmt.Errorf("diskfull: publishing before the disk was full failed: %s", fatal)
			}
		}
	}

	// Fill the file system.
	ballast := filepath.Join(dir, "ballast")
	fillErr := fill(ballast)
	if !errors.Is(fillErr, syscall.ENOSPC) {
		return "", fmt.Errorf("diskfull: filling the tmpfs ended with %v, not ENOSPC", fillErr)
	}

	// Publish until refused (or 15 s). A publish without an answer within
	// 5 s is not a refusal with the protocol's error.
	var problems []string
	qRef, qNote := d.publishUntilRefused(ctx, qst, "amqp")
	mRef, mNote := d.publishUntilRefused(ctx, mst, "mqtt5")
	if !qRef {
		problems = append(problems, "AMQP queue publishes on a full disk were not refused with an error: "+qNote)
	}
	if !mRef {
		problems = append(problems, "MQTT 5 QoS 1 publishes on a full disk were not refused with a reason code: "+mNote)
	}

	// Free the space; the service must resume without a restart.
	os.Remove(ballast)
	t0 := time.Now()
	qRes := d.waitResume(ctx, qst, "amqp", 10*time.Second)
	mRes := d.waitResume(ctx, mst, "mqtt5", 10*time.Second)
	resumed := fmt.Sprintf("resumed in %s", time.Since(t0).Round(100*time.Millisecond))
	if !qRes || !mRes {
		what := map[bool]string{true: "resumed", false: "still failing"}
		problems = append(problems, fmt.Sprintf("10–20 s after the space was freed: AMQP %s, MQTT %s", what[qRes], what[mRes]))
		node.Stop(30 * time.Second)
		if err := node.Restart(ctx, 2*time.Minute); err != nil {
			return "", fmt.Errorf("diskfull: node not back after restart: %w", err)
		}
		t1 := time.Now()
		qRes = d.waitResume(ctx, qst, "amqp", 20*time.Second)
		mRes = d.waitResume(ctx, mst, "mqtt5", 20*time.Second)
		resumed = fmt.Sprintf("did not resume until restarted; after the restart AMQP %s, MQTT %s (%s)",
			what[qRes], what[mRes], time.Since(t1).Round(100*time.Millisecond))
	}

	// Everything acknowledged must be there (lost messages fail the run
	// through the streams' figures).
	d.drainAMQP(ctx, qst)
	d.drainMQTT(ctx, mst)
	qs, ms := qst.Stats(), mst.Stats()
	note := fmt.Sprintf("diskfull: refused with [%s] / [%s]; %s; acknowledged %d / %d, lost %d / %d",
		qNote, mNote, resumed, qs.Acked, ms.Acked, qs.Missing, ms.Missing)
	for _, p := range problems {
		h.finding("diskfull: %s", p)
	}
	return note, nil
}

// fill writes path until the file system is full.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			// Fill the last partial megabyte too.
			small := make([]byte, 4096)
			for err == nil || !errors.Is(err, syscall.ENOSPC) {
				if _, err = f.Write(small); err != nil && !errors.Is(err, syscall.ENOSPC) {
					return err
				}
			}
			return err
		}
	}
}

func (h *harness) diskStream(name string) *Stream {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.disk {
		if s.Name == name {
			return s
		}
	}
	s := NewStream(name, Semantics{MustDeliver: true, Ordered: true})
	h.disk = append(h.disk, s)
	return s
}

// publishUntilRefused publishes until a message is refused or an error
// ends the connection, for at most 20 s, and says what the refusal was.
func (d *diskRun) publishUntilRefused(ctx context.Context, st *Stream, proto string) (bool, string) {
	deadline := time.Now().Add(15 * time.Second)
	pid := d.h.newPID()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		refused, note, fatal := d.publish(ctx, st, pid, proto, 50)
		if refused {
			return true, note
		}
		if fatal != "" {
			// MQTT 3.1.1 refuses by closing; MQTT 5 and AMQP have
			// errors to say it.
			return false, fatal
		}
	}
	return false, "everything accepted for 15 s"
}

// publish sends n messages on a new connection; refused reports a
// protocol-level refusal, fatal a connection that failed (which is how
// MQTT 3.1.1 refuses and how a broken node looks).
func (d *diskRun) publish(ctx context.Context, st *Stream, pid int, proto string, n int) (refused bool, note, fatal string) {
	switch proto {
	case "amqp":
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		conn, err := amqp.Dial(cctx, "amqp://"+d.node.AMQP, &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()})
		if err != nil {
			return false, "", "AMQP connect failed: " + err.Error()
		}
		defer conn.Close()
		sess, err := conn.NewSession(cctx, nil)
		if err != nil {
			return false, "", "AMQP session failed: " + err.Error()
		}
		snd, err := sess.NewSender(cctx, "soak/disk", nil)
		if err != nil {
			return false, "", "AMQP attach failed: " + err.Error()
		}
		before := st.Stats()
		if !d.h.amqpBatch(ctx, st, pid, snd, n, 5*time.Second) {
			return false, "", "no outcome within 5 s"
		}
		if st.Stats().Refused > before.Refused {
			return true, d.h.lastRefusal(st), ""
		}
		return false, "", ""
	default:
		c, _, err := m5ConnectAddr(ctx, d.node.MQTT, fmt.Sprintf("soak-disk-p%d", pid), true, nil, nil, nil)
		if err != nil {
			return false, "", "MQTT connect failed: " + err.Error()
		}
		defer closeM5(c)
		for i := 0; i < n; i++ {
			seq := st.Next(pid)
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := c.Publish(pctx, &paho.Publish{Topic: "soak/disk/m/x", QoS: 1, Payload: encodePayload(st.Name, pid, seq, payload)})
			cancel()
			if resp != nil && resp.ReasonCode >= 0x80 {
				st.Refuse(pid, seq)
				note := fmt.Sprintf("MQTT 5 reason 0x%02x", resp.ReasonCode)
				if resp.Properties != nil && resp.Properties.ReasonString != "" {
					note += " (" + resp.Properties.ReasonString + ")"
				}
				d.h.noteRefusal(st, note)
				return true, note, ""
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return false, "", "no PUBACK within 5 s"
			}
			if err != nil {
				return false, "", "MQTT publish failed: " + err.Error()
			}
			st.Ack(pid, seq)
		}
		return false, "", ""
	}
}

func (h *harness) lastRefusal(st *Stream) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var parts []string
	for e := range h.refusals[st.Name] {
		parts = append(parts, e)
	}
	return strings.Join(parts, ", ")
}

// waitResume publishes one message every 500 ms until one is accepted.
func (d *diskRun) waitResume(ctx context.Context, st *Stream, proto string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	pid := d.h.newPID()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		before := st.Stats().Acked
		d.publish(ctx, st, pid, proto, 1)
		if st.Stats().Acked > before {
			return true
		}
		sleep(ctx, 500*time.Millisecond)
	}
	return false
}

func (d *diskRun) drainAMQP(ctx context.Context, st *Stream) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(cctx, "amqp://"+d.node.AMQP, &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()})
	if err != nil {
		d.h.finding("diskfull: cannot connect to drain the queue: %v", err)
		return
	}
	defer conn.Close()
	sess, err := conn.NewSession(cctx, nil)
	if err != nil {
		return
	}
	rcv, err := sess.NewReceiver(cctx, "soak/disk", &amqp.ReceiverOptions{Credit: 200})
	if err != nil {
		d.h.finding("diskfull: cannot attach to drain the queue: %v", err)
		return
	}
	for ctx.Err() == nil && st.Stats().Missing > 0 {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := rcv.Receive(rctx, nil)
		cancel()
		if err != nil {
			return
		}
		st.record(msg.GetData())
		_ = rcv.AcceptMessage(ctx, msg)
	}
}

func (d *diskRun) drainMQTT(ctx context.Context, st *Stream) {
	c, _, err := m5ConnectAddr(ctx, d.node.MQTT, "soak-disk-sub", false, nil, func(p *paho.Publish) { st.record(p.Payload) }, nil)
	if err != nil {
		d.h.finding("diskfull: cannot reconnect the persistent session: %v", err)
		return
	}
	defer closeM5(c)
	last, since := st.progress(), time.Now()
	for ctx.Err() == nil && st.Stats().Missing > 0 && time.Since(since) < 5*time.Second {
		sleep(ctx, 100*time.Millisecond)
		if p := st.progress(); p != last {
			last, since = p, time.Now()
		}
	}
}
