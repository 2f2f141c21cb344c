"""Fixtures for tests against real brokers (RabbitMQ and Mosquitto on
loopback; scripts/setup starts them). Names are unique per test."""

import json
import os
import time
import uuid

import pytest

import msgflo
from msgflo import _msgflo

AMQP = os.environ.get("MSGFLO_TEST_AMQP", "amqp://127.0.0.1:5672")
MQTT = os.environ.get("MSGFLO_TEST_MQTT", "mqtt://127.0.0.1:1883")
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


@pytest.fixture(params=["amqp", "mqtt"])
def broker(request):
    return AMQP if request.param == "amqp" else MQTT


class Driver(object):
    """Talks to a participant under test from outside: an outport publishing
    to its inport queue, inports subscribed to its outport queues."""

    def __init__(self, broker, role, inq, outqs):
        ins = [{"id": "o%d" % i, "queue": q} for i, q in enumerate(outqs)]
        d = {"component": "TestDriver", "inports": ins, "outports": [{"id": "to", "queue": inq}]}
        self.core = _msgflo.CoreParticipant.connect(d, unique("driver"), broker, None, 3600.0)
        self.ports = {q: "o%d" % i for i, q in enumerate(outqs)}

    def send(self, payload):
        self.core.send("to", payload)

    def receive(self, queue, timeout=10.0):
        batch = self.core.recv_batch(1, timeout)
        assert batch, "nothing arrived on %s within %ss" % (queue, timeout)
        d = batch[0]
        assert d.inport == self.ports[queue], (d.inport, queue)
        d.ack()
        return d.payload

    def nothing(self, timeout=0.5):
        return not self.core.recv_batch(1, timeout)

    def stop(self):
        self.core.stop()


class PikaDriver(object):
    """The Driver's interface on an independent AMQP client (pika, not the
    code under test): publishes to the participant's inport exchange, and
    reads its outports through private queues bound to their exchanges
    (which the participant declared: they must exist). Dead-letter
    exchanges (dead-*) are declared here, as their observer does."""

    def __init__(self, role, inq, outqs):
        import pika

        self.conn = pika.BlockingConnection(pika.URLParameters(AMQP))
        self.ch = self.conn.channel()
        self.inq = inq
        self.taps = {}
        for x in outqs:
            if x.startswith("dead-"):
                self.ch.exchange_declare(x, exchange_type="fanout", durable=True)
            self.taps[x] = self.ch.queue_declare("", exclusive=True).method.queue
            self.ch.queue_bind(self.taps[x], x)

    def send(self, payload):
        self.ch.basic_publish(self.inq, "", payload)

    def receive(self, queue, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            method, _props, body = self.ch.basic_get(self.taps[queue], auto_ack=True)
            if method is not None:
                return body
            assert time.monotonic() < deadline, "nothing arrived on %s within %ss" % (queue, timeout)
            self.conn.sleep(0.02)  # polling; the timeout is only the deadline

    def stop(self):
        self.conn.close()


def observer(broker, role, inq, outqs):
    """A Driver independent of msgflo where there is one: pika on AMQP.
    MQTT has no independent client installed: msgflo's own Driver there."""
    if broker.startswith("amqp"):
        return PikaDriver(role, inq, outqs)
    return Driver(broker, role, inq, outqs)


@pytest.fixture
def cleanup():
    """Register AMQP queues/exchanges to delete after the test."""
    names = []
    yield names.extend
    if not names:
        return
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    for n in set(names):
        for op in ("queue_delete", "exchange_delete"):
            ch = conn.channel()
            try:
                getattr(ch, op)(n)
            except Exception:
                pass
            if ch.is_open:
                ch.close()
    conn.close()


def role_names(role, *ports):
    out = []
    for p in ports:
        q = "%s.%s" % (role, p.upper())
        out += [q, "dead-" + q]
    return out
