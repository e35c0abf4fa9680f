#!/usr/bin/python3
# A small AMQP 1.0 broker on Qpid Proton's reactor, after Proton's own
# examples/python/broker.py (Debian's python3-qpid-proton ships no
# examples): named queues created on first use; a message is accepted
# once queued and handed to a consumer link with credit; one the consumer
# releases is queued again (one sent on a link that dies unsettled is
# lost, as in Proton's example: no outage is tested against it).
# Prints "listening <port>" when ready. Usage: proton_broker.py PORT
import collections
import sys

from proton import Endpoint
from proton.handlers import MessagingHandler
from proton.reactor import Container


class Queue:
    def __init__(self):
        self.msgs = collections.deque()
        self.consumers = []

    def dispatch(self):
        progress = True
        while self.msgs and progress:
            progress = False
            for c in self.consumers:
                if self.msgs and c.credit > 0:
                    m = self.msgs.popleft()
                    d = c.send(m)
                    d.broker_msg = m
                    d.broker_queue = self
                    progress = True


class Broker(MessagingHandler):
    def __init__(self, port):
        super().__init__(auto_accept=False, auto_settle=True)
        self.port = port
        self.queues = {}

    def queue(self, addr):
        return self.queues.setdefault(addr, Queue())

    def on_start(self, event):
        self.acceptor = event.container.listen("127.0.0.1:%s" % self.port)
        print("listening %s" % self.port, flush=True)

    def on_link_opening(self, event):
        l = event.link
        if l.is_sender:
            addr = l.remote_source.address
            l.source.address = addr
            self.queue(addr).consumers.append(l)
        else:
            l.target.address = l.remote_target.address

    def unsubscribe(self, link):
        for q in self.queues.values():
            if link in q.consumers:
                q.consumers.remove(link)

    def on_link_closing(self, event):
        if event.link.is_sender:
            self.unsubscribe(event.link)

    def on_connection_closing(self, event):
        self.remove_links(event.connection)

    def on_disconnected(self, event):
        self.remove_links(event.connection)

    def remove_links(self, conn):
        l = conn.link_head(Endpoint.REMOTE_ACTIVE)
        while l:
            if l.is_sender:
                self.unsubscribe(l)
            l = l.next(Endpoint.REMOTE_ACTIVE)

    def on_sendable(self, event):
        self.queue(event.link.source.address).dispatch()

    def on_released(self, event):
        d = event.delivery
        q = getattr(d, "broker_queue", None)
        if q is not None:
            q.msgs.appendleft(d.broker_msg)
            q.dispatch()

    def on_message(self, event):
        addr = event.link.target.address or event.message.address
        q = self.queue(addr)
        q.msgs.append(event.message)
        self.accept(event.delivery)
        q.dispatch()


Container(Broker(sys.argv[1])).run()
