package amqp

import (
	"math"
	"slices"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
	"github.com/throngmq/throng/internal/router"
)

// session is one AMQP session (part 2.5.5), owned by the connection loop.
//
// Windows: the server's incoming-window starts at Config.SessionWindow
// transfer frames and is restored with a flow once half is used; a transfer
// beyond it ends the session with amqp:session:window-violation. The
// outgoing window is unlimited; what the server sends is bounded by the
// peer's incoming window (remoteIncomingWindow) and by link credit.
type session struct {
	c   *conn
	rch uint16 // the peer's channel
	ch  uint16 // ours

	nextIncomingID       uint32 // the next transfer id expected from the peer
	incomingWindow       uint32
	nextOutgoingID       uint32
	remoteIncomingWindow uint32
	peerHandleMax        uint32

	links   map[uint32]*link // by the peer's handle
	handles map[uint32]*link // by our handle
	senders []*link          // links on which the server sends, for round robin
	rr      int

	nextDeliveryID uint32
	unsettledOut   map[uint32]*link            // delivery id → sender link (server → peer)
	outDeliveries  map[uint32]*router.Delivery // delivery id → router delivery
	unsettledIn    map[uint32]struct{}         // received deliveries waiting for the peer to settle (rcv-settle-mode second)
	cur            *sending                    // a message whose frames did not all fit the window
	curBuf         sending                     // what cur points to: one delivery is sent at a time

	dispos     []dispo // outcomes to send
	flowLinks  []*link // links that need a flow
	flowNeeded bool    // a session-level flow is due
	dirty      bool
	ending     bool            // we sent end with an error and wait for the peer's end
	scratch    []byte          // a transfer performative being measured
	tr         frames.Transfer // the transfer being written (continueSend)
	msgBuf     []byte          // the encoded message of cur
}

type dispo struct {
	id      uint32
	settled bool
	state   encoding.DeliveryState
}

// sending is a delivery in the middle of its transfer frames.
type sending struct {
	l       *link
	id      uint32
	tag     []byte
	tagBuf  [8]byte // tag's storage
	payload []byte
	off     int
	settled bool
	d       *router.Delivery
}

func newSession(c *conn, rch, ch uint16, b *frames.Begin) *session {
	return &session{
		c: c, rch: rch, ch: ch,
		nextIncomingID:       b.NextOutgoingID,
		incomingWindow:       c.s.cfg.SessionWindow,
		remoteIncomingWindow: b.IncomingWindow,
		peerHandleMax:        b.HandleMax,
		links:                map[uint32]*link{},
		handles:              map[uint32]*link{},
		unsettledOut:         map[uint32]*link{},
		outDeliveries:        map[uint32]*router.Delivery{},
		unsettledIn:          map[uint32]struct{}{},
	}
}

func (s *session) write(p encoding.Marshaler, payload []byte) { s.c.writeFrame(s.ch, p, payload) }

func (s *session) handle(p frames.Performative, payload []byte) error {
	if s.ending {
		// After our end, frames are discarded until the peer's end.
		if _, ok := p.(*frames.End); ok {
			s.remove()
		}
		return nil
	}
	switch p := p.(type) {
	case *frames.Attach:
		return s.onAttach(p)
	case *frames.Flow:
		return s.onFlow(p)
	case *frames.Transfer:
		return s.onTransfer(p, payload)
	case *frames.Disposition:
		return s.onDisposition(p)
	case *frames.Detach:
		return s.onDetach(p)
	case *frames.End:
		if p.Error != nil {
			s.c.log.Debug("peer ended session with error", "condition", p.Error.Condition, "description", p.Error.Description)
		}
		s.teardown()
		s.write(&frames.End{}, nil)
		s.remove()
		return nil
	}
	return connErr(frames.CondIllegalState, "unexpected %T on a session", p)
}

// endWith ends the session with an error (amqp:session:* conditions).
func (s *session) endWith(e *encoding.Error) {
	if s.ending {
		return
	}
	s.teardown()
	s.write(&frames.End{Error: e}, nil)
	s.ending = true
}

func (s *session) remove() {
	delete(s.c.sessions, s.rch)
	delete(s.c.ours, s.ch)
}

// teardown detaches every link from the router (without frames).
func (s *session) teardown() {
	for _, l := range s.links {
		l.teardown()
	}
	s.c.nlinks.Add(-int32(len(s.links))) // observe.go
	s.links = map[uint32]*link{}
	s.handles = map[uint32]*link{}
	s.senders = nil
	s.cur = nil
	clear(s.unsettledOut)
	clear(s.outDeliveries)
}

func (s *session) allocHandle() (uint32, bool) {
	for h := uint32(0); h <= s.peerHandleMax && h <= s.c.s.cfg.HandleMax; h++ {
		if s.handles[h] == nil {
			return h, true
		}
	}
	return 0, false
}

func (s *session) linkFor(handle uint32) (*link, error) {
	l := s.links[handle]
	if l == nil {
		return nil, sessionErr(s, frames.CondUnattachedHandle, "handle %d is not attached", handle)
	}
	return l, nil
}

func (s *session) onFlow(f *frames.Flow) error {
	// remote-incoming-window = next-incoming-id(flow) + incoming-window(flow) - next-outgoing-id(ours)
	nextIn := f.NextIncomingID
	if !f.HasNextIncomingID {
		nextIn = 0 // the initial next-outgoing-id we sent in begin
	}
	s.remoteIncomingWindow = nextIn + f.IncomingWindow - s.nextOutgoingID
	if f.HasHandle {
		l, err := s.linkFor(f.Handle)
		if err != nil {
			return err
		}
		if l.detachSent {
			return nil
		}
		if err := l.onFlow(f); err != nil {
			return err
		}
	} else if f.Echo {
		s.flowNeeded = true
		s.c.markDirty(s)
	}
	s.pump()
	return nil
}

func (s *session) onTransfer(t *frames.Transfer, payload []byte) error {
	if s.incomingWindow == 0 {
		return sessionErr(s, frames.CondWindowViolation, "transfer beyond the incoming window")
	}
	s.incomingWindow--
	s.nextIncomingID++
	if s.incomingWindow < s.c.s.cfg.SessionWindow/2 {
		// Restored when this round's frames are handled (flush), so a
		// peer that blasts past the window in one go is caught.
		s.flowNeeded = true
		s.c.markDirty(s)
	}
	l, err := s.linkFor(t.Handle)
	if err != nil {
		return err
	}
	if l.detachSent {
		return nil
	}
	if !l.isReceiver() {
		return sessionErr(s, frames.CondErrantLink, "transfer on link %q, on which the server sends", l.name)
	}
	return l.onTransfer(t, payload)
}

func (s *session) onDisposition(d *frames.Disposition) error {
	if d.Last-d.First > 1<<20 {
		// Delivery ids are serial numbers; a huge range is nonsense.
		return sessionErr(s, frames.CondInvalidField, "disposition range %d..%d", d.First, d.Last)
	}
	if d.Role == frames.RoleSender {
		// The peer settles deliveries it sent (rcv-settle-mode second).
		if d.Settled {
			for id := d.First; ; id++ {
				delete(s.unsettledIn, id)
				if id == d.Last {
					break
				}
			}
		}
		return nil
	}
	o, terminal := outcomeOf(d.State, d.Settled)
	for id := d.First; ; id++ {
		if l, ok := s.unsettledOut[id]; ok && (terminal || d.Settled) {
			rd := s.outDeliveries[id]
			delete(s.unsettledOut, id)
			delete(s.outDeliveries, id)
			if rd != nil {
				rd.Settle(o)
			}
			l.unsettled--
			if !d.Settled {
				// rcv-settle-mode second: the receiver waits for us to settle.
				s.queueDispo(id, true, d.State, frames.RoleSender)
			}
		}
		if id == d.Last {
			break
		}
	}
	return nil
}

// outcomeOf maps a receiver's delivery state onto a router outcome. A
// delivery settled without an outcome counts as released (our sources'
// default-outcome), so it is never lost.
func outcomeOf(st encoding.DeliveryState, settled bool) (router.Outcome, bool) {
	switch st := st.(type) {
	case *encoding.Accepted:
		return router.Outcome{Kind: router.Accepted}, true
	case *encoding.Rejected:
		o := router.Outcome{Kind: router.Rejected}
		if st.Error != nil {
			o.Condition, o.Description = string(st.Error.Condition), st.Error.Description
		}
		return o, true
	case *encoding.Released:
		return router.Outcome{Kind: router.Released}, true
	case *encoding.Modified:
		return router.Outcome{Kind: router.Modified, DeliveryFailed: st.DeliveryFailed, UndeliverableHere: st.UndeliverableHere}, true
	}
	return router.Outcome{Kind: router.Released}, false
}

func (s *session) queueDispo(id uint32, settled bool, st encoding.DeliveryState, role frames.Role) {
	if role == frames.RoleSender {
		// Our settlement of deliveries we sent: sent at once, rare.
		s.write(&frames.Disposition{Role: frames.RoleSender, First: id, Last: id, Settled: true, State: st}, nil)
		return
	}
	s.dispos = append(s.dispos, dispo{id: id, settled: settled, state: st})
	s.c.markDirty(s)
}

// flush sends the dispositions collected this round, merging runs of
// consecutive delivery ids with the same simple outcome, then link and
// session flows.
func (s *session) flush() {
	s.dirty = false
	if s.flowNeeded && s.incomingWindow < s.c.s.cfg.SessionWindow/2 {
		s.incomingWindow = s.c.s.cfg.SessionWindow
	}
	if s.ending {
		s.dispos, s.flowLinks = s.dispos[:0], s.flowLinks[:0]
		return
	}
	if len(s.dispos) > 0 {
		ds := s.dispos
		slices.SortFunc(ds, func(a, b dispo) int { return int(int32(a.id - b.id)) })
		for i := 0; i < len(ds); {
			j := i + 1
			if simpleState(ds[i].state) {
				for j < len(ds) && ds[j].id == ds[j-1].id+1 && ds[j].settled == ds[i].settled && sameSimple(ds[i].state, ds[j].state) {
					j++
				}
			}
			s.write(&frames.Disposition{Role: frames.RoleReceiver, First: ds[i].id, Last: ds[j-1].id, Settled: ds[i].settled, State: ds[i].state}, nil)
			i = j
		}
		clear(ds)
		s.dispos = ds[:0]
	}
	for _, l := range s.flowLinks {
		l.flowQueued = false
		if !l.detachSent {
			s.write(l.flowFrame(), nil)
			l.echo = false
		}
	}
	clear(s.flowLinks)
	s.flowLinks = s.flowLinks[:0]
	if s.flowNeeded {
		s.flowNeeded = false
		s.write(s.sessionFlow(), nil)
	}
}

func simpleState(st encoding.DeliveryState) bool {
	switch st.(type) {
	case *encoding.Accepted, *encoding.Released:
		return true
	}
	return false
}

func sameSimple(a, b encoding.DeliveryState) bool {
	switch a.(type) {
	case *encoding.Accepted:
		_, ok := b.(*encoding.Accepted)
		return ok
	case *encoding.Released:
		_, ok := b.(*encoding.Released)
		return ok
	}
	return false
}

func (s *session) sessionFlow() *frames.Flow {
	return &frames.Flow{
		NextIncomingID: s.nextIncomingID, HasNextIncomingID: true,
		IncomingWindow: s.incomingWindow,
		NextOutgoingID: s.nextOutgoingID,
		OutgoingWindow: math.MaxUint32,
	}
}

func (s *session) queueFlow(l *link) {
	if !l.flowQueued {
		l.flowQueued = true
		s.flowLinks = append(s.flowLinks, l)
		s.c.markDirty(s)
	}
}

// pump sends pending deliveries while the peer's incoming window and the
// links' credit allow, one delivery per link in turn.
func (s *session) pump() {
	if s.ending || s.c.done {
		return
	}
	if s.cur != nil {
		s.continueSend()
		if s.cur != nil {
			return
		}
	}
	for s.remoteIncomingWindow > 0 && len(s.senders) > 0 {
		progress := false
		for i := 0; i < len(s.senders); i++ {
			l := s.senders[(s.rr+i)%len(s.senders)]
			if l.pending.len() == 0 || l.credit == 0 || l.detachSent {
				continue
			}
			l.send(l.pending.pop())
			progress = true
			if l.drainReq && !l.draining && (l.pending.len() == 0 || l.credit == 0) {
				l.finishDrain() // the last transfer a drain waited for
			}
			if s.cur != nil || s.remoteIncomingWindow == 0 {
				s.rr = (s.rr + i + 1) % len(s.senders)
				return
			}
		}
		if !progress {
			return
		}
	}
}

// continueSend writes the frames of s.cur while the window allows.
func (s *session) continueSend() {
	x := s.cur
	first := x.off == 0
	for s.remoteIncomingWindow > 0 {
		// s.tr, not a local: a pointer to a local passed on as a
		// Marshaler escapes, one allocation per transfer.
		t := &s.tr
		*t = frames.Transfer{Handle: x.l.handle, More: true}
		if first {
			t.DeliveryID, t.HasDeliveryID = x.id, true
			t.DeliveryTag = x.tag
			t.MessageFormat, t.HasMessageFormat = 0, true
			t.Settled = x.settled
		}
		s.scratch, _ = t.MarshalAMQP(s.scratch[:0])
		room := int(s.c.maxFrameOut) - frames.HeaderSize - len(s.scratch)
		rest := len(x.payload) - x.off
		n := min(rest, room)
		if n == rest {
			t.More = false
		}
		s.write(t, x.payload[x.off:x.off+n])
		x.off += n
		s.nextOutgoingID++
		s.remoteIncomingWindow--
		first = false
		if x.off == len(x.payload) {
			s.cur = nil
			s.c.s.m.msgsOut.Inc()
			s.c.ce.Out(len(x.payload))
			if x.settled && x.d != nil {
				x.d.Settle(router.Outcome{Kind: router.Accepted}) // at-most-once: settled on send
			}
			*x = sending{} // x is s.curBuf: keep no delivery or link alive
			return
		}
	}
	s.cur = x
}
