#!/usr/bin/python3
"""Interop scenarios against throng's AMQP server with Qpid Proton.

Usage: proton_client.py URL SCENARIO [CA_FILE]
Prints "OK <scenario>" and exits 0 on success; any failure raises.
Driven by internal/amqp/interop_test.go.
"""
import sys
import time

from proton import Message, SSLDomain, Timeout
from proton.reactor import AtMostOnce
from proton.utils import BlockingConnection

URL = sys.argv[1]
SCENARIO = sys.argv[2]
CA = sys.argv[3] if len(sys.argv) > 3 else None
TIMEOUT = 10


def connect(url=URL, **kw):
    kw.setdefault("timeout", TIMEOUT)
    if url.startswith("amqps://"):
        dom = SSLDomain(SSLDomain.MODE_CLIENT)
        dom.set_trusted_ca_db(CA)
        dom.set_peer_authentication(SSLDomain.VERIFY_PEER)
        kw["ssl_domain"] = dom
    return BlockingConnection(url, **kw)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def queue_send_receive():
    c = connect(allowed_mechs="ANONYMOUS")
    s = c.create_sender("interop/q")
    for i in range(5):
        s.send(Message(id=i, body="m%d" % i, properties={"i": i}))
    r = c.create_receiver("interop/q", credit=10)
    for i in range(5):
        m = r.receive(timeout=TIMEOUT)
        expect(m.body == "m%d" % i and m.properties["i"] == i, "message %d: %r" % (i, m))
        r.accept()
    c.close()


def competing_consumers():
    c = connect(allowed_mechs="ANONYMOUS")
    c2 = connect(allowed_mechs="ANONYMOUS")
    r1 = c.create_receiver("interop/work", credit=5)
    r2 = c2.create_receiver("interop/work", credit=5)
    s = c.create_sender("interop/work")
    for i in range(10):
        s.send(Message(body="w%d" % i))
    seen, per = set(), {0: 0, 1: 0}
    deadline = time.time() + TIMEOUT
    while len(seen) < 10 and time.time() < deadline:
        for i, r in enumerate((r1, r2)):
            try:
                m = r.receive(timeout=0.2)
            except Timeout:
                continue
            expect(m.body not in seen, "duplicate %s" % m.body)
            seen.add(m.body)
            per[i] += 1
            r.accept()
    expect(len(seen) == 10, "got %d distinct" % len(seen))
    c.close()
    c2.close()


def request_response():
    c = connect(allowed_mechs="ANONYMOUS")
    service = c.create_receiver("interop/requests", credit=1)
    # Replies to a dynamic (anycast) address settle end to end, when the
    # requester accepts; this single-threaded script sends them pre-settled.
    relay = c.create_sender(None, options=AtMostOnce())
    replies = c.create_receiver(None, dynamic=True, credit=1)
    reply_to = replies.remote_source.address
    expect(reply_to and reply_to.startswith("$temp/"), "dynamic address %r" % reply_to)
    c.create_sender("interop/requests").send(Message(body="ping", reply_to=reply_to, correlation_id="c1"))
    req = service.receive(timeout=TIMEOUT)
    service.accept()
    relay.send(Message(address=req.reply_to, body="pong", correlation_id=req.correlation_id))
    resp = replies.receive(timeout=TIMEOUT)
    expect(resp.body == "pong" and resp.correlation_id == "c1", "reply %r" % resp)
    replies.accept()
    c.close()


def outcomes():
    c = connect(allowed_mechs="ANONYMOUS")
    s = c.create_sender("interop/outcomes")
    s.send(Message(body="o"))
    r = c.create_receiver("interop/outcomes", credit=1)
    m = r.receive(timeout=TIMEOUT)
    r.release(delivered=False)
    m = r.receive(timeout=TIMEOUT)
    expect(m.body == "o", "redelivered %r" % m)
    r.release(delivered=True)  # modified, delivery-failed
    m = r.receive(timeout=TIMEOUT)
    expect(m.delivery_count >= 1, "delivery count %d" % m.delivery_count)
    r.reject()
    # Rejected messages go to the dead-letter address (DLQ).
    d = c.create_receiver("DLQ", credit=1)
    m = d.receive(timeout=TIMEOUT)
    expect(m.body == "o", "dead letter %r" % m)
    d.accept()
    c.close()


def presettled_and_unsettled():
    c = connect(allowed_mechs="ANONYMOUS")
    pre = c.create_sender("interop/settle", name="pre", options=AtMostOnce())
    pre.send(Message(body="pre"))
    uns = c.create_sender("interop/settle", name="uns")
    uns.send(Message(body="uns"))
    r = c.create_receiver("interop/settle", credit=2)
    got = set()
    for _ in range(2):
        got.add(r.receive(timeout=TIMEOUT).body)
        r.accept()
    expect(got == {"pre", "uns"}, "got %r" % got)
    c.close()


def large_message():
    c = connect(allowed_mechs="ANONYMOUS")
    body = bytes(range(256)) * 4096  # 1 MiB
    c.create_sender("interop/big").send(Message(body=body))
    r = c.create_receiver("interop/big", credit=1)
    m = r.receive(timeout=TIMEOUT)
    expect(bytes(m.body) == body, "1 MiB body differs (%d bytes)" % len(m.body))
    r.accept()
    c.close()


def sasl_plain():
    c = connect(URL.replace("amqp://", "amqp://alice%40acme:secret@"), allowed_mechs="PLAIN")
    c.create_sender("interop/acme").send(Message(body="from alice"))
    c.close()
    try:
        connect(URL.replace("amqp://", "amqp://alice%40acme:wrong@"), allowed_mechs="PLAIN")
    except Exception:
        return
    raise AssertionError("wrong password accepted")


def sasl_anonymous():
    c = connect(allowed_mechs="ANONYMOUS")
    c.create_sender("interop/anon").send(Message(body="anon"))
    c.close()


def tls():
    c = connect(URL.replace("amqp://", "amqps://alice%40acme:secret@"), allowed_mechs="PLAIN")
    c.create_sender("interop/tls").send(Message(body="over tls"))
    c.close()


SCENARIOS = {f.__name__: f for f in (queue_send_receive, competing_consumers, request_response, outcomes,
                                      presettled_and_unsettled, large_message, sasl_plain, sasl_anonymous, tls)}

if __name__ == "__main__":
    SCENARIOS[SCENARIO]()
    print("OK", SCENARIO)
