#!/usr/bin/python3
"""A Hono northbound application with Qpid Proton, for internal/testkit/hono_test.go.

Usage:
  hono_app.py URL receive ADDRESS N TIMEOUT
      attach a receiver on ADDRESS (telemetry/T, event/T), print "READY",
      then each of N messages as one JSON line ("MSG {...}"), accept them
  hono_app.py URL command TENANT DEVICE NAME BODY REPLY_ID|-
      send a command (sender on command/T, to = command/T/DEVICE,
      subject = NAME); with a REPLY_ID, a request/response command
      (reply-to = command_response/T/REPLY_ID, correlation-id "corr-py")
      whose response is printed as "RESPONSE {...}"; prints "OUTCOME <state>"
Prints "OK <mode>" and exits 0 on success; any failure raises.
"""
import json
import sys

from proton import Delivery, Message
from proton.utils import BlockingConnection

URL = sys.argv[1]
MODE = sys.argv[2]


def describe(m):
    body = m.body
    if isinstance(body, (bytes, memoryview)):
        body = bytes(body).decode("utf-8", "replace")
    props = {}
    for k, v in (m.properties or {}).items():
        props[str(k)] = v if isinstance(v, (str, int, bool, float)) or v is None else str(v)
    return json.dumps({
        "body": body,
        "content_type": str(m.content_type) if m.content_type else None,
        "correlation_id": str(m.correlation_id) if m.correlation_id is not None else None,
        "creation_time": m.creation_time,
        "ttl": m.ttl,
        "props": props,
    }, sort_keys=True)


def receive():
    address, n, timeout = sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    c = BlockingConnection(URL, timeout=30, allowed_mechs="PLAIN")
    r = c.create_receiver(address, credit=n)
    print("READY", flush=True)
    for _ in range(n):
        m = r.receive(timeout=timeout)
        print("MSG " + describe(m), flush=True)
        r.accept()
    c.close()
    print("OK receive", flush=True)


def command():
    tenant, device, name, body, reply = sys.argv[3:8]
    c = BlockingConnection(URL, timeout=30, allowed_mechs="PLAIN")
    rcv = None
    m = Message(body=body.encode(), subject=name, address="command/%s/%s" % (tenant, device),
                content_type="text/plain")
    if reply != "-":
        reply_to = "command_response/%s/%s" % (tenant, reply)
        rcv = c.create_receiver(reply_to, credit=1)
        m.reply_to = reply_to
        m.correlation_id = "corr-py"
    snd = c.create_sender("command/%s" % tenant)
    try:
        snd.send(m, timeout=30)
        print("OUTCOME accepted", flush=True)
    except Exception as e:  # SendException carries the remote state
        st = getattr(e, "state", None)
        print("OUTCOME %s" % {Delivery.RELEASED: "released", Delivery.REJECTED: "rejected"}.get(st, str(e)), flush=True)
        c.close()
        print("OK command", flush=True)
        return
    if rcv is not None:
        resp = rcv.receive(timeout=30)
        print("RESPONSE " + describe(resp), flush=True)
        rcv.accept()
    c.close()
    print("OK command", flush=True)


{"receive": receive, "command": command}[MODE]()
