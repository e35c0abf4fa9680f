package bench

import (
	"context"
	"time"
)

// Schedule hands out the intended send time of each message of one
// sender. With a fixed rate, message i is due at start + i/rate whatever
// happened before it: a sender that fell behind (the broker pushed back,
// the machine was busy) sends the overdue messages at once, and their
// latency is measured from when they were due, not from when they were
// finally sent. That is what avoids coordinated omission — a stalled
// broker shows up as latency instead of as a pause in the load.
// With rate 0 there is no plan and the intended time is the actual one.
type Schedule struct {
	start    time.Time
	interval time.Duration // 0: as fast as possible
	next     int64
	// OnIdle, if set, is called before waiting for a message that is
	// not due yet: the moment to flush buffered writes.
	OnIdle func()

	now   func() time.Time
	sleep func(context.Context, time.Duration) error
}

// NewSchedule returns a schedule starting at start for rate messages per
// second (0: unpaced).
func NewSchedule(start time.Time, rate float64) *Schedule {
	s := &Schedule{start: start, now: time.Now, sleep: sleepCtx}
	if rate > 0 {
		s.interval = time.Duration(float64(time.Second) / rate)
		if s.interval <= 0 {
			s.interval = 1
		}
	}
	return s
}

// Due returns the intended time of message i (0-based).
func (s *Schedule) Due(i int64) time.Time {
	return s.start.Add(time.Duration(i) * s.interval)
}

// Next waits until the next message is due and returns its intended send
// time. It returns ctx's error when ctx ends first.
func (s *Schedule) Next(ctx context.Context) (intended time.Time, err error) {
	if s.interval == 0 {
		// Unpaced senders still start together at start: the run's
		// duration is measured from it (a fast broker can finish a short
		// run within the few milliseconds before it).
		if s.next == 0 {
			if d := s.start.Sub(s.now()); d > 0 {
				if err := s.sleep(ctx, d); err != nil {
					return time.Time{}, err
				}
			}
		}
		s.next++
		return s.now(), ctx.Err()
	}
	due := s.Due(s.next)
	s.next++
	if d := due.Sub(s.now()); d > 0 {
		if s.OnIdle != nil {
			s.OnIdle()
			d = due.Sub(s.now())
		}
		if d > 0 {
			return due, s.sleep(ctx, d)
		}
	}
	return due, ctx.Err()
}

// Behind reports how late the sender is with respect to the next due
// message (0 when ahead or unpaced).
func (s *Schedule) Behind() time.Duration {
	if s.interval == 0 {
		return 0
	}
	return max(0, s.now().Sub(s.Due(s.next)))
}

// sleepCtx sleeps for d or until ctx ends. Waits under 2 ms use a
// precise sleep (see preciseSleep): the runtime's timers are rounded to
// about a millisecond here, and at 10k msg/s that error would show up as
// latency.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d < 2*time.Millisecond {
		preciseSleep(d)
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// awaitDeliveries waits after sending until received() reaches expected,
// nothing has arrived for a second, deadline passes or ctx ends.
func awaitDeliveries(ctx context.Context, deadline time.Time, expected uint64, received func() uint64) {
	prev, still := received(), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n := received()
		if n >= expected {
			return
		}
		if n != prev {
			prev, still = n, time.Now()
		} else if time.Since(still) > time.Second {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// receivedBy returns a function summing the deliveries of the receivers.
func receivedBy(rcv []*Receiver) func() uint64 {
	return func() (n uint64) {
		for _, r := range rcv {
			n += r.Received()
		}
		return n
	}
}
