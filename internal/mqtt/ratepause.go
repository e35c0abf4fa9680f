package mqtt

import "time"

// pauseReading is the reader goroutine's backpressure over a message
// rate (TLS, WebSocket: readLoop), what re-arming the socket after a
// timer is for a polled connection (evread.go): the connection is not
// read for d, so TCP flow control pushes a flood over the tenant's (or
// connection's) rate back to its client instead of the node parsing and
// refusing it at line rate. d is at most maxRatePause, so PINGREQ is
// still answered within any keep-alive. The wait ends early when the
// connection is closed meanwhile (kick, shutdown), so that its cleanup
// (a session takeover waits for it) is not delayed.
func (c *conn) pauseReading(d time.Duration) {
	const step = 50 * time.Millisecond
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 {
			return
		}
		time.Sleep(min(left, step))
		c.wmu.Lock()
		closed := c.wclosed
		c.wmu.Unlock()
		if closed {
			return
		}
	}
}
