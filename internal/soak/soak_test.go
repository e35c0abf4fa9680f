package soak

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineLogger turns the harness's output into test log lines.
type lineLogger struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line)
			return len(p), nil
		}
		l.t.Log(strings.TrimRight(line, "\n"))
	}
}

// TestSoakShort is the CI form of the soak: every fault of DefaultFaults
// once (kill -9 under load, during startup recovery and during a queue
// delete; SIGSTOP/SIGCONT; slow and stuck consumers; a reconnect storm of
// 2000 clients; a full disk when root), about three minutes. The node is
// built without -race (a separate process); the checker's own load is kept
// small so that the race detector does not slow it down.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: builds and runs the binary for about three minutes")
	}
	cfg := Config{
		Interval:        15 * time.Second,
		Cycles:          len(DefaultFaults),
		Rate:            40,
		Storm:           2000,
		CatchUp:         15 * time.Second,
		WorkDir:         t.TempDir(),
		Out:             &lineLogger{t: t},
		RequireDiskFull: os.Getenv("CI") == "true",
	}
	// THRONG_SOAK_BIN runs a given binary instead of building one, and
	// THRONG_SOAK_FAULTS a comma-separated list of faults (for work on the
	// harness itself).
	cfg.Bin = os.Getenv("THRONG_SOAK_BIN")
	if f := os.Getenv("THRONG_SOAK_FAULTS"); f != "" {
		cfg.Faults = strings.Split(f, ",")
		cfg.Cycles = len(cfg.Faults)
	}
	// A fixed seed by default, so that CI runs the same fault timings
	// each time (the machine's timing still varies).
	cfg.Seed = 11
	runChecked(t, cfg, knownOpen)
}

// TestSoakClusterShort is the CI form of the soak on a cluster: three
// `throng serve` children as one cluster, the clients spread over them
// and moving to the next node when theirs fails, each fault of
// ClusterFaults once (kill -9 of a random node, restarted; SIGSTOP of a
// random node for 1–5 s; kill -9 during a node's startup; slow and stuck
// consumers; a storm of 2,000 clients over the nodes with one killed; a
// clock jump of every node; a queue purge with its node killed), then the
// same ledger checks as TestSoakShort: every acknowledged message
// delivered, QoS 2 exactly once, nothing delivered that was never sent
// (reorders are counted, not failed, on a cluster: docs/reliability.md).
// About five minutes.
func TestSoakClusterShort(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: builds and runs three nodes for about five minutes")
	}
	cfg := Config{
		Nodes:    3,
		Interval: 25 * time.Second,
		Faults:   ClusterFaults,
		Cycles:   len(ClusterFaults),
		Rate:     20,
		// Deliveries in progress on a killed node come back after the
		// engine's ack wait (30 s): a check waits longer than that
		// before it calls a delivery stalled.
		CatchUp: 35 * time.Second,
		WorkDir: t.TempDir(),
		Out:     &lineLogger{t: t},
		Bin:     os.Getenv("THRONG_SOAK_BIN"),
		Seed:    11,
	}
	if f := os.Getenv("THRONG_SOAK_CLUSTER_FAULTS"); f != "" {
		cfg.Faults = strings.Split(f, ",")
		cfg.Cycles = len(cfg.Faults)
	}
	r := runChecked(t, cfg, knownOpenCluster)
	// Every fault was carried out: a run whose kill or stop did not
	// happen proves nothing.
	for _, f := range cfg.Faults {
		if fs := r.Faults[f]; fs == nil || fs.n == 0 || fs.failed > 0 {
			t.Errorf("fault %s not carried out: %+v", f, fs)
		}
	}
	// Every stream with producers had traffic, and the clients were
	// spread over the nodes and moved when theirs was killed: every node
	// had connections, more of them in all than there are clients.
	var conns int64
	for _, s := range r.Streams {
		if s.Name != "mqtt5-expiry" && s.Acked+s.Delivered == 0 {
			t.Errorf("%s: nothing acknowledged or delivered", s.Name)
		}
	}
	for n, c := range r.Conns {
		if c == 0 {
			t.Errorf("no client connected to %s", n)
		}
		conns += c
	}
	if clients := int64(len(r.Streams)*2 - 1); conns <= clients {
		t.Errorf("%d client connections in all, for about %d clients: nobody moved after a kill", conns, clients)
	}
}

// runChecked runs the soak (seed from THRONG_SOAK_SEED if set, 10 minutes
// at most) and fails t for each violation, except the known open ones
// (logged; THRONG_SOAK_STRICT=1 fails them too).
func runChecked(t *testing.T, cfg Config, known map[string]string) *Report {
	t.Helper()
	if v := os.Getenv("THRONG_SOAK_SEED"); v != "" {
		cfg.Seed, _ = strconv.ParseUint(v, 10, 64)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	strict := os.Getenv("THRONG_SOAK_STRICT") == "1"
	for _, v := range r.Violations() {
		if issue, ok := known[v.Stream+" "+v.Kind]; ok && !strict {
			t.Logf("KNOWN OPEN (%s, not failed; THRONG_SOAK_STRICT=1 fails it): %s", issue, v.Msg)
			continue
		}
		t.Error(v.Msg)
	}
	return r
}

// knownOpen are violations the harness finds today that belong to open
// issue items: logged, not failed, so that make test stays usable while
// they are worked on. Whoever fixes one removes its entry (and runs
// THRONG_SOAK_STRICT=1 go test -run TestSoakShort ./internal/soak/).
var knownOpen = map[string]string{
	// Empty since session 10: the persistent-session reorders after kill -9
	// (issue 11 item 3) are fixed by router feed.reclaim.
}

// knownOpenCluster is knownOpen for TestSoakClusterShort.
var knownOpenCluster = map[string]string{
	// Empty since session 16: the QoS 2 messages stored twice when their
	// publisher moved to another node after a kill -9 (session 14's and
	// 15's cluster soaks) are fixed — failed or late session writes no
	// longer let routing and acknowledgements go, and a session record
	// is no longer read from a replica while its bucket has no leader
	// (docs/reliability.md, "The publisher-moved kind: fixed").
}

func TestPayloadRoundTrip(t *testing.T) {
	b := encodePayload("amqp-queue", 7, 12345, payload)
	s, p, q, ok := decodePayload(b)
	if !ok || s != "amqp-queue" || p != 7 || q != 12345 || len(b) != payload {
		t.Fatalf("decode(%q) = %q %d %d %v", b, s, p, q, ok)
	}
	b[len(b)-1] ^= 1
	if _, _, _, ok := decodePayload(b); ok {
		t.Fatal("a corrupted payload decoded")
	}
}

// TestLedger checks the checker's own bookkeeping: loss, duplicates in and
// out of a disruption, reorders, phantoms.
func TestLedger(t *testing.T) {
	bumpDisruption()
	st := NewStream("s", Semantics{MustDeliver: true, Ordered: true})
	for i := 1; i <= 5; i++ {
		if seq := st.Next(1); seq != i {
			t.Fatalf("seq %d, want %d", seq, i)
		}
	}
	st.Ack(1, 1)
	st.Ack(1, 2)
	st.Ack(1, 3)
	st.Refuse(1, 4)
	st.Deliver(1, 1)
	st.Deliver(1, 3)
	st.Deliver(1, 2) // out of order
	st.Deliver(1, 3) // duplicate in the same epoch: not allowed
	bumpDisruption()
	st.Deliver(1, 1)  // duplicate after a disruption: allowed
	st.Deliver(1, 99) // never sent
	st.record([]byte("garbage"))
	s := st.Stats()
	if s.Lost != 0 || s.Reorders != 1 || s.ReordersFatal != 1 || s.Dups != 2 || s.DupsBad != 1 || s.Phantoms != 2 || s.Delivered != 3 {
		t.Fatalf("%+v", s)
	}
	st.Ack(1, 5)
	if s := st.Stats(); s.Lost != 1 || s.MissingExamples[0] != "p1#5" {
		t.Fatalf("%+v", s)
	}
	// Sent before a disruption, delivered twice after it: the publisher
	// may have resent it (at least once).
	st.Deliver(1, 5)
	st.Deliver(1, 5)
	if s := st.Stats(); s.Dups != 3 || s.DupsBad != 1 {
		t.Fatalf("%+v", s)
	}
	// QoS 2: again under the same packet id after a disruption is what a
	// stateful client absorbs; under a new one it is not allowed.
	q := NewStream("q", Semantics{MustDeliver: true, ExactlyOnce: true})
	q.Next(1)
	q.Next(1)
	q.deliver(1, 1, 7)
	q.deliver(1, 2, 8)
	bumpDisruption()
	q.deliver(1, 1, 7)
	q.deliver(1, 2, 9)
	if s := q.Stats(); s.Dups != 2 || s.DupsBad != 1 || s.DupExamples[0] != "p1#2 pkt 8→9" {
		t.Fatalf("%+v", s)
	}
}

// TestLedgerTTL checks the bookkeeping of messages with a TTL around the
// node's wall-clock jumps: one that may have expired is not missing, one
// that could not have is; one delivered although expired for certain is
// counted.
func TestLedgerTTL(t *testing.T) {
	clockHist.Lock()
	saved := clockHist.iv
	clockHist.iv = nil
	clockHist.Unlock()
	t.Cleanup(func() {
		clockHist.Lock()
		clockHist.iv = saved
		clockHist.Unlock()
	})
	st := NewStream("e", Semantics{MustDeliver: true})
	short := st.NextTTL(1, time.Minute)
	long := st.NextTTL(1, time.Hour)
	late := st.NextTTL(1, time.Minute)
	plain := st.Next(1)
	for _, seq := range []int{short, long, late, plain} {
		st.Ack(1, seq)
	}
	if s := st.Stats(); s.Missing != 4 || s.Expired != 0 || s.TTLSent != 3 {
		t.Fatalf("before any jump: %+v", s)
	}
	// Forward by 10 minutes: the 1-minute messages may have expired.
	now := time.Now()
	noteClock(now, now.Add(10*time.Millisecond), 10*time.Minute)
	if s := st.Stats(); s.Missing != 2 || s.Expired != 2 {
		t.Fatalf("after +10m: missing %d expired %d, want 2 and 2", s.Missing, s.Expired)
	}
	st.Deliver(1, long)
	st.Deliver(1, plain)
	time.Sleep(20 * time.Millisecond) // after the jump was acknowledged
	st.Deliver(1, late)               // expired for certain: expiry did not work
	s := st.Stats()
	if s.Missing != 0 || s.Lost != 0 || s.Expired != 1 || s.ExpiredDelivered != 1 {
		t.Fatalf("after the deliveries: %+v", s)
	}
	r := &Report{Streams: []StreamStats{s}}
	if v := r.Violations(); len(v) != 1 || v[0].Kind != "expired-delivered" {
		t.Fatalf("violations %+v", v)
	}
	// Back to 0: a message of a minute sent now must still come, and
	// one sent at +10 min whose TTL has passed in real time may be gone
	// (the engine's TTL counts real time).
	later := time.Now()
	noteClock(later, later.Add(10*time.Millisecond), 0)
	time.Sleep(20 * time.Millisecond) // sent after the jump was acknowledged
	fresh := st.NextTTL(1, time.Minute)
	st.Ack(1, fresh)
	if s := st.Stats(); s.Missing != 1 || s.Expired != 1 {
		t.Fatalf("after -10m: missing %d expired %d, want 1 and 1", s.Missing, s.Expired)
	}
	old := ttlMsg{ttl: time.Second, sent: later.Add(-5 * time.Second)}
	if !old.mayHaveExpired(time.Now()) {
		t.Fatal("a TTL passed in real time must allow the drop")
	}
}
