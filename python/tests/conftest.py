"""Fixtures for tests against real brokers (RabbitMQ and Mosquitto on
loopback; scripts/setup starts them). Names are unique per test."""

import os
import time
import uuid

import pytest

AMQP = os.environ.get("MSGFLO_TEST_AMQP", "amqp://127.0.0.1:5672")
MQTT = os.environ.get("MSGFLO_TEST_MQTT", "mqtt://127.0.0.1:1883")
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


@pytest.fixture(params=["amqp", "mqtt"])
def broker(request):
    return AMQP if request.param == "amqp" else MQTT


# Drivers talk to a participant under test from outside, through a client
# independent of msgflo: send(payload) to its inport, receive(queue) from
# one of its outports, stop().


class PikaDriver(object):
    """A driver on an independent AMQP client (pika, not the
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


class PahoDriver(object):
    """A driver on an independent MQTT client (paho-mqtt, not
    the code under test): publishes to the participant's inport topic and
    subscribes to its outport topics (QoS 0, as the participant)."""

    def __init__(self, broker, inq, outqs):
        import queue
        import threading
        from urllib.parse import urlparse

        import paho.mqtt.client as mqtt

        u = urlparse(broker)
        self.inq = inq
        self.got = {q: queue.Queue() for q in outqs}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("paho"))
        if u.username:
            self.client.username_pw_set(u.username, u.password)
        connected, subscribed = threading.Event(), threading.Event()
        refused = []

        def on_connect(_c, _u, _flags, reason, _props):
            if reason.is_failure:
                refused.append("CONNACK %s" % reason)
            connected.set()

        def on_subscribe(_c, _u, _mid, reasons, _props):
            refused.extend("SUBACK %s" % r for r in reasons if r.is_failure)
            subscribed.set()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = lambda _c, _u, m: self.got[m.topic].put(m.payload) if m.topic in self.got else None
        self.client.connect(u.hostname, u.port or 1883)
        self.client.loop_start()
        assert connected.wait(10) and not refused, "paho: %s from %s" % (refused or "no CONNACK", broker)
        if outqs:
            self.client.subscribe([(q, 0) for q in outqs])
            assert subscribed.wait(10) and not refused, "paho: %s" % (refused or "no SUBACK")

    def send(self, payload):
        self.client.publish(self.inq, payload).wait_for_publish(10)

    def receive(self, queue, timeout=10.0):
        import queue as q

        try:
            return self.got[queue].get(timeout=timeout)
        except q.Empty:
            raise AssertionError("nothing arrived on %s within %ss" % (queue, timeout))

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


def observer(broker, role, inq, outqs):
    """A driver independent of msgflo: pika on AMQP, paho-mqtt on MQTT."""
    if broker.startswith("amqp"):
        return PikaDriver(role, inq, outqs)
    return PahoDriver(broker, inq, outqs)


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
