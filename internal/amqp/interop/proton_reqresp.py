#!/usr/bin/python3
"""Request/response over throng's AMQP server with Qpid Proton, one role per process.

Usage:
  proton_reqresp.py service URL REQUESTS N MODE SETTLE
      Serves N requests from the queue REQUESTS. MODE "link" replies on a
      sender attached to each request's reply-to address, "relay" on one
      anonymous-relay sender (null target, message to = reply-to). SETTLE
      "unsettled" sends replies unsettled and requires each to come back
      accepted, with credit left on the link afterwards (the next reply
      must not block); "presettled" sends them pre-settled.
  proton_reqresp.py client URL REQUESTS N REPLY TAG DELAY CREDIT
      Attaches a receiver for the replies (REPLY "dynamic": dynamic=True,
      the server names a $temp/ address; otherwise the named address), sends
      N requests with reply-to set (all outstanding at once), waits for a
      line on stdin (the test's signal that the service runs) and DELAY
      seconds more (busy elsewhere), then receives and accepts N replies and
      checks each answers one of its own requests, exactly once, and that
      nothing else arrives. CREDIT "none" is BlockingConnection's default
      (no prefetch: each receive() grants one credit), "prefetch" grants N
      up front.

Prints "READY" once attached and "OK <role> ..." on success; any failure
raises. Driven by internal/amqp/interop_reqresp_test.go.
"""
import sys
import time

from proton import Delivery, Message, Timeout
from proton.reactor import AtMostOnce
from proton.utils import BlockingConnection

TIMEOUT = 10


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def say(*args):
    print(*args, flush=True)


def service(url, requests, n, mode, settle):
    n = int(n)
    opts = AtMostOnce() if settle == "presettled" else None
    c = BlockingConnection(url, timeout=TIMEOUT, allowed_mechs="ANONYMOUS")
    reqs = c.create_receiver(requests, credit=n)
    relay = c.create_sender(None, options=opts) if mode == "relay" else None
    senders = {}
    say("READY")
    started = time.time()
    for i in range(n):
        req = reqs.receive(timeout=TIMEOUT)
        reqs.accept()
        expect(req.reply_to, "request %d without reply-to" % i)
        resp = Message(body="re:" + req.body, correlation_id=req.correlation_id)
        if relay is not None:
            snd = relay
            resp.address = req.reply_to
        else:
            snd = senders.get(req.reply_to)
            if snd is None:
                snd = senders[req.reply_to] = c.create_sender(req.reply_to, options=opts)
        t0 = time.time()
        # BlockingSender.send waits until the server settles the reply
        # (unsettled) and raises on released or rejected.
        dlv = snd.send(resp, timeout=TIMEOUT)
        took = time.time() - t0
        if settle == "unsettled":
            expect(dlv.remote_state == Delivery.ACCEPTED,
                   "reply %d settled %s, not accepted" % (i, dlv.remote_state))
            # An end-to-end outcome is the requester's accept: fast, not
            # a timeout's release.
            expect(took < 2, "reply %d took %.2fs to settle" % (i, took))
            expect(snd.link.credit > 0, "no credit left after reply %d" % i)
    # A pre-settled send returns at once, before the server granted credit
    # for it: wait until every reply went out before closing.
    links = [relay] if relay is not None else list(senders.values())
    c.wait(lambda: all(s.link.queued == 0 for s in links), timeout=TIMEOUT, msg="replies still queued")
    say("OK service n=%d mode=%s settle=%s %.3fs" % (n, mode, settle, time.time() - started))
    c.close()


def client(url, requests, n, reply, tag, delay, credit):
    n = int(n)
    credit = n if credit == "prefetch" else None
    c = BlockingConnection(url, timeout=TIMEOUT, allowed_mechs="ANONYMOUS")
    if reply == "dynamic":
        replies = c.create_receiver(None, dynamic=True, credit=credit)
        addr = replies.remote_source.address
        expect(addr and addr.startswith("$temp/"), "dynamic address %r" % addr)
    else:
        replies = c.create_receiver(reply, credit=credit)
        addr = reply
    say("READY", addr)
    snd = c.create_sender(requests)
    want = set()
    for i in range(n):
        cid = "%s-%d" % (tag, i)
        want.add(cid)
        snd.send(Message(body=cid, reply_to=addr, correlation_id=cid), timeout=TIMEOUT)
    sys.stdin.readline()
    time.sleep(float(delay))
    for i in range(n):
        m = replies.receive(timeout=TIMEOUT)
        expect(m.correlation_id in want, "reply %d: %r not one of ours (tag %s)" % (i, m.correlation_id, tag))
        expect(m.body == "re:" + m.correlation_id, "reply body %r" % m.body)
        want.discard(m.correlation_id)
        replies.accept()
    try:
        m = replies.receive(timeout=0.5)
        raise AssertionError("unexpected reply %r" % m.correlation_id)
    except Timeout:
        pass
    say("OK client tag=%s n=%d" % (tag, n))
    c.close()


if __name__ == "__main__":
    {"service": service, "client": client}[sys.argv[1]](*sys.argv[2:])
