"""Messages as msgflo-python presents them: ``.data``, ``.json``, ``.buffer``."""

import json as _json

from . import _msgflo


def decode(payload):
    """(data, json) for payload bytes: parsed JSON when it parses, else the
    raw bytes (as msgflo-python does)."""
    try:
        value = _json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        return payload, e
    return value, value


def encode(data):
    """Bytes to send: bytes-like as they are, anything else as JSON by the
    core's rule (compact, UTF-8 unescaped; NaN and Infinity raise
    UsageError with code INVALID_PAYLOAD and nothing is sent)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return _msgflo.json_payload(_json.dumps(data, ensure_ascii=False, separators=(",", ":")))


class Message(object):
    """One received message.

    ``buffer`` is the payload bytes; ``json`` the parsed JSON (or the
    decoding error when it is not JSON); ``data`` the parsed JSON, else the
    bytes. ``inport`` names the port it came in on.
    """

    __slots__ = ("buffer", "data", "json", "inport", "_delivery")

    def __init__(self, payload, inport=None, delivery=None):
        self.buffer = payload
        self.data, self.json = decode(payload) if isinstance(payload, (bytes, bytearray)) else (payload, payload)
        self.inport = inport
        self._delivery = delivery

    @property
    def redelivered(self):
        return bool(self._delivery and self._delivery.redelivered)

    @property
    def settled(self):
        return self._delivery is None or self._delivery.settled

    def ack(self):
        """Processed. A second ack or nack raises UsageError (ALREADY_COMPLETED)."""
        if self._delivery is not None:
            self._delivery.ack()

    def nack(self):
        """Failed: to the dead-letter route when the graph has one (on AMQP;
        without one RabbitMQ drops it), never back to the queue."""
        if self._delivery is not None:
            self._delivery.nack()

    def __repr__(self):
        return "Message(inport=%r, data=%r)" % (self.inport, self.data)
