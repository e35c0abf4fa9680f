// Package clock is the wall clock of throng's expiry decisions: the
// absolute expiry a message gets from its TTL and every comparison of a
// stored expiry with now (router, retained messages), the remaining
// message expiry interval sent to MQTT 5 subscribers, MQTT session expiry,
// will delays and node leases. Everything else (timeouts, timers,
// intervals) keeps using the time package and its monotonic clock.
//
// A debug-only offset shifts this clock so that the soak harness can
// model a wall-clock jump of the node's machine (docs/reliability.md,
// "Wall-clock jumps"): Go reads the time through the vDSO, so libfaketime
// does not reach it, and a monotonic jump is not what a machine's clock
// does. With an offset, Now has no monotonic reading, so that every
// comparison it takes part in uses the (shifted) wall clock, as a
// comparison with a stored timestamp does after a real jump. Without one
// (always, outside the harness), Now is time.Now.
//
// The engine (nats-server) keeps its own clock: its per-message TTL
// (Nats-TTL, set from the remaining time of a message's expiry) and an
// address's maxAge are not shifted.
package clock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// EnvOffsetFile is the environment variable that names the offset file of
// `throng serve` (debug only; see Watch).
const EnvOffsetFile = "THRONG_CLOCK_OFFSET_FILE"

var offset atomic.Int64 // nanoseconds added to the wall clock

// Now returns the wall clock plus the offset (time.Now without one).
func Now() time.Time {
	o := offset.Load()
	if o == 0 {
		return time.Now()
	}
	return time.Now().Round(0).Add(time.Duration(o))
}

// Since is Now().Sub(t).
func Since(t time.Time) time.Duration { return Now().Sub(t) }

// Until is t.Sub(Now()).
func Until(t time.Time) time.Duration { return t.Sub(Now()) }

// Offset returns the current offset.
func Offset() time.Duration { return time.Duration(offset.Load()) }

// SetOffset jumps the clock to the wall clock plus d (tests; Watch).
func SetOffset(d time.Duration) { offset.Store(int64(d)) }

// pollInterval is how often Watch reads the offset file.
var pollInterval = 50 * time.Millisecond

// Watch applies the offset written in path (a Go duration such as "1h",
// "-30m" or "0s"; a missing or empty file is 0) at once and then whenever
// the file changes, until ctx ends. After applying a value it writes it to
// path+".applied" (the same format), so that whoever jumps the clock can
// wait until the process has jumped. An unreadable value is logged and
// ignored; the first one is an error. Debug only: `throng serve` calls it
// when THRONG_CLOCK_OFFSET_FILE is set.
func Watch(ctx context.Context, path string, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	last, err := readOffset(path)
	if err != nil {
		return fmt.Errorf("clock: %s: %w", path, err)
	}
	apply(path, last, log)
	every := pollInterval
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		var lastErr string
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			d, err := readOffset(path)
			if err != nil {
				if err.Error() != lastErr { // once per bad content
					lastErr = err.Error()
					log.Warn("clock offset file unreadable; offset unchanged", "component", "clock", "file", path, "err", err)
				}
				continue
			}
			lastErr = ""
			if d != last {
				last = d
				apply(path, d, log)
			}
		}
	}()
	return nil
}

func readOffset(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration: %q", s)
	}
	return d, nil
}

func apply(path string, d time.Duration, log *slog.Logger) {
	before := Offset()
	SetOffset(d)
	if d != 0 || before != 0 {
		log.Warn("wall clock of expiry decisions shifted (debug)", "component", "clock", "offset", d.String(), "jump", (d - before).String())
	}
	tmp := path + ".applied.tmp"
	if err := os.WriteFile(tmp, []byte(d.String()+"\n"), 0o644); err == nil {
		err = os.Rename(tmp, path+".applied")
		if err != nil {
			log.Warn("clock offset not acknowledged", "component", "clock", "err", err)
		}
	}
}
