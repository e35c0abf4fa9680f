#!/usr/bin/python3
"""One MQTT client connection played by Debian's paho-mqtt (1.6).

Usage: mqtt_agent.py

Like amqp_agent.py: commands on stdin, one JSON object a line, one JSON
answer a line on stdout ({"ok": true, ...} or {"ok": false, "error"}).
The Go tests of internal/conformance start one agent per client, so each
client is its own connection and process, and can be killed (SIGKILL) to
drop its connection without DISCONNECT.

paho 1.6 does not report the reason code of a PUBACK/PUBREC; the agent
reads it from the packet (_handle_pubackcomp/_handle_pubrec wrappers).
"""
import json
import struct
import sys
import threading
import time
import traceback

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class Client(mqtt.Client):
    """Records the reason code of every PUBACK, PUBREC and PUBCOMP."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.ack_rc = {}

    def _record(self):
        p = self._in_packet['packet']
        mid, = struct.unpack("!H", p[:2])
        self.ack_rc.setdefault(mid, p[2] if len(p) > 2 else 0)

    def _handle_pubackcomp(self, cmd):
        self._record()
        return super()._handle_pubackcomp(cmd)

    def _handle_pubrec(self):
        self._record()
        return super()._handle_pubrec()


lock = threading.Condition()
state = {"client": None, "connack": None, "suback": {}, "msgs": [], "connected": False,
         "disconnect_rc": None, "published": set()}


def on_connect(c, u, flags, rc, props=None):
    with lock:
        state["connack"] = {
            "rc": int(rc.value if hasattr(rc, "value") else rc),
            "session_present": bool(flags.get("session present")),
            "server_keep_alive": getattr(props, "ServerKeepAlive", None) if props else None,
        }
        state["connected"] = True
        lock.notify_all()


def on_disconnect(c, u, rc, props=None):
    with lock:
        state["connected"] = False
        state["disconnect_rc"] = int(rc.value if hasattr(rc, "value") else rc)
        lock.notify_all()


def on_subscribe(c, u, mid, granted, props=None):
    with lock:
        state["suback"][mid] = [int(g.value if hasattr(g, "value") else g) for g in granted]
        lock.notify_all()


def on_publish(c, u, mid):
    with lock:
        state["published"].add(mid)
        lock.notify_all()


def on_message(c, u, m):
    ids = []
    props = getattr(m, "properties", None)  # 3.1.1 messages have none
    if props is not None and hasattr(props, "SubscriptionIdentifier"):
        ids = list(props.SubscriptionIdentifier)
    with lock:
        state["msgs"].append({"topic": m.topic, "payload": m.payload.decode("utf-8", "replace"),
                              "qos": m.qos, "retain": bool(m.retain), "dup": bool(m.dup),
                              "subids": ids, "at": time.time()})
        lock.notify_all()


def wait_for(cond, timeout):
    deadline = time.time() + timeout
    with lock:
        while not cond():
            left = deadline - time.time()
            if left <= 0:
                return False
            lock.wait(left)
        return True


def op_connect(cmd):
    v5 = cmd.get("v", "5") == "5"
    c = Client(client_id=cmd["id"], protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
               clean_session=None if v5 else cmd.get("clean", True))
    c.on_connect, c.on_disconnect, c.on_subscribe = on_connect, on_disconnect, on_subscribe
    c.on_publish, c.on_message = on_publish, on_message
    c.max_inflight_messages_set(cmd.get("inflight", 100))
    props = None
    if v5:
        props = Properties(PacketTypes.CONNECT)
        if cmd.get("expiry"):
            props.SessionExpiryInterval = cmd["expiry"]
    will = cmd.get("will")
    if will:
        wp = None
        if v5 and will.get("delay"):
            wp = Properties(PacketTypes.WILLMESSAGE)
            wp.WillDelayInterval = will["delay"]
        c.will_set(will["topic"], will.get("payload", ""), will.get("qos", 1), will.get("retain", False),
                   properties=wp)
    state["client"] = c
    state["connack"] = None
    kw = {"keepalive": cmd.get("keepalive", 60)}
    if v5:
        kw["clean_start"] = cmd.get("clean", True)
        kw["properties"] = props
    c.connect(cmd["host"], cmd["port"], **kw)
    c.loop_start()
    if not wait_for(lambda: state["connack"] is not None or state["disconnect_rc"] is not None,
                    cmd.get("timeout", 10)):
        raise AssertionError("no CONNACK")
    return dict(state["connack"] or {"rc": state["disconnect_rc"], "refused": True})


def op_sub(cmd):
    """subs: [[filter, qos, subscription id or 0], ...] in one SUBSCRIBE."""
    c = state["client"]
    props = None
    subs = cmd["subs"]
    if c._protocol == mqtt.MQTTv5 and subs and len(subs[0]) > 2 and subs[0][2]:
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = subs[0][2]
    if c._protocol == mqtt.MQTTv5:
        from paho.mqtt.subscribeoptions import SubscribeOptions
        rc, mid = c.subscribe([(s[0], SubscribeOptions(qos=s[1])) for s in subs], properties=props)
    else:
        rc, mid = c.subscribe([(s[0], s[1]) for s in subs])
    if not wait_for(lambda: mid in state["suback"], cmd.get("timeout", 10)):
        raise AssertionError("no SUBACK")
    return {"granted": state["suback"][mid]}


def op_pub(cmd):
    """Publishes count messages (payload "<prefix><i>") or the payload;
    waits for the acknowledgements of QoS 1/2 and reports their reason
    codes (None: none came)."""
    c = state["client"]
    qos = cmd.get("qos", 0)
    n = cmd.get("count", 1)
    mids = []
    for i in range(n):
        payload = cmd["payload"] if "payload" in cmd else "%s%d" % (cmd.get("prefix", "m"), i)
        info = c.publish(cmd["topic"], payload, qos=qos, retain=cmd.get("retain", False))
        mids.append(info.mid)
    if qos == 0:
        wait_for(lambda: all(m in state["published"] for m in mids), cmd.get("timeout", 10))
        return {"rcs": [], "connected": state["connected"]}
    wait_for(lambda: all(m in state["published"] or m in c.ack_rc for m in mids) or not state["connected"],
             cmd.get("timeout", 10))
    return {"rcs": [c.ack_rc.get(m) for m in mids], "connected": state["connected"]}


def op_recv(cmd):
    """Waits until count messages arrived (quiet: the whole timeout) and
    returns them all, clearing the list."""
    count = cmd.get("count", 1)
    if cmd.get("quiet"):
        time.sleep(cmd.get("timeout", 1))
    else:
        wait_for(lambda: len(state["msgs"]) >= count, cmd.get("timeout", 10))
    with lock:
        got, state["msgs"] = state["msgs"], []
    return {"msgs": got, "connected": state["connected"]}


def op_state(cmd):
    if cmd.get("wait_disconnect"):
        wait_for(lambda: not state["connected"], cmd.get("timeout", 5))
    return {"connected": state["connected"], "disconnect_rc": state["disconnect_rc"]}


def op_disconnect(cmd):
    c = state["client"]
    c.disconnect()
    wait_for(lambda: not state["connected"], 5)
    c.loop_stop()
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
        except Exception as e:
            res = {"ok": False, "error": "%s: %s" % (type(e).__name__, e), "trace": traceback.format_exc()}
        sys.stdout.write(json.dumps(res, default=str) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
