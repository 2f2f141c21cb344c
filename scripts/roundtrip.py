"""Send one message through a running Repeat-like participant and check it
comes out unchanged, observed with pika (an independent AMQP client).

    python scripts/roundtrip.py ROLE [BROKER_URL] [TIMEOUT_S]

Waits (up to the timeout) for the participant's queue ROLE.IN and exchange
ROLE.OUT, reads ROLE.OUT through a private queue, publishes to ROLE.IN.
Exit 0 when the message came back, 1 otherwise."""
import json
import sys
import time
import uuid

import pika


def main():
    role = sys.argv[1]
    url = sys.argv[2] if len(sys.argv) > 2 else "amqp://guest:guest@127.0.0.1:5672/%2F"
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    deadline = time.monotonic() + timeout
    conn = pika.BlockingConnection(pika.URLParameters(url))
    inq, outx = role + ".IN", role + ".OUT"
    while True:  # the participant declares both when it starts
        ch = conn.channel()
        try:
            ch.queue_declare(inq, passive=True)
            ch.exchange_declare(outx, passive=True)
            break
        except pika.exceptions.ChannelClosedByBroker:
            if time.monotonic() > deadline:
                print("roundtrip: %s never appeared" % role)
                return 1
            time.sleep(0.2)
    tap = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(tap, outx)
    body = json.dumps({"roundtrip": uuid.uuid4().hex}).encode()
    ch.basic_publish("", inq, body)
    while time.monotonic() < deadline:
        method, _, got = ch.basic_get(tap, auto_ack=True)
        if method is None:
            conn.sleep(0.05)
            continue
        if json.loads(got) == json.loads(body):  # Python's repeat re-encodes JSON
            print("roundtrip: %s repeated the message" % role)
            return 0
        print("roundtrip: %s sent something else: %r" % (role, got))
        return 1
    print("roundtrip: nothing back from %s within %.0f s" % (role, timeout))
    return 1


if __name__ == "__main__":
    sys.exit(main())
