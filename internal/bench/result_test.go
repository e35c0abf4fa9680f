package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func payload(pub uint32, seq uint64) []byte {
	p := make([]byte, 64)
	putHeader(p, pub, seq, 0)
	return p
}

func TestPayloadHeader(t *testing.T) {
	p := make([]byte, payloadHeader)
	putHeader(p, 7, 1<<40, -3)
	pub, seq, at, err := parseHeader(p)
	if err != nil || pub != 7 || seq != 1<<40 || at != -3 {
		t.Fatalf("parseHeader = %d %d %d %v", pub, seq, at, err)
	}
	if _, _, _, err := parseHeader([]byte("hello, this is not a bench payload")); err != ErrNotBenchPayload {
		t.Fatalf("foreign payload: %v", err)
	}
}

func TestCountLostAndDuplicated(t *testing.T) {
	base := time.Now()
	// Two publishers sent 100 and 50; two subscribers should each get all.
	sent := map[uint32]uint64{0: 100, 1: 50}
	a, b := NewReceiver(base), NewReceiver(base)
	for s := uint64(0); s < 100; s++ {
		a.Record(payload(0, s))
		if s != 10 && s != 11 { // b misses two
			b.Record(payload(0, s))
		}
	}
	for s := uint64(0); s < 50; s++ {
		a.Record(payload(1, s))
		b.Record(payload(1, s))
	}
	a.Record(payload(1, 3)) // a duplicate
	a.Record(payload(1, 3)) // and another
	b.Record(payload(0, 99))
	a.Record([]byte("foreign"))
	tl := Count(sent, []*Receiver{a, b}, false)
	if tl.Sent != 150 || tl.Expected != 300 || tl.Lost != 2 || tl.Duplicated != 3 || tl.Received != 298+3 {
		t.Fatalf("tally = %+v", tl)
	}
	if tl.Latency.Count() != 301 {
		t.Fatalf("latency samples %d", tl.Latency.Count())
	}
}

func TestCountShared(t *testing.T) {
	base := time.Now()
	sent := map[uint32]uint64{0: 1000}
	rs := []*Receiver{NewReceiver(base), NewReceiver(base), NewReceiver(base)}
	for s := uint64(0); s < 1000; s++ {
		if s == 500 {
			continue // lost
		}
		rs[s%3].Record(payload(0, s))
	}
	rs[0].Record(payload(0, 1)) // redelivered to another member
	tl := Count(sent, rs, true)
	if tl.Expected != 1000 || tl.Lost != 1 || tl.Duplicated != 1 || tl.Received != 1000 {
		t.Fatalf("tally = %+v", tl)
	}
	// A sequence beyond what was sent is not counted as delivered.
	r := NewReceiver(base)
	r.Record(payload(0, 5000))
	tl = Count(map[uint32]uint64{0: 1}, []*Receiver{r}, false)
	if tl.Lost != 1 || tl.Duplicated != 1 {
		t.Fatalf("out-of-range tally = %+v", tl)
	}
}

func TestBitset(t *testing.T) {
	var b bitset
	for _, i := range []uint64{0, 63, 64, 1000} {
		if b.add(i) {
			t.Fatalf("add(%d) reported a duplicate", i)
		}
	}
	if !b.add(63) || b.count() != 4 || b.countBelow(64) != 2 || b.countBelow(65) != 3 || b.countBelow(0) != 0 {
		t.Fatalf("bitset %v: count %d below64 %d", b, b.count(), b.countBelow(64))
	}
}

func TestResultJSONAndTable(t *testing.T) {
	mk := func(broker, shape string, rate float64, lost uint64) Result {
		return Result{Mode: "mqtt", Label: "broker=" + broker + ",shape=" + shape, Received: 10, DeliveredRate: rate, Lost: lost}
	}
	rs := []Result{
		mk("mosquitto", "qos0", 100, 0), mk("throng", "qos0", 400, 0),
		mk("mosquitto", "qos0", 120, 0), mk("throng", "qos0", 500, 0), mk("throng", "qos0", 9000, 0),
		{Mode: "skip", Label: "broker=mosquitto,shape=amqp-queue", Errors: []string{"no AMQP"}},
		{Mode: "amqp", Label: "broker=throng,shape=amqp-queue", Errors: []string{"refused"}},
		{Mode: "mqtt", Label: "broker=throng,shape=lat,metric=latency", Received: 5, Latency: Latency{P50: 100, P99: 1500}},
		{Mode: "conns", Label: "broker=throng,shape=idle,metric=memory", Conns: &Conns{KiBPerConn: 2.5, ConnectRate: 5000}},
	}
	var buf bytes.Buffer
	for _, r := range rs {
		_ = json.NewEncoder(&buf).Encode(r)
	}
	back, err := ReadResults(&buf)
	if err != nil || len(back) != len(rs) {
		t.Fatalf("ReadResults: %d, %v", len(back), err)
	}
	var out strings.Builder
	if err := WriteTable(&out, back, "throng"); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, want := range []string{
		"| shape | metric | throng | mosquitto | throng / mosquitto | DESIGN.md §9 target (throng) |",
		"| qos0 | delivered (msg/s) | 500 | 110 | 4.55× | ≥ 5× mosquitto: 4.55×, **not met** |",
		"| amqp-queue | delivered (msg/s) | failed | n/a | — | ≥ 100,000 msg/s: not measured |",
		"| lat | p99 (ms) | 1.50 | — | — | — |",
		"| idle | memory (KiB/conn) | 2.50 | — | — | — |",
		"- mosquitto: no AMQP",
		"- throng amqp-queue: refused",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if Median([]float64{3, 1, 2, 10}) != 2.5 || Median(nil) != 0 {
		t.Error("Median")
	}
}
