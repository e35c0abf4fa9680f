package amqp

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/router"
)

// requester is a client of the request/response pattern on its own
// connection: a receiver for the replies (dynamic or named) with manual
// credit, and a sender of requests.
type requester struct {
	tag     string
	replies *goamqp.Receiver
	reqs    *goamqp.Sender
	addr    string
}

func newRequester(t *testing.T, e *testEnv, tag, replyAddr string) *requester {
	t.Helper()
	s := e.session(t, nil)
	opts := &goamqp.ReceiverOptions{Credit: -1} // manual: credit as the application asks
	if replyAddr == "" {
		opts.DynamicAddress = true
	}
	r := &requester{tag: tag, replies: receiver(t, s, replyAddr, opts), reqs: sender(t, s, "requests", nil)}
	r.addr = r.replies.Address()
	if replyAddr == "" && !strings.HasPrefix(r.addr, tempPrefix) {
		t.Fatalf("dynamic address %q", r.addr)
	}
	return r
}

// request sends n requests, all outstanding at once.
func (r *requester) request(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		m := dataMsg(fmt.Sprintf("%s-%d", r.tag, i))
		m.Properties = &goamqp.MessageProperties{MessageID: fmt.Sprintf("%s-%d", r.tag, i), ReplyTo: ptr(r.addr)}
		send(t, r.reqs, m)
	}
}

// collect grants credit one reply at a time, after pause, as a
// single-threaded client that asks for the next reply when it is ready
// for it does (Proton's BlockingReceiver without prefetch), and accepts
// each reply. It checks every reply answers one of its own requests,
// once, and that nothing else arrives.
func (r *requester) collect(t *testing.T, n int, pause time.Duration) error {
	want := map[string]bool{}
	for i := range n {
		want[fmt.Sprintf("%s-%d", r.tag, i)] = true
	}
	for range n {
		time.Sleep(pause)
		if err := r.replies.IssueCredit(1); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, err := r.replies.Receive(ctx, nil)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: receive: %w (%d replies missing)", r.tag, err, len(want))
		}
		cid, _ := m.Properties.CorrelationID.(string)
		if !want[cid] || string(m.GetData()) != "re:"+cid {
			return fmt.Errorf("%s: reply %q (correlation-id %q) is not an answer to one of its outstanding requests", r.tag, m.GetData(), cid)
		}
		delete(want, cid)
		if err := r.replies.AcceptMessage(ctxT(t), m); err != nil {
			return err
		}
	}
	_ = r.replies.IssueCredit(1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if m, err := r.replies.Receive(ctx, nil); err == nil {
		return fmt.Errorf("%s: unexpected extra reply %q", r.tag, m.GetData())
	}
	return nil
}

// replier is the service on its own connection: it takes requests from
// the queue and answers each on a sender attached to its reply-to
// address, or through the anonymous relay. Replies are sent unsettled
// without waiting for their outcome (many outstanding), or pre-settled.
type replier struct {
	s          *goamqp.Session
	in         *goamqp.Receiver
	relay      *goamqp.Sender
	senders    map[string]*goamqp.Sender
	presettled bool
}

func newReplier(t *testing.T, e *testEnv, relay, presettled bool) *replier {
	t.Helper()
	s := e.session(t, nil)
	r := &replier{s: s, in: receiver(t, s, "requests", &goamqp.ReceiverOptions{Credit: 50}), senders: map[string]*goamqp.Sender{}, presettled: presettled}
	if relay {
		r.relay = sender(t, s, "", nil)
	}
	return r
}

// serve answers n requests; the receipts of unsettled replies are
// returned in order.
func (r *replier) serve(t *testing.T, n int) []goamqp.SendReceipt {
	t.Helper()
	var rcs []goamqp.SendReceipt
	for range n {
		req := recv(t, r.in)
		if err := r.in.AcceptMessage(ctxT(t), req); err != nil {
			t.Fatal(err)
		}
		to := *req.Properties.ReplyTo
		resp := dataMsg("re:" + string(req.GetData()))
		resp.Properties = &goamqp.MessageProperties{CorrelationID: req.Properties.MessageID}
		snd := r.relay
		if snd != nil {
			resp.Properties.To = &to
		} else if snd = r.senders[to]; snd == nil {
			snd = sender(t, r.s, to, nil)
			r.senders[to] = snd
		}
		if r.presettled {
			if err := snd.Send(ctxT(t), resp, &goamqp.SendOptions{Settled: true}); err != nil {
				t.Fatalf("pre-settled reply: %v", err)
			}
			continue
		}
		rc, err := snd.SendWithReceipt(ctxT(t), resp, nil)
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		rcs = append(rcs, rc)
	}
	return rcs
}

// Issue 10 item 4: replies to a dynamic (temporary, anycast) reply
// address, sent by a service on another connection, settle with the
// requester's own outcome (accepted) however long the requester takes to
// grant credit for them, credit keeps flowing to the service, 20
// requests may be outstanding, and each requester sees only its own
// replies. Also through the anonymous relay, with pre-settled replies and
// with named reply addresses (a queue, an anycast address).
//
// Before the fix, a reply that found the requester without credit was
// tried for ~250 ms and then released: a requester granting credit one
// reply at a time lost every reply it was not ready for in time.
func TestRequestResponse(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "requests", Type: address.Queue})
	e.addrDef(t, "default", &address.Address{Name: "replies/queue", Type: address.Queue})
	e.addrDef(t, "default", &address.Address{Name: "replies/anycast", Type: address.Anycast})
	const n = 20
	cases := []struct {
		name       string
		relay      bool
		presettled bool
		replyTo    []string // one requester each; "" dynamic
	}{
		{"dynamic/link", false, false, []string{""}},
		{"dynamic/relay", true, false, []string{""}},
		{"dynamic/link/presettled", false, true, []string{""}},
		{"dynamic/relay/presettled", true, true, []string{""}},
		{"two-requesters/link", false, false, []string{"", ""}},
		{"two-requesters/relay", true, false, []string{"", ""}},
		{"named-queue/link", false, false, []string{"replies/queue"}},
		{"named-anycast/link", false, false, []string{"replies/anycast"}},
		{"named-anycast/relay", true, false, []string{"replies/anycast"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rs []*requester
			for i, a := range tc.replyTo {
				r := newRequester(t, e, fmt.Sprintf("%s-c%d", tc.name, i), a)
				r.request(t, n)
				rs = append(rs, r)
			}
			svc := newReplier(t, e, tc.relay, tc.presettled)
			for round := range 2 { // the second round: credit still flows
				errs := make(chan error, len(rs))
				var wg sync.WaitGroup
				for i, r := range rs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						// The first requester is slow to ask for its
						// first reply (longer than the old retries).
						pause := time.Duration(0)
						if i == 0 && round == 0 {
							pause = 400 * time.Millisecond
						}
						errs <- r.collectFirst(t, n, pause)
					}()
				}
				rcs := svc.serve(t, n*len(rs))
				for i, rc := range rcs {
					ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
					st, err := rc.Wait(ctx)
					cancel()
					if err != nil {
						t.Errorf("round %d reply %d: %v", round, i, err)
					} else if _, ok := st.(*goamqp.StateAccepted); !ok {
						t.Errorf("round %d reply %d settled %T %+v, want accepted", round, i, st, st)
					}
				}
				wg.Wait() // the requesters time out on replies that went astray
				close(errs)
				for err := range errs {
					if err != nil {
						t.Errorf("round %d: %v", round, err)
					}
				}
				if t.Failed() {
					return
				}
				if round == 0 {
					for _, r := range rs {
						r.request(t, n)
					}
				}
			}
		})
	}
}

// collectFirst waits pause before granting the first credit only.
func (r *requester) collectFirst(t *testing.T, n int, pause time.Duration) error {
	time.Sleep(pause)
	return r.collect(t, n, 0)
}

// The outcome of a reply is the requester's: the service's delivery stays
// unsettled until the requester settles, and carries its outcome.
func TestRequestResponseEndToEndOutcome(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "requests", Type: address.Queue})
	r := newRequester(t, e, "c", "")
	r.request(t, 2)
	svc := newReplier(t, e, false, false)
	rcs := svc.serve(t, 2)
	if err := r.replies.IssueCredit(2); err != nil {
		t.Fatal(err)
	}
	first, second := recv(t, r.replies), recv(t, r.replies)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	st, err := rcs[0].Wait(ctx)
	cancel()
	if err == nil {
		t.Fatalf("reply settled %T before the requester settled it", st)
	}
	if err := r.replies.RejectMessage(ctxT(t), first, &goamqp.Error{Condition: "app:bad-reply", Description: "no"}); err != nil {
		t.Fatal(err)
	}
	if err := r.replies.AcceptMessage(ctxT(t), second); err != nil {
		t.Fatal(err)
	}
	st0, err := rcs[0].Wait(ctxT(t))
	if rej, ok := st0.(*goamqp.StateRejected); err != nil || !ok || rej.Error == nil || rej.Error.Condition != "app:bad-reply" {
		t.Fatalf("first reply: %T %+v %v, want rejected app:bad-reply", st0, st0, err)
	}
	if st1, err := rcs[1].Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	} else if _, ok := st1.(*goamqp.StateAccepted); !ok {
		t.Fatalf("second reply: %T, want accepted", st1)
	}
}

// A reply the requester never grants credit for waits for the anycast
// timeout and is then released (not held for ever, not lost silently);
// a reply to a requester that detached is released at once, and the
// service's sender gets no more credit for that address.
func TestRequestResponseRequesterGone(t *testing.T) {
	e := startEnv(t, nil) // AnycastTimeout 5 s
	e.addrDef(t, "default", &address.Address{Name: "requests", Type: address.Queue})
	r := newRequester(t, e, "c", "")
	r.request(t, 2)
	svc := newReplier(t, e, true, false)
	rcs := svc.serve(t, 1)
	start := time.Now()
	st, err := rcs[0].Wait(ctxT(t))
	if _, ok := st.(*goamqp.StateReleased); err != nil || !ok {
		t.Fatalf("reply without credit: %T %v, want released", st, err)
	}
	if d := time.Since(start); d < 4*time.Second {
		t.Fatalf("released after %v, before the anycast timeout", d)
	}
	if err := r.replies.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	rcs = svc.serve(t, 1)
	st, err = rcs[0].Wait(ctxT(t))
	if _, ok := st.(*goamqp.StateReleased); err != nil || !ok {
		t.Fatalf("reply to a detached requester: %T %v, want released", st, err)
	}
}

// outcomeOf hands modified with undeliverable-here to the router as such
// (issue 10 item 5, the AMQP side).
func TestOutcomeOfModified(t *testing.T) {
	for _, st := range []*encoding.Modified{
		{UndeliverableHere: true},
		{DeliveryFailed: true, UndeliverableHere: true},
		{DeliveryFailed: true},
	} {
		o, terminal := outcomeOf(st, true)
		want := router.Outcome{Kind: router.Modified, DeliveryFailed: st.DeliveryFailed, UndeliverableHere: st.UndeliverableHere}
		if !terminal || o != want {
			t.Fatalf("outcomeOf(%+v) = %+v, %v; want %+v", st, o, terminal, want)
		}
	}
}

// Issue 10 item 5: a message its receiver settles modified with
// undeliverable-here is never delivered to that link again; another
// receiver of the queue gets it, including one that attaches later.
func TestModifiedUndeliverableHere(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprintf("other-attaches-later=%v", late), func(t *testing.T) {
			e := startEnv(t, nil)
			e.addrDef(t, "default", &address.Address{Name: "jobs", Type: address.Queue})
			send(t, sender(t, e.session(t, nil), "jobs", nil), dataMsg("job"))
			a := receiver(t, e.session(t, nil), "jobs", &goamqp.ReceiverOptions{Credit: 5})
			var b *goamqp.Receiver
			if !late {
				b = receiver(t, e.session(t, nil), "jobs", &goamqp.ReceiverOptions{Credit: 5})
			}
			var m *goamqp.Message
			if late {
				m = recv(t, a)
			} else {
				// Either may get it first; make A the one that refuses it.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for m == nil && ctx.Err() == nil {
					short, c2 := context.WithTimeout(ctx, 50*time.Millisecond)
					if got, err := a.Receive(short, nil); err == nil {
						m = got
					} else if got, err := b.Receive(short, nil); err == nil {
						if err := b.ReleaseMessage(ctxT(t), got); err != nil {
							t.Fatal(err)
						}
					}
					c2()
				}
				if m == nil {
					t.Fatal("A never got the message")
				}
			}
			if err := a.ModifyMessage(ctxT(t), m, &goamqp.ModifyMessageOptions{DeliveryFailed: true, UndeliverableHere: true}); err != nil {
				t.Fatal(err)
			}
			if late {
				noMessage(t, a, 500*time.Millisecond)
				b = receiver(t, e.session(t, nil), "jobs", &goamqp.ReceiverOptions{Credit: 5})
			}
			got := recv(t, b)
			if string(got.GetData()) != "job" {
				t.Fatalf("B got %q", got.GetData())
			}
			noMessage(t, a, 300*time.Millisecond)
			if err := b.AcceptMessage(ctxT(t), got); err != nil {
				t.Fatal(err)
			}
			noMessage(t, a, 200*time.Millisecond)
		})
	}
}
