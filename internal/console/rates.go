package console

import (
	"sync"
	"time"
)

// rates turns the API's cumulative address counters (messagesIn,
// messagesOut) into messages per second: the difference between two
// readings at least a second apart, kept per address. It holds two
// readings per address that a page has shown (bounded by the addresses
// that exist, about 100 bytes each; readings older than a minute are
// dropped when the table is swept).
type rates struct {
	mu  sync.Mutex
	m   map[string]*rateEntry
	now func() time.Time
}

type rateEntry struct {
	prev, cur reading
	in, out   float64 // the last computed rates
}

type reading struct {
	at      time.Time
	in, out uint64
}

const maxRateEntries = 100000

func newRates(now func() time.Time) *rates {
	return &rates{m: map[string]*rateEntry{}, now: now}
}

// observe records the counters of key and returns its rates in and out.
func (rs *rates) observe(key string, in, out uint64) (float64, float64) {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	e := rs.m[key]
	if e == nil {
		if len(rs.m) >= maxRateEntries {
			rs.sweepLocked(now)
		}
		e = &rateEntry{cur: reading{now, in, out}}
		rs.m[key] = e
		return 0, 0
	}
	if in < e.cur.in || out < e.cur.out {
		// The counters restarted (the node or the address did).
		*e = rateEntry{cur: reading{now, in, out}}
		return 0, 0
	}
	if now.Sub(e.cur.at) < time.Second {
		return e.in, e.out
	}
	e.prev, e.cur = e.cur, reading{now, in, out}
	dt := e.cur.at.Sub(e.prev.at).Seconds()
	if dt > 60 {
		// Too old to say what the rate is now.
		e.in, e.out = 0, 0
		return 0, 0
	}
	e.in = float64(e.cur.in-e.prev.in) / dt
	e.out = float64(e.cur.out-e.prev.out) / dt
	return e.in, e.out
}

func (rs *rates) sweepLocked(now time.Time) {
	for k, e := range rs.m {
		if now.Sub(e.cur.at) > time.Minute {
			delete(rs.m, k)
		}
	}
	if len(rs.m) >= maxRateEntries {
		clear(rs.m)
	}
}
