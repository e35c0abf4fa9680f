// Package history keeps the last 15 minutes of message rates and backlog
// at 5 s resolution, per node, tenant, address and connection, in memory
// (issue 15, "Rates and history"; docs/console.md).
//
// Each series is a fixed-size ring of Points points. A point holds the
// messages in and out during its interval and, for stored series, the
// backlog at its end, each as a 16-bit float-like code (code16): exact up
// to 2047, within 0.05 % above, up to 2^42. So a series costs
// 6 bytes × 180 = 1080 bytes of points (connections, without backlog,
// 720), plus its map entry and header: see Bytes and docs/console.md for
// the measured totals (10,000 addresses, 100,000 connections).
//
// A sampler (internal/app) reads the existing cumulative counters every
// Step and hands them to a Round; the ring stores the difference to the
// previous reading. Counters that went down (a node restart, an address
// deleted and defined again) count from zero. A series not given in a
// round is dropped at its end (the address was deleted, the connection
// closed). A connection's series is made only once it has carried a
// message, so idle connections cost nothing here.
package history

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// Step is the interval between points; Points is how many a series keeps
// (15 minutes).
const (
	Step   = 5 * time.Second
	Points = 180
)

// Series names.
func NodeSeries() string                           { return "node" }
func TenantSeries(tenantName string) string        { return "tenant:" + tenantName }
func AddressSeries(tenantName, name string) string { return "address:" + tenantName + "/" + name }
func ConnectionSeries(id string) string            { return "connection:" + id }

// View is a series as the admin API returns it: columns of equal length,
// oldest first, ready for a chart.
type View struct {
	Series string `json:"series"`
	Step   int    `json:"step"` // seconds
	// Time is the end of each point's interval, Unix seconds.
	Time []int64   `json:"time"`
	In   []float64 `json:"messagesInPerSecond"`
	Out  []float64 `json:"messagesOutPerSecond"`
	// Backlog is the stored messages at the end of each interval; absent
	// for connections.
	Backlog []int64 `json:"backlog,omitempty"`
}

// ring is one series.
type ring struct {
	backlog bool     // points have a backlog value
	pts     []uint16 // Points × (2 or 3) codes: in, out[, backlog]
	last    int64    // Unix seconds of the newest point; the others are Step apart
	head    int      // the next point's index
	n       int      // points held
	prevIn  uint64   // the counters at the last reading
	prevOut uint64
	round   uint32 // the last round that gave the series
}

func (g *ring) width() int {
	if g.backlog {
		return 3
	}
	return 2
}

// Recorder holds the series.
type Recorder struct {
	mu     sync.RWMutex
	series map[string]*ring // guarded by mu
	round  uint32           // guarded by mu (written by the one sampler)
	// prev: the time of the last round.
	prev time.Time
}

// New returns an empty recorder.
func New() *Recorder { return &Recorder{series: map[string]*ring{}} }

// Round is one sampling pass: the sampler gives every series' current
// counters, then calls End. One round at a time.
type Round struct {
	r     *Recorder
	now   time.Time
	scale float64 // Step / the actual interval, so that a late tick does not inflate the rates
}

// Begin starts a round at now; it holds the recorder's lock until End.
func (r *Recorder) Begin(now time.Time) *Round {
	r.mu.Lock()
	r.round++
	scale := 1.0
	if !r.prev.IsZero() {
		if dt := now.Sub(r.prev); dt > 0 {
			scale = float64(Step) / float64(dt)
		}
	}
	r.prev = now
	return &Round{r: r, now: now, scale: scale}
}

// Stored records a series with a backlog (node, tenant, address):
// cumulative messages in and out, and the backlog now.
func (rd *Round) Stored(key string, in, out uint64, backlog int64) {
	rd.add(key, in, out, backlog, true, true)
}

// Counters records a series without backlog (connection). Its ring is
// made only once a message has passed.
func (rd *Round) Counters(key string, in, out uint64) {
	rd.add(key, in, out, 0, false, in != 0 || out != 0)
}

func (rd *Round) add(key string, in, out uint64, backlog int64, withBacklog, create bool) {
	r := rd.r
	g := r.series[key]
	if g == nil {
		if !create {
			return
		}
		g = &ring{backlog: withBacklog}
		g.pts = make([]uint16, Points*g.width())
		r.series[key] = g
	}
	g.round = r.round
	dIn, dOut := in, out
	if in >= g.prevIn {
		dIn = in - g.prevIn
	}
	if out >= g.prevOut {
		dOut = out - g.prevOut
	}
	g.prevIn, g.prevOut = in, out
	w := g.width()
	i := g.head * w
	g.pts[i] = code16(uint64(math.Round(float64(dIn) * rd.scale)))
	g.pts[i+1] = code16(uint64(math.Round(float64(dOut) * rd.scale)))
	if w == 3 {
		g.pts[i+2] = code16(uint64(max(backlog, 0)))
	}
	g.last = rd.now.Unix()
	g.head = (g.head + 1) % Points
	g.n = min(g.n+1, Points)
}

// End drops the series not given in this round and releases the lock.
func (rd *Round) End() {
	r := rd.r
	for k, g := range r.series {
		if g.round != r.round {
			delete(r.series, k)
		}
	}
	r.mu.Unlock()
}

// Series returns the points of a series, oldest first; an unknown one
// has none.
func (r *Recorder) Series(key string) View {
	v := View{Series: key, Step: int(Step / time.Second), Time: []int64{}, In: []float64{}, Out: []float64{}}
	r.mu.RLock()
	defer r.mu.RUnlock()
	g := r.series[key]
	if g == nil {
		return v
	}
	w := g.width()
	step := Step.Seconds()
	for k := range g.n {
		j := (g.head - g.n + k + Points) % Points
		v.Time = append(v.Time, g.last-int64(g.n-1-k)*int64(step))
		v.In = append(v.In, float64(decode16(g.pts[j*w]))/step)
		v.Out = append(v.Out, float64(decode16(g.pts[j*w+1]))/step)
		if w == 3 {
			v.Backlog = append(v.Backlog, int64(decode16(g.pts[j*w+2])))
		}
	}
	return v
}

// Len is the number of series held.
func (r *Recorder) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.series)
}

// code16 encodes v in 16 bits: below 2048 exactly (exponent 0); above,
// an exponent e in the top 5 bits and the 11 bits of v below its leading
// bit's position, shifted right by e (rounded down). Values beyond
// 2^42 saturate.
func code16(v uint64) uint16 {
	if v < 1<<11 {
		return uint16(v)
	}
	e := bits.Len64(v) - 11 // v>>e has 11 bits, the top one set
	if e > 31 {
		return math.MaxUint16
	}
	return uint16(e)<<11 | uint16(v>>e)&0x7FF
}

// decode16 is the inverse of code16: the middle of the code's range.
func decode16(c uint16) uint64 {
	e := uint(c >> 11)
	m := uint64(c & 0x7FF)
	if e == 0 {
		return m
	}
	v := (m | 1<<10) << e
	return v + (uint64(1)<<e)/2
}
