package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Payload layout: every message carries who sent it, its sequence number
// and its intended send time, so that receivers can count lost and
// duplicated messages and measure latency without any side channel.
//
//	0..1   magic "tb"
//	2..5   publisher id (uint32, big-endian)
//	6..13  sequence number (uint64, from 0)
//	14..21 intended send time, nanoseconds since the run's base (int64)
//	22..   padding up to the requested size
const (
	payloadHeader  = 22
	magic0, magic1 = 't', 'b'
)

// ErrNotBenchPayload is returned for a message that is not one of ours.
var ErrNotBenchPayload = errors.New("bench: not a bench payload")

// putHeader writes the header into p (len(p) >= payloadHeader).
func putHeader(p []byte, pub uint32, seq uint64, intended int64) {
	p[0], p[1] = magic0, magic1
	binary.BigEndian.PutUint32(p[2:], pub)
	binary.BigEndian.PutUint64(p[6:], seq)
	binary.BigEndian.PutUint64(p[14:], uint64(intended))
}

// parseHeader reads the header of a received payload.
func parseHeader(p []byte) (pub uint32, seq uint64, intended int64, err error) {
	if len(p) < payloadHeader || p[0] != magic0 || p[1] != magic1 {
		return 0, 0, 0, ErrNotBenchPayload
	}
	return binary.BigEndian.Uint32(p[2:]), binary.BigEndian.Uint64(p[6:]), int64(binary.BigEndian.Uint64(p[14:])), nil
}

// bitset is a growable set of sequence numbers.
type bitset []uint64

// add sets bit i and reports whether it was already set.
func (b *bitset) add(i uint64) (dup bool) {
	w := int(i / 64)
	if w >= len(*b) {
		n := max(w+1, 2*len(*b))
		nb := make(bitset, n)
		copy(nb, *b)
		*b = nb
	}
	m := uint64(1) << (i % 64)
	dup = (*b)[w]&m != 0
	(*b)[w] |= m
	return dup
}

func (b bitset) count() uint64 {
	var n int
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return uint64(n)
}

func (b bitset) or(o bitset) bitset {
	if len(o) > len(b) {
		nb := make(bitset, len(o))
		copy(nb, b)
		b = nb
	}
	for i, w := range o {
		b[i] |= w
	}
	return b
}

// countBelow counts the set bits below n.
func (b bitset) countBelow(n uint64) uint64 {
	var c int
	for i, w := range b {
		lo := uint64(i) * 64
		if lo >= n {
			break
		}
		if lo+64 > n {
			w &= (uint64(1) << (n - lo)) - 1
		}
		c += bits.OnesCount64(w)
	}
	return uint64(c)
}

// Receiver records what one consumer received. Record is called from
// the consumer's reading goroutine only; the counters read by the progress
// reporter are atomic.
type Receiver struct {
	base     time.Time
	seen     map[uint32]*bitset
	hist     *Histogram
	foreign  uint64 // messages that were not bench payloads
	received atomic.Uint64
	last     atomic.Int64 // time of the last delivery, ns since base
	mu       sync.Mutex   // guards seen/hist against the final Tally
}

// NewReceiver returns a receiver measuring against base (the run's clock
// origin, shared with the senders).
func NewReceiver(base time.Time) *Receiver {
	return &Receiver{base: base, seen: make(map[uint32]*bitset), hist: NewHistogram()}
}

// Record accounts one delivered payload.
func (r *Receiver) Record(p []byte) {
	now := int64(time.Since(r.base))
	pub, seq, intended, err := parseHeader(p)
	r.mu.Lock()
	if err != nil {
		r.foreign++
		r.mu.Unlock()
		return
	}
	bs := r.seen[pub]
	if bs == nil {
		bs = new(bitset)
		r.seen[pub] = bs
	}
	bs.add(seq)
	r.hist.Record(now - intended)
	r.mu.Unlock()
	r.received.Add(1)
	r.last.Store(now)
}

// Received is the number of bench payloads and others delivered so far.
func (r *Receiver) Received() uint64 { return r.received.Load() }

// Tally is the outcome of a run's message accounting.
type Tally struct {
	Sent       uint64
	Expected   uint64 // deliveries that should have happened
	Received   uint64
	Lost       uint64
	Duplicated uint64
	Latency    *Histogram
}

// Count computes lost and duplicated deliveries. sent maps each
// publisher id to the number of messages it sent (sequence numbers
// 0..n-1). With shared set, the receivers compete for one copy of every
// message (shared subscription, queue); otherwise every receiver should
// get every message.
func Count(sent map[uint32]uint64, rcv []*Receiver, shared bool) Tally {
	var t Tally
	t.Latency = NewHistogram()
	for _, n := range sent {
		t.Sent += n
	}
	if shared {
		t.Expected = t.Sent
	} else {
		t.Expected = t.Sent * uint64(len(rcv))
	}
	var distinct uint64
	union := map[uint32]bitset{}
	for _, r := range rcv {
		r.mu.Lock()
		t.Received += r.received.Load()
		t.Latency.Merge(r.hist)
		for pub, bs := range r.seen {
			if shared {
				union[pub] = union[pub].or(*bs)
			} else {
				distinct += bs.countBelow(sent[pub])
			}
		}
		r.mu.Unlock()
	}
	for pub, bs := range union {
		distinct += bs.countBelow(sent[pub])
	}
	if t.Received > distinct {
		t.Duplicated = t.Received - distinct
	}
	if t.Expected > distinct {
		t.Lost = t.Expected - distinct
	}
	return t
}

// Result is the stable, machine-readable outcome of one run (-o json).
// Rates are per second, latencies in microseconds. Fields are only ever
// added.
type Result struct {
	Mode    string `json:"mode"` // mqtt, amqp, conns, registry
	Target  string `json:"target"`
	Label   string `json:"label,omitempty"`
	Started string `json:"started"` // RFC 3339

	Publishers  int     `json:"publishers,omitempty"`
	Subscribers int     `json:"subscribers,omitempty"`
	QoS         int     `json:"qos,omitempty"`
	Version     int     `json:"version,omitempty"`
	Size        int     `json:"size,omitempty"`
	Rate        float64 `json:"rate,omitempty"` // requested total rate (0: unpaced)
	Topic       string  `json:"topic,omitempty"`
	Client      string  `json:"client,omitempty"` // mqtt: raw or paho; amqp: raw or go-amqp
	Shared      string  `json:"shared,omitempty"`
	Settle      string  `json:"settle,omitempty"`
	Credit      int     `json:"credit,omitempty"`

	Seconds       float64   `json:"seconds"`      // first send to last delivery
	SendSeconds   float64   `json:"send_seconds"` // first to last send
	Sent          uint64    `json:"sent"`
	Expected      uint64    `json:"expected"`
	Received      uint64    `json:"received"`
	Lost          uint64    `json:"lost"`
	Duplicated    uint64    `json:"duplicated"`
	SendRate      float64   `json:"send_rate"`
	DeliveredRate float64   `json:"delivered_rate"`
	Latency       Latency   `json:"latency"`
	Conns         *Conns    `json:"conns,omitempty"`
	Registry      *Registry `json:"registry,omitempty"`
	Errors        []string  `json:"errors,omitempty"`
}

// Latency summarises a histogram in microseconds.
type Latency struct {
	Count  uint64  `json:"count"`
	Mean   float64 `json:"mean_us"`
	P50    float64 `json:"p50_us"`
	P99    float64 `json:"p99_us"`
	P999   float64 `json:"p999_us"`
	Max    float64 `json:"max_us"`
	RelErr float64 `json:"relative_error"`
}

func summarize(h *Histogram) Latency {
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	return Latency{
		Count: h.Count(), Mean: h.Mean() / 1e3,
		P50: us(h.Percentile(50)), P99: us(h.Percentile(99)), P999: us(h.Percentile(99.9)),
		Max: us(h.Max()), RelErr: RelativeError,
	}
}

// Conns is the outcome of a connection run.
type Conns struct {
	Requested    int     `json:"requested"`
	Opened       int     `json:"opened"`
	Failed       int     `json:"failed"`
	SourceIPs    int     `json:"source_ips"`
	ConnectRate  float64 `json:"connect_rate"`
	PID          int     `json:"pid,omitempty"`
	RSSBeforeKiB int64   `json:"rss_before_kib,omitempty"`
	RSSAfterKiB  int64   `json:"rss_after_kib,omitempty"`
	KiBPerConn   float64 `json:"kib_per_conn,omitempty"`
}

// fill copies a tally into the result.
func (r *Result) fill(t Tally, seconds, sendSeconds float64) {
	r.Sent, r.Expected, r.Received, r.Lost, r.Duplicated = t.Sent, t.Expected, t.Received, t.Lost, t.Duplicated
	r.Seconds, r.SendSeconds = seconds, sendSeconds
	if seconds > 0 {
		r.DeliveredRate = float64(t.Received) / seconds
	}
	if sendSeconds > 0 {
		r.SendRate = float64(t.Sent) / sendSeconds
	}
	r.Latency = summarize(t.Latency)
}

// WriteText prints a human-readable report.
func (r *Result) WriteText(w io.Writer) {
	fmt.Fprintf(w, "%s bench against %s", r.Mode, r.Target)
	if r.Label != "" {
		fmt.Fprintf(w, " [%s]", r.Label)
	}
	fmt.Fprintln(w)
	if r.Registry != nil {
		r.Registry.writeText(w)
	} else if r.Conns != nil {
		c := r.Conns
		fmt.Fprintf(w, "  connections  %d opened, %d failed of %d (from %d source addresses)\n", c.Opened, c.Failed, c.Requested, c.SourceIPs)
		fmt.Fprintf(w, "  connect rate %.0f/s\n", c.ConnectRate)
		if c.PID != 0 {
			fmt.Fprintf(w, "  memory       pid %d VmRSS %d → %d KiB: %.2f KiB per connection\n", c.PID, c.RSSBeforeKiB, c.RSSAfterKiB, c.KiBPerConn)
		}
	} else {
		fmt.Fprintf(w, "  sent         %d in %.2fs (%.0f msg/s)\n", r.Sent, r.SendSeconds, r.SendRate)
		fmt.Fprintf(w, "  delivered    %d of %d expected in %.2fs (%.0f msg/s)\n", r.Received, r.Expected, r.Seconds, r.DeliveredRate)
		fmt.Fprintf(w, "  lost         %d\n  duplicated   %d\n", r.Lost, r.Duplicated)
		l := r.Latency
		fmt.Fprintf(w, "  latency      p50 %s  p99 %s  p99.9 %s  max %s  (%d samples, ±%.1f%%)\n",
			fmtUS(l.P50), fmtUS(l.P99), fmtUS(l.P999), fmtUS(l.Max), l.Count, l.RelErr*100)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error        %s\n", e)
	}
}

func fmtUS(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.0fµs", us)
}

// errorList collects distinct errors from many goroutines.
type errorList struct {
	mu   sync.Mutex
	seen map[string]int
}

func (e *errorList) add(err error) {
	if err == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.seen == nil {
		e.seen = map[string]int{}
	}
	e.seen[err.Error()]++
}

func (e *errorList) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for s, n := range e.seen {
		if n > 1 {
			s = fmt.Sprintf("%s (×%d)", s, n)
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// progress prints one line per interval to w until stop is closed.
// sendProgress prints sent and delivered counts with their rates once a
// second until the returned stop function is called.
func sendProgress(w io.Writer, sentNow, recvNow func() uint64) (stop func()) {
	done := make(chan struct{})
	var lastS, lastR uint64
	go progress(w, time.Second, done, func(el time.Duration) string {
		s, r := sentNow(), recvNow()
		line := fmt.Sprintf("%5s  sent %d (%d/s)  delivered %d (%d/s)", el, s, s-lastS, r, r-lastR)
		lastS, lastR = s, r
		return line
	})
	return func() { close(done) }
}

func progress(w io.Writer, interval time.Duration, stop <-chan struct{}, line func(elapsed time.Duration) string) {
	if w == nil {
		return
	}
	start := time.Now()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			fmt.Fprintln(w, strings.TrimSpace(line(time.Since(start).Round(time.Second))))
		}
	}
}
