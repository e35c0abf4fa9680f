#!/usr/bin/python3
"""A device on AMQP with Qpid Proton, for internal/testkit/device_auth_test.go.

Usage: device_agent.py URL MODE [CA_FILE [CERT_FILE KEY_FILE]]

URL carries the SASL PLAIN credentials (amqp://auth-id%40tenant:secret@host:port)
or none (amqps://host:port, SASL EXTERNAL with the client certificate).
MODE:
  ok       the connection opens; attaching a sender to "orders" and a
           receiver on "#" is refused (a device has no ordinary addresses;
           its Hono links are internal/testkit/hono_amqp_test.go's)
  refused  the connection is refused during SASL
Prints "OK <mode> <detail>" and exits 0 on success; any failure raises.
"""
import sys

from proton import ConnectionException, Message, SSLDomain
from proton.utils import BlockingConnection, LinkDetached

URL = sys.argv[1]
MODE = sys.argv[2]
CA = sys.argv[3] if len(sys.argv) > 3 else None
CERT = sys.argv[4] if len(sys.argv) > 4 else None
KEY = sys.argv[5] if len(sys.argv) > 5 else None


def connect():
    kw = {"timeout": 20}
    if URL.startswith("amqps://"):
        dom = SSLDomain(SSLDomain.MODE_CLIENT)
        dom.set_trusted_ca_db(CA)
        dom.set_peer_authentication(SSLDomain.VERIFY_PEER)
        if CERT:
            dom.set_credentials(CERT, KEY, None)
        kw["ssl_domain"] = dom
    kw["allowed_mechs"] = "EXTERNAL" if CERT and "@" not in URL else "PLAIN"
    return BlockingConnection(URL, **kw)


def ok():
    c = connect()
    refused = []
    try:
        c.create_sender("orders").send(Message(body="t"))
    except (LinkDetached, ConnectionException) as e:
        refused.append("sender:" + str(e))
    try:
        c.create_receiver("#")
    except (LinkDetached, ConnectionException) as e:
        refused.append("receiver:" + str(e))
    if len(refused) != 2 or not all("unauthorized-access" in r for r in refused):
        raise AssertionError("a device attached to ordinary addresses: %r" % refused)
    c.close()
    return "links refused"


def refused():
    try:
        c = connect()
    except ConnectionException as e:
        return str(e)
    c.close()
    raise AssertionError("connection accepted")


if __name__ == "__main__":
    detail = {"ok": ok, "refused": refused}[MODE]()
    print("OK", MODE, detail)
