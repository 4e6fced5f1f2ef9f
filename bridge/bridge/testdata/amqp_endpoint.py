#!/usr/bin/python3
"""A minimal AMQP 1.0 receiving endpoint for the bridge tests, built on
python3-qpid-proton (the library Koji's protonmsg uses). It accepts a sender
link to any target address -- topic://koji.task.open included, which
RabbitMQ refuses -- accepts every message, and prints each as one JSON line:
target address, application properties, body, message id and ttl.

usage: amqp_endpoint.py amqp://127.0.0.1:PORT [no-credit]

With no-credit it attaches links but never grants link credit, so a sender
can never transfer (a broker that stalls).
"""
import json
import sys

from proton.handlers import MessagingHandler
from proton.reactor import Container


class Endpoint(MessagingHandler):
    def __init__(self, url, credit=True):
        super().__init__(prefetch=10 if credit else 0)
        self.url = url

    def on_start(self, event):
        event.container.listen(self.url)
        print(json.dumps({"listening": self.url}), flush=True)

    def on_link_opening(self, event):
        if event.link.is_receiver:
            # take whatever target the sender asks for
            event.link.target.address = event.link.remote_target.address

    def on_message(self, event):
        m = event.message
        print(json.dumps({
            "address": event.link.remote_target.address,
            "properties": m.properties,
            "property_types": {k: type(v).__name__ for k, v in (m.properties or {}).items()},
            "body": m.body,
            "body_type": type(m.body).__name__,
            "id": m.id,
            "ttl": m.ttl,
        }), flush=True)


Container(Endpoint(sys.argv[1], credit=sys.argv[2:3] != ["no-credit"])).run()
