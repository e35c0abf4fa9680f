package bridge_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/throngmq/throng/internal/testkit"
)

// outage is how long the guarantee tests keep a remote down: 10 s, or
// THRONG_BRIDGE_OUTAGE (e.g. 30s, the figure, for docs/bridges.md).
func outage(t *testing.T) time.Duration {
	if s := os.Getenv("THRONG_BRIDGE_OUTAGE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("THRONG_BRIDGE_OUTAGE: %v", err)
		}
		return d
	}
	return 10 * time.Second
}

// kafkaRemote is franz-go's in-process Kafka cluster (kfake: the Kafka
// protocol, persisted to a directory) on a fixed port, so that it can be
// stopped and started again where the bridge expects it.
type kafkaRemote struct {
	t    *testing.T
	dir  string
	port int
	c    *kfake.Cluster
}

func startKafka(t *testing.T, topics ...string) *kafkaRemote {
	k := &kafkaRemote{t: t, dir: t.TempDir(), port: freePort(t)}
	k.start(topics...)
	t.Cleanup(k.stop)
	return k
}

func (k *kafkaRemote) start(topics ...string) {
	k.t.Helper()
	var err error
	for range 50 { // the port may still be held by the closed cluster for a moment
		k.c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(k.port), kfake.DataDir(k.dir), kfake.SeedTopics(3, topics...))
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	k.t.Fatalf("kfake: %v", err)
}

func (k *kafkaRemote) stop() {
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

func (k *kafkaRemote) addr() string { return "127.0.0.1:" + strconv.Itoa(k.port) }

// kafkaConsumer reads topics from the start and keeps every record.
type kafkaConsumer struct {
	mu   sync.Mutex
	recs []*kgo.Record
	cl   *kgo.Client
}

func consumeKafka(t *testing.T, addr string, topics ...string) *kafkaConsumer {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	kc := &kafkaConsumer{cl: cl}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			f := cl.PollFetches(ctx)
			kc.mu.Lock()
			f.EachRecord(func(r *kgo.Record) { kc.recs = append(kc.recs, r) })
			kc.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	return kc
}

func (kc *kafkaConsumer) records() []*kgo.Record {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	return append([]*kgo.Record(nil), kc.recs...)
}

// distinct counts records by value: how many distinct, how many
// duplicates.
func distinct(recs []*kgo.Record) (map[string]int, int) {
	seen := map[string]int{}
	dups := 0
	for _, r := range recs {
		seen[string(r.Value)]++
		if seen[string(r.Value)] > 1 {
			dups++
		}
	}
	return seen, dups
}

// waitFor polls cond and fails with what describe says if it does not
// hold within d.
func waitFor(t *testing.T, d time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, describe())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func header(r *kgo.Record, k string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

// Kafka out: local MQTT publishes become records (key: the publishing
// client, headers from the properties); with the cluster down for
// outage() what is published meanwhile waits and arrives when it is back:
// loss 0, duplicates counted.
func testKafkaBridge(t *testing.T, p *testkit.Platform) {
	k := startKafka(t, "telemetry", "events")
	api(t, p, "POST", "/api/tenants/default/bridges", fmt.Sprintf(`{"name":"lake","kind":"kafka","remote":{"url":"kafka://%s"},
		"mappings":[{"filter":"tele/#","topic":"telemetry"},{"filter":"ev/+","topic":"events","key":"property:k"}]}`, k.addr()))
	defer api(t, p, "DELETE", "/api/tenants/default/bridges/lake", "")
	testkit.Eventually(t, 20*time.Second, func() bool { return bridgeStatus(t, p, "lake").Status.State == "connected" })
	kc := consumeKafka(t, k.addr(), "telemetry", "events")

	pub := dial(t, p.MQTTAddr, "kafka-dev", "app", "app-secret")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := pub.Publish(ctx, &paho.Publish{Topic: "ev/alarm", QoS: 1, Payload: []byte("alarm-1"), Properties: &paho.PublishProperties{
		ContentType: "application/json", User: paho.UserProperties{{Key: "k", Value: "boiler-7"}, {Key: "site", Value: "north"}}}})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n / 2 {
		if r := pub.pub(t, "tele/"+strconv.Itoa(i%5), strconv.Itoa(i)); r.ReasonCode != 0 {
			t.Fatalf("publish: 0x%02x", r.ReasonCode)
		}
	}
	waitFor(t, 30*time.Second, func() bool { return len(kc.records()) >= n/2+1 },
		func() string {
			return fmt.Sprintf("%d records; %+v", len(kc.records()), bridgeStatus(t, p, "lake").Status)
		})
	for _, r := range kc.records() {
		switch r.Topic {
		case "events":
			ct, _ := header(r, "content-type")
			site, _ := header(r, "site")
			addr, _ := header(r, "address")
			qos, _ := header(r, "qos")
			if string(r.Key) != "boiler-7" || ct != "application/json" || site != "north" || addr != "ev/alarm" || qos != "1" {
				t.Errorf("event record: key %q headers %v", r.Key, r.Headers)
			}
		case "telemetry":
			if string(r.Key) != "kafka-dev" {
				t.Fatalf("telemetry record key %q, want the publishing client", r.Key)
			}
		}
	}
	// In order per key (one partition per key).
	last := map[string]int{}
	for _, r := range kc.records() {
		if r.Topic != "telemetry" {
			continue
		}
		v, _ := strconv.Atoi(string(r.Value))
		if l, ok := last[string(r.Key)]; ok && v < l {
			t.Fatalf("key %s: %d after %d", r.Key, v, l)
		}
		last[string(r.Key)] = v
	}

	// The cluster goes away; publishes go on and wait in throng.
	k.stop()
	down := time.Now()
	for i := n / 2; i < n; i++ {
		if r := pub.pub(t, "tele/"+strconv.Itoa(i%5), strconv.Itoa(i)); r.ReasonCode != 0 {
			t.Fatalf("publish while Kafka is down: 0x%02x", r.ReasonCode)
		}
	}
	testkit.Eventually(t, 15*time.Second, func() bool { return bridgeStatus(t, p, "lake").Status.State == "connecting" })
	time.Sleep(outage(t) - time.Since(down))
	if st := bridgeStatus(t, p, "lake").Status; st.Lag == 0 || st.LastError == "" {
		t.Errorf("while Kafka is down: %+v", st)
	}
	k.start("telemetry", "events")
	downFor := time.Since(down)
	waitFor(t, 60*time.Second, func() bool {
		seen, _ := distinct(kc.records())
		return len(seen) >= n+1
	}, func() string {
		seen, _ := distinct(kc.records())
		return fmt.Sprintf("%d distinct records; %+v", len(seen), bridgeStatus(t, p, "lake").Status)
	})
	seen, dups := distinct(kc.records())
	t.Logf("kafka down %v, caught up %v later: %d of %d delivered, %d duplicates",
		downFor.Round(100*time.Millisecond), (time.Since(down) - downFor).Round(100*time.Millisecond), len(seen)-1, n, dups)
	for i := range n {
		if seen[strconv.Itoa(i)] == 0 {
			t.Errorf("message %d lost", i)
		}
	}
	st := bridgeStatus(t, p, "lake").Status
	if st.Out < n+1 || !strings.Contains(st.State, "connected") {
		t.Errorf("status %+v", st)
	}
}
