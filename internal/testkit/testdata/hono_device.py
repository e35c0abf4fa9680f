#!/usr/bin/python3
"""A Hono AMQP device with Qpid Proton, for internal/testkit/hono_amqp_test.go.

Usage: hono_device.py URL    (amqp://auth-id%40tenant:secret@host:port, or
amqp://host:port for an unauthenticated device)

Connects (SASL PLAIN, or ANONYMOUS without credentials), prints "READY <container-id>", then reads one JSON request per line
from stdin and answers each with one line on stdout:

  {"op": "send", "to": "telemetry", "body": "...", "settled": false,
   "link": "", "content_type": "...", "correlation_id": "...",
   "status": 200, "ttl": 60, "value": false}
      send on a sender link with target "link" ("" or absent: the
      anonymous terminus, one link per settlement mode); "value" sends the
      body as an amqp-value string, else as a data section.
      -> "OUTCOME accepted" | "OUTCOME released" | "OUTCOME rejected <condition>"
         | "OUTCOME settled" (pre-settled) | "REFUSED <error>"
  {"op": "receiver", "source": "command", "credit": 10}
      -> "ATTACHED" | "REFUSED <error>"
  {"op": "recv", "source": "command", "timeout": 30}
      -> "CMD {json}" (to, subject, correlation_id, reply_to, content_type,
         body, props) | "NONE"
  {"op": "settle", "source": "command", "outcome": "accept"|"reject"|"release"|"modify"}
      -> "SETTLED"
  {"op": "close", "source": "command"}
      -> "CLOSED"
  {"op": "quit"}
      closes the connection -> "BYE"
Any failure raises (the process exits non-zero).
"""
import json
import sys

from proton import ConnectionException, Delivery, Message, Timeout, int32
from proton.reactor import AtMostOnce
from proton.utils import BlockingConnection, LinkDetached

URL = sys.argv[1]
# No credentials in the URL: Hono's unauthenticated device (SASL ANONYMOUS).
conn = BlockingConnection(URL, timeout=30, allowed_mechs="PLAIN" if "@" in URL else "ANONYMOUS")
senders = {}
receivers = {}


def out(*a):
    print(*a, flush=True)


def flush():
    # A pre-settled transfer or a disposition is only queued by Proton;
    # the blocking API writes it at its next wait, and this process waits
    # on stdin instead. So wait until the transport has written it.
    t = conn.conn.transport
    conn.wait(lambda: t.pending() <= 0, timeout=30, msg="flushing")


def sender(target, settled):
    key = (target, settled)
    if key not in senders:
        opts = AtMostOnce() if settled else None
        senders[key] = conn.create_sender(target or None, options=opts)
    return senders[key]


def send(req):
    settled = bool(req.get("settled"))
    try:
        snd = sender(req.get("link") or "", settled)
    except (LinkDetached, ConnectionException) as e:
        return "REFUSED %s" % e
    body = req.get("body")
    if body is None:
        m = Message()
    elif req.get("value"):
        m = Message(body=body)
    else:
        m = Message(body=body.encode())
        m.inferred = True  # a data section
    if req.get("to"):
        m.address = req["to"]
    if req.get("content_type"):
        m.content_type = req["content_type"]
    if req.get("correlation_id"):
        m.correlation_id = req["correlation_id"]
    if req.get("ttl"):
        m.ttl = float(req["ttl"])
    if req.get("status") is not None:
        m.properties = {"status": int32(req["status"])}
    d = snd.send(m, error_states=[])
    if settled:
        flush()
        return "OUTCOME settled"
    st = d.remote_state
    if st == Delivery.ACCEPTED:
        return "OUTCOME accepted"
    if st == Delivery.RELEASED:
        return "OUTCOME released"
    if st == Delivery.REJECTED:
        cond = d.remote.condition
        return "OUTCOME rejected %s" % (cond.name if cond else "-")
    return "OUTCOME %s" % st


def receiver(req):
    try:
        receivers[req["source"]] = conn.create_receiver(req["source"], credit=req.get("credit", 10))
    except (LinkDetached, ConnectionException) as e:
        return "REFUSED %s" % e
    return "ATTACHED"


def text(v):
    if v is None:
        return None
    if isinstance(v, (bytes, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def recv(req):
    try:
        m = receivers[req["source"]].receive(timeout=req.get("timeout", 30))
    except Timeout:
        return "NONE"
    props = {str(k): (v if isinstance(v, (str, int, bool, float)) or v is None else str(v))
             for k, v in (m.properties or {}).items()}
    return "CMD " + json.dumps({
        "to": m.address, "subject": m.subject, "correlation_id": text(m.correlation_id),
        "reply_to": m.reply_to, "content_type": text(m.content_type), "body": text(m.body),
        "props": props,
    }, sort_keys=True)


def settle(req):
    r = receivers[req["source"]]
    {"accept": r.accept, "reject": r.reject, "release": lambda: r.release(delivered=False),
     "modify": r.release}[req["outcome"]]()
    flush()
    return "SETTLED"


def close(req):
    receivers.pop(req["source"]).close()
    return "CLOSED"


out("READY", conn.container.container_id)
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    req = json.loads(line)
    if req["op"] == "quit":
        break
    out({"send": send, "receiver": receiver, "recv": recv, "settle": settle, "close": close}[req["op"]](req))
conn.close()
out("BYE")
