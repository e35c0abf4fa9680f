package bench

import (
	"syscall"
	"time"
)

// preciseSleep blocks the calling thread in nanosleep(2): about 60 µs of
// overshoot instead of the runtime timer's millisecond. The runtime hands
// the goroutine's P to another thread meanwhile.
func preciseSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}
