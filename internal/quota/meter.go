package quota

import (
	"sync"
	"sync/atomic"
	"time"
)

// Meter measures a rate: events in the last whole second. It costs one
// atomic add per event (a lock once a second), so it can sit on the
// publish and delivery paths. A count landing at a second's boundary may
// be counted in the neighbouring second: it is a figure to show, not a
// limit.
type Meter struct {
	mu   sync.Mutex
	sec  atomic.Int64 // the second cur counts
	cur  atomic.Int64
	last atomic.Int64 // events in second sec-1
}

// Add counts one event at now.
func (m *Meter) Add(now time.Time) {
	if s := now.Unix(); m.sec.Load() != s {
		m.roll(s)
	}
	m.cur.Add(1)
}

// Inc counts one event now, read from a clock that ticks ten times a
// second (coarseSecond) instead of time.Now: it sits on the delivery path,
// once per delivery, where a clock read per message cost ~3 % of the CPU
// of a 1 → 100 fan-out.
func (m *Meter) Inc() {
	if s := coarseSecond(); m.sec.Load() != s {
		m.roll(s)
	}
	m.cur.Add(1)
}

// coarse is the current Unix second, kept by one goroutine started on
// first use; it lags the wall clock by at most 100 ms.
var coarse struct {
	once sync.Once
	sec  atomic.Int64
}

func coarseSecond() int64 {
	coarse.once.Do(func() {
		coarse.sec.Store(time.Now().Unix())
		go func() {
			for t := range time.Tick(100 * time.Millisecond) {
				coarse.sec.Store(t.Unix())
			}
		}()
	})
	return coarse.sec.Load()
}

// Rate is the number of events in the last whole second before now.
func (m *Meter) Rate(now time.Time) float64 {
	s := now.Unix()
	if m.sec.Load() != s {
		m.roll(s)
	}
	return float64(m.last.Load())
}

func (m *Meter) roll(s int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.sec.Load()
	if old == s {
		return
	}
	if s == old+1 {
		m.last.Store(m.cur.Swap(0))
	} else {
		m.cur.Store(0)
		m.last.Store(0)
	}
	m.sec.Store(s)
}
