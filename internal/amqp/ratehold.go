package amqp

import (
	"errors"
	"math"
	"time"

	"github.com/throngmq/throng/internal/quota"
)

// Backpressure over the message rate (issue 14, docs/security.md "Message
// rate in"): a client sender whose transfer was refused over its
// tenant's (or connection's) message rate is throttled with link credit
// instead of being refused at the speed it can send. The refusal itself
// is unchanged (rejected, amqp:resource-limit-exceeded); then
//
//   - no credit is granted again for the time the rate needs for the
//     refused transfers (1 / rate each, at most maxRateHold), and
//   - while the link is throttled, it is granted credit for throttleSlice
//     at the rate (at least 1) rather than Config.LinkCredit, renewed as
//     the outcomes come back.
//
// The credit the sender holds is not withdrawn (a flow lowering it):
// go-amqp (v1.7) computes its credit from such a flow in unsigned
// arithmetic, and when its transfers in flight exceed the new credit it
// wraps to 4 billion and sends until the link is detached for a
// transfer without credit. So the first refusals use up what the
// sender was granted (at most Config.LinkCredit); the hold and the cut
// apply from then on.
//
// A sender at or under the rate never sees it; one that was refused gets
// its full credit back a second after its last hold ended. Each link of a
// tenant is throttled by what it is refused, so a tenant's links together
// are held to about the rate, and their transfers cost the node about
// that many refusals a second rather than the line rate.

// maxRateHold bounds one hold, as maxRatePause does for MQTT: a held
// sender resumes within a second.
const maxRateHold = time.Second

// throttleSlice is the time at the rate a throttled link's credit covers.
const throttleSlice = 100 * time.Millisecond

// overRate records the outcome of a transfer refused over a message rate
// (err wraps a *quota.Error of a rate limit): the link's credit is held
// and cut. False for any other outcome.
func (l *link) overRate(err error) bool {
	var qe *quota.Error
	if err == nil || !errors.As(err, &qe) || qe.Rate <= 0 || (qe.Limit != quota.MessagesIn && qe.Limit != quota.MessagesInPerConnection) {
		return false
	}
	now := time.Now()
	from := l.holdUntil
	if from.Before(now) {
		from = now
	}
	l.holdUntil = from.Add(time.Duration(float64(time.Second) / qe.Rate))
	if limit := now.Add(maxRateHold); l.holdUntil.After(limit) {
		l.holdUntil = limit
	}
	l.throttle = qe.Rate
	if !l.gone && !l.detachSent {
		l.wakeAfterHold()
	}
	return true
}

// wakeAfterHold makes the connection loop refill the link's credit when
// its hold ends (one timer per link at a time).
func (l *link) wakeAfterHold() {
	if l.holdTimer {
		return
	}
	l.holdTimer = true
	c := l.s.c
	time.AfterFunc(time.Until(l.holdUntil), func() { c.ev.push(event{kind: evHoldEnd, l: l}) })
}

// onHoldEnd runs on the connection loop when a hold's timer fired.
func (l *link) onHoldEnd() {
	l.holdTimer = false
	if l.gone || l.detachSent {
		return
	}
	if time.Now().Before(l.holdUntil) {
		l.wakeAfterHold() // extended by refusals meanwhile
		return
	}
	l.refill()
}

// held reports whether the link's credit is held over the rate.
func (l *link) held() bool {
	return !l.holdUntil.IsZero() && time.Now().Before(l.holdUntil)
}

// creditTarget is the credit a client sender link is granted:
// Config.LinkCredit, or while throttled (until a second after the last
// hold ended) throttleSlice's worth at the rate.
func (l *link) creditTarget() int64 {
	target := int64(l.s.c.s.cfg.LinkCredit)
	if l.throttle <= 0 {
		return target
	}
	if time.Since(l.holdUntil) > time.Second { // a second since the hold ended (it may have been a second long)
		l.throttle = 0
		return target
	}
	return min(target, max(1, int64(math.Ceil(l.throttle*throttleSlice.Seconds()))))
}
