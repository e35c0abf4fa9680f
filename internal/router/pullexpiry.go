package router

import (
	"slices"
	"time"
)

// Pull requests that are never answered.
//
// A feed's long-poll pull request is held by the JetStream consumer's
// leader, which answers it with entries or, at its expiry, with status
// 408. In a cluster the leader may die holding it (its node killed): no
// answer ever comes, the feed keeps counting the request as outstanding
// credit and asks for nothing more, and its consumers starve although the
// new leader has entries for them. A request not answered pullGrace after
// its expiry is therefore dropped and the feed asks again. A late answer
// is still handled: its entries are taken as any others, its status
// matches no request.

// pullGrace is how long after its expiry a request is given up.
const pullGrace = 2 * time.Second

func (f *feed) armExpiryLocked() {
	if !f.expiryArmed && !f.closed {
		f.expiryArmed = true
		time.AfterFunc(pullExpiry+pullGrace, f.expireRequests)
	}
}

// expireRequests drops the requests that outlived their expiry.
func (f *feed) expireRequests() {
	f.mu.Lock()
	f.expiryArmed = false
	old := time.Now().Add(-(pullExpiry + pullGrace))
	var dropped []string
	f.reqs = slices.DeleteFunc(f.reqs, func(rq pullReq) bool {
		if rq.sent.IsZero() || rq.sent.After(old) {
			return false
		}
		f.outstanding -= rq.due
		dropped = append(dropped, rq.id)
		return true
	})
	for _, m := range f.members {
		if m.drainReq != "" && slices.Contains(dropped, m.drainReq) {
			m.drainReq = "" // the drain asks again
		}
	}
	if len(f.reqs) > 0 {
		f.armExpiryLocked()
	}
	f.mu.Unlock()
	if len(dropped) > 0 {
		f.run()
	}
}
