#!/usr/bin/python3
"""One AMQP 1.0 client connection played by Debian's Qpid Proton.

Usage: amqp_agent.py URL

The Go tests of internal/conformance start one agent per role (sender,
receiver, service, requester), so every role has its own connection and
its own process. The agent reads commands from stdin, one JSON object a
line, runs each to completion and answers with one JSON object a line on
stdout: {"ok": true, ...results} or {"ok": false, "error": "..."}.

Credit is exact: receivers are created without Proton's prefetch window
(no FlowController), so a receiver has exactly the credit the test gives
it ("credit" at attach, "flow", "drain"), as a user of pn_link_flow would.
Proton only does I/O while a command runs (BlockingConnection pumps in
wait()); between commands the agent is idle and the server's frames wait
in the socket.
"""
import hashlib
import json
import random
import sys
import time
import traceback
import uuid

from proton import Delivery, Endpoint, Message, Timeout
from proton.reactor import AtMostOnce, AtLeastOnce
from proton.utils import BlockingConnection

URL = sys.argv[1]

conn = None
links = {}  # name -> Link record


class Rcv:
    def __init__(self, blocking, fetcher):
        self.b = blocking
        self.link = blocking.link
        self.fetcher = fetcher
        self.unsettled = []  # deliveries received and not settled, in order


def link_name(cmd):
    """Proton names links <container>-<address>: a second link to the same
    address on a connection would reuse a name still attached."""
    return cmd.get("name") or "%s-%s" % (cmd["link"], uuid.uuid4())


def now():
    return time.time()


def wait(cond, timeout):
    """Pumps the connection until cond() or timeout; returns cond()."""
    if cond():
        return True
    try:
        conn.wait(cond, timeout=max(timeout, 0.001))
    except Timeout:
        pass
    return cond()


def flush():
    """Pumps the connection briefly so that settlements and flows made
    outside wait() are written before the agent goes idle."""
    wait(lambda: False, 0.02)


def body_of(m):
    b = m.body
    if isinstance(b, (bytes, bytearray, memoryview)):
        b = bytes(b)
        if len(b) > 256:
            return {"len": len(b), "sha256": hashlib.sha256(b).hexdigest()}
        return b.decode("utf-8", "replace")
    return b


def describe(m, d):
    return {
        "body": body_of(m),
        "id": m.id,
        "correlation_id": m.correlation_id,
        "reply_to": m.reply_to,
        "address": m.address,
        "properties": m.properties or {},
        "delivery_count": m.delivery_count,
        "settled": bool(d.settled),
    }


def state_name(s):
    return {
        Delivery.ACCEPTED: "accepted",
        Delivery.REJECTED: "rejected",
        Delivery.RELEASED: "released",
        Delivery.MODIFIED: "modified",
        Delivery.RECEIVED: "received",
    }.get(s, str(s) if s else "none")


def outcome_of(d):
    """The outcome's name; a rejection carries its error condition."""
    name = state_name(d.remote_state)
    c = d.remote.condition if d.remote_state == Delivery.REJECTED else None
    if c is not None:
        name += " (%s: %s)" % (c.name, c.description)
    return name


def settle(d, outcome):
    if outcome == "accept":
        d.update(Delivery.ACCEPTED)
    elif outcome == "reject":
        d.update(Delivery.REJECTED)
    elif outcome == "release":
        d.update(Delivery.RELEASED)
    elif outcome == "modified":  # delivery-failed
        d.local.failed = True
        d.update(Delivery.MODIFIED)
    elif outcome == "undeliverable":  # modified, undeliverable-here
        d.local.failed = True
        d.local.undeliverable = True
        d.update(Delivery.MODIFIED)
    elif outcome == "none":
        return False
    else:
        raise ValueError("unknown outcome %r" % outcome)
    d.settle()
    return True


def make_message(spec):
    body = spec.get("body")
    props = dict(spec.get("properties") or {})
    if "random_bytes" in spec:  # a large body, reproducible, with its checksum
        body = random.Random(spec.get("seed", 1)).randbytes(spec["random_bytes"])
        props["sha256"] = hashlib.sha256(body).hexdigest()
    # Proton sends a bytes body as an amqp-value section (binary) unless
    # inferred, which makes it a data section.
    return Message(body=body, id=spec.get("id"), correlation_id=spec.get("correlation_id"),
                   reply_to=spec.get("reply_to"), address=spec.get("to"), properties=props or None,
                   durable=spec.get("durable", True), inferred=spec.get("data_section", False))


def messages(cmd):
    if "messages" in cmd:
        return cmd["messages"]
    n = cmd.get("count", 1)
    prefix = cmd.get("prefix", "m")
    return [{"body": "%s%d" % (prefix, i), "properties": {"i": i}} for i in range(n)]


# ---------------------------------------------------------------- commands

def op_connect(cmd):
    global conn
    conn = BlockingConnection(URL, timeout=cmd.get("timeout", 10), allowed_mechs="ANONYMOUS",
                              container_id=cmd.get("container_id"))
    return {}


def op_receiver(cmd):
    """Attach a receiver; credit is flowed right after the attach."""
    opts = []
    if cmd.get("presettled"):
        opts.append(AtMostOnce())
    # credit=0: BlockingConnection builds a Fetcher with prefetch 0, so no
    # FlowController tops the credit up behind the test's back.
    b = conn.create_receiver(cmd.get("address"), credit=0, dynamic=cmd.get("dynamic", False),
                             name=link_name(cmd), options=opts or None)
    r = Rcv(b, b.fetcher)
    links[cmd["link"]] = r
    if cmd.get("drain"):
        r.link.drain(cmd["credit"])
    elif cmd.get("credit"):
        r.link.flow(cmd["credit"])
        # Proton writes the flow on the next pump of the connection:
        # without this, a receiver attached last would grant its credit
        # only when the test next waits on it (after other links took
        # every message).
        flush()
    src = r.link.remote_source
    return {"address": src.address if src else None,
            "max_message_size": r.link.remote_max_message_size}


def op_sender(cmd):
    opts = [AtMostOnce()] if cmd.get("presettled") else [AtLeastOnce()]
    b = conn.create_sender(cmd.get("address"), name=link_name(cmd), options=opts)
    links[cmd["link"]] = b
    b.pending = []
    return {"max_message_size": b.link.remote_max_message_size,
            "address": b.link.remote_target.address if b.link.remote_target else None}


def op_send(cmd):
    """Send messages. wait=true (default): each waits for its outcome
    (unsettled) or is settled at once (presettled). wait=false: sent
    without waiting; op_settled collects the outcomes later."""
    s = links[cmd["link"]]
    outcomes = []
    deadline = now() + cmd.get("timeout", 10)
    for spec in messages(cmd):
        d = s.link.send(make_message(spec))
        if s.link.snd_settle_mode == 1:  # settled: nothing comes back
            d.settle()
            outcomes.append("presettled")
            continue
        if not cmd.get("wait", True):
            s.pending.append(d)
            continue
        if not wait(lambda: d.remote_state or d.settled, deadline - now()):
            outcomes.append("timeout")
            continue
        outcomes.append(outcome_of(d))
        d.settle()
    if not cmd.get("wait", True):
        flush()  # let the transfers go out
    return {"outcomes": outcomes, "credit": s.link.credit}


def op_settled(cmd):
    """Waits for the outcomes of the messages sent with wait=false."""
    s = links[cmd["link"]]
    deadline = now() + cmd.get("timeout", 10)
    wait(lambda: all(d.remote_state or d.settled for d in s.pending), deadline - now())
    out = []
    for d in s.pending:
        out.append(outcome_of(d) if (d.remote_state or d.settled) else "timeout")
        if d.remote_state:
            d.settle()
    s.pending = []
    return {"outcomes": out, "credit": s.link.credit}


def take(r, cmd, deadline):
    """Takes the messages that arrived, settling each as cmd says."""
    got = []
    while r.fetcher.has_message:
        m, d = r.fetcher.incoming.popleft()
        got.append(describe(m, d))
        if not d.settled and not settle(d, cmd.get("settle", "accept")):
            r.unsettled.append(d)
        if cmd.get("topup"):  # keep the credit window: one more per message
            r.link.flow(1)
    return got


def op_receive(cmd):
    """Receives until count messages (or the timeout); 'quiet' waits the
    whole timeout and reports everything that came."""
    r = links[cmd["link"]]
    count = cmd.get("count", 1)
    deadline = now() + cmd.get("timeout", 10)
    got = []
    while True:
        got += take(r, cmd, deadline)
        if len(got) >= count and not cmd.get("quiet"):
            break
        left = deadline - now()
        if left <= 0:
            break
        wait(lambda: r.fetcher.has_message, left)
    flush()
    return {"messages": got, "credit": r.link.credit}


def op_receive_many(cmd):
    """Receives on several links of this connection until count messages
    in all (or the timeout); reports how many each link got."""
    rs = {name: links[name] for name in cmd["links"]}
    deadline = now() + cmd.get("timeout", 10)
    per = {name: [] for name in rs}
    total = lambda: sum(len(v) for v in per.values())
    while total() < cmd["count"]:
        for name, r in rs.items():
            per[name] += take(r, cmd, deadline)
        left = deadline - now()
        if total() >= cmd["count"] or left <= 0:
            break
        wait(lambda: any(r.fetcher.has_message for r in rs.values()), left)
    flush()
    return {"per_link": {n: [m["body"] for m in v] for n, v in per.items()}}


def op_flow(cmd):
    r = links[cmd["link"]]
    r.link.flow(cmd["credit"])
    flush()
    return {"credit": r.link.credit}


def op_drain(cmd):
    """flow(credit, drain=true), then wait for the drain to complete:
    returns the messages that came first and whether it completed."""
    r = links[cmd["link"]]
    deadline = now() + cmd.get("timeout", 10)
    if cmd.get("credit") is not None:
        r.link.drain(cmd["credit"])
    return drained(r, cmd, deadline)


def drained(r, cmd, deadline):
    got = []
    while True:
        got += take(r, cmd, deadline)
        if not r.link.draining() and not r.fetcher.has_message:
            # The drain's flow is applied to the link when its frame is
            # read, but the messages read with it are handed to the
            # fetcher by events still queued: dispatch them before
            # concluding (the server sent them before the flow).
            flush()
            got += take(r, cmd, deadline)
            break
        left = deadline - now()
        if left <= 0:
            break
        wait(lambda: r.fetcher.has_message or not r.link.draining(), left)
    flush()
    done = not r.link.draining()
    return {"messages": got, "drained": done, "credit": r.link.credit}


def op_wait_drain(cmd):
    """For a receiver attached with drain=true."""
    r = links[cmd["link"]]
    return drained(r, cmd, now() + cmd.get("timeout", 10))


def op_settle(cmd):
    """Settles the unsettled deliveries taken earlier (first n, or all)."""
    r = links[cmd["link"]]
    n = cmd.get("n", len(r.unsettled))
    for d in r.unsettled[:n]:
        settle(d, cmd["outcome"])
    r.unsettled = r.unsettled[n:]
    flush()
    return {"unsettled": len(r.unsettled)}


def op_detach(cmd):
    l = links.pop(cmd["link"])
    if cmd.get("detach_only"):
        l.link.detach()
        wait(lambda: not (l.link.state & Endpoint.REMOTE_ACTIVE), cmd.get("timeout", 5))
    else:
        (l.b if isinstance(l, Rcv) else l).close()
    return {}


def op_serve(cmd):
    """A request/response service: receives count requests on address and
    answers each on a sender attached to its reply-to address (one per
    address, unsettled unless presettled), accepting the request. Returns
    when every reply is settled (or at the timeout) with the outcomes."""
    window = cmd.get("credit", 10)
    b = conn.create_receiver(cmd["address"], credit=0, name="service")
    r = Rcv(b, b.fetcher)
    r.link.flow(window)
    senders = {}
    pending = []
    served = 0
    deadline = now() + cmd.get("timeout", 20)
    while served < cmd["count"] and now() < deadline:
        wait(lambda: r.fetcher.has_message, deadline - now())
        while r.fetcher.has_message:
            m, d = r.fetcher.incoming.popleft()
            s = senders.get(m.reply_to)
            if s is None:
                opts = [AtMostOnce()] if cmd.get("presettled") else [AtLeastOnce()]
                s = conn.create_sender(m.reply_to, options=opts)
                senders[m.reply_to] = s
            rd = s.link.send(Message(body="reply:%s" % m.body, correlation_id=m.correlation_id,
                                     address=m.reply_to))
            if cmd.get("presettled"):
                rd.settle()
            else:
                pending.append(rd)
            settle(d, "accept")
            r.link.flow(1)
            served += 1
    wait(lambda: all(d.remote_state or d.settled for d in pending), deadline - now())
    outcomes = {}
    for d in pending:
        k = state_name(d.remote_state) if (d.remote_state or d.settled) else "timeout"
        outcomes[k] = outcomes.get(k, 0) + 1
        if d.remote_state:
            d.settle()
    return {"served": served, "outcomes": outcomes,
            "reply_credit": {a: s.link.credit for a, s in senders.items()}}


def op_request(cmd):
    """A requester: a reply receiver (dynamic, or the named reply_to
    address) with a small credit window kept topped up, count requests
    sent to address (all outstanding before the first reply is read),
    then the replies, each accepted. Returns the correlation ids seen."""
    b = conn.create_receiver(cmd.get("reply_to"), credit=0, dynamic=cmd.get("reply_to") is None,
                             name="replies")
    r = Rcv(b, b.fetcher)
    reply_to = r.link.remote_source.address
    r.link.flow(cmd.get("credit", 5))
    s = conn.create_sender(cmd["address"], name="requests")
    tag = cmd["tag"]
    deadline = now() + cmd.get("timeout", 20)
    for i in range(cmd["count"]):
        d = s.link.send(Message(body="%s-%d" % (tag, i), correlation_id="%s-%d" % (tag, i), reply_to=reply_to))
        if not wait(lambda: d.remote_state or d.settled, deadline - now()) or d.remote_state != Delivery.ACCEPTED:
            raise AssertionError("request %d: %s" % (i, state_name(d.remote_state)))
        d.settle()
    seen = []
    while len(seen) < cmd["count"] and now() < deadline:
        wait(lambda: r.fetcher.has_message, deadline - now())
        while r.fetcher.has_message:
            m, d = r.fetcher.incoming.popleft()
            seen.append(m.correlation_id)
            if cmd.get("delay"):  # a slow client: the next replies wait
                time.sleep(cmd["delay"])
            if not d.settled:
                settle(d, "accept")
            r.link.flow(1)
    # Extra replies (someone else's) would show here.
    wait(lambda: r.fetcher.has_message, cmd.get("linger", 0.3))
    while r.fetcher.has_message:
        m, d = r.fetcher.incoming.popleft()
        seen.append(m.correlation_id)
        settle(d, "accept")
    flush()  # let the dispositions go out
    return {"reply_to": reply_to, "correlation_ids": seen}


def op_close(cmd):
    conn.close()
    return {}


OPS = {k[3:]: v for k, v in globals().items() if k.startswith("op_")}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        try:
            res = OPS[cmd["op"]](cmd)
            res["ok"] = True
        except Exception as e:  # reported to the Go test, which fails
            res = {"ok": False, "error": "%s: %s" % (type(e).__name__, e), "trace": traceback.format_exc()}
        sys.stdout.write(json.dumps(res, default=str) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
