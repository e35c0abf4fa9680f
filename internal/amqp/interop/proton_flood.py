#!/usr/bin/python3
"""A Proton sender that sends as fast as its link credit allows.

Usage: proton_flood.py URL USER PASSWORD ADDRESS SECONDS
Sends unsettled messages (bodies "p<n>") for SECONDS from the first
credit and waits for every outcome; prints one line of JSON: the bodies accepted, the number
rejected with amqp:resource-limit-exceeded, any other outcomes, and how many
were sent. Driven by internal/amqp/ratehold_test.go.
"""
import json
import sys
import time

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container

URL, USER, PASSWORD, ADDRESS, SECONDS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])


class Flood(MessagingHandler):
    def __init__(self):
        super().__init__(auto_settle=True)
        self.n = 0
        self.body = {}
        self.accepted, self.rejected, self.other = [], 0, []
        self.outstanding = 0
        self.end = None
        self.conn = None
        self.closed = False

    def on_start(self, event):
        self.conn = event.container.connect(URL, user=USER, password=PASSWORD, allowed_mechs="PLAIN", allow_insecure_mechs=True)
        event.container.create_sender(self.conn, ADDRESS)

    def on_sendable(self, event):
        if self.end is None:
            # The time runs from the first credit (a PLAIN login can take
            # seconds on a loaded machine); the timer ends the run when
            # the time is up while no credit is left.
            self.end = time.time() + SECONDS
            event.container.schedule(SECONDS + 0.1, self)
        while event.sender.credit > 0 and time.time() < self.end:
            b = "p%d" % self.n
            self.n += 1
            d = event.sender.send(Message(body=b))
            self.body[d] = b
            self.outstanding += 1
        if time.time() >= self.end:
            self.maybe_done()

    def on_accepted(self, event):
        self.accepted.append(self.body.pop(event.delivery))
        self.settled(event)

    def on_rejected(self, event):
        self.body.pop(event.delivery)
        cond = event.delivery.remote.condition
        if cond is not None and cond.name == "amqp:resource-limit-exceeded":
            self.rejected += 1
        else:
            self.other.append("rejected %s" % cond)
        self.settled(event)

    def on_released(self, event):
        self.body.pop(event.delivery)
        self.other.append("released")
        self.settled(event)

    def settled(self, event):
        self.outstanding -= 1
        self.maybe_done()

    def maybe_done(self):
        if self.end is not None and time.time() >= self.end and self.outstanding == 0 and not self.closed:
            self.closed = True
            self.conn.close()

    def on_timer_task(self, event):
        self.maybe_done()


f = Flood()
Container(f).run()
print(json.dumps({"accepted": f.accepted, "rejected": f.rejected, "other": f.other, "sent": f.n,
                  "seconds": SECONDS + max(time.time() - f.end, 0)}))
