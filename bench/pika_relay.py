#!/usr/bin/env python
"""Baseline: a plain pika relay (consume, publish, ack), prefetch 256,
persistent output, same declarations as a msgflo participant. No publisher
confirms: with BlockingConnection they cost a round trip per message, so
this baseline gives pika fewer guarantees than the msgflo participant has.
Usage: pika_relay.py ROLE (broker from MSGFLO_BROKER)."""
import os
import sys

import pika

role = sys.argv[1]
conn = pika.BlockingConnection(pika.URLParameters(os.environ.get("MSGFLO_BROKER", "amqp://localhost")))
ch = conn.channel()
ch.basic_qos(prefetch_count=256)
inq, outx = role + ".IN", role + ".OUT"
ch.queue_declare(inq, durable=True, arguments={"x-dead-letter-exchange": "dead-" + inq})
ch.exchange_declare(outx, "fanout", durable=True)
props = pika.BasicProperties(delivery_mode=2)


def on_message(channel, method, properties, body):
    channel.basic_publish(outx, "", body, props)
    channel.basic_ack(method.delivery_tag)


ch.basic_consume(inq, on_message)
print("pika relay %s ready" % role, flush=True)
try:
    ch.start_consuming()
except KeyboardInterrupt:
    pass
