"""The msgflo-python 0.4.1 API, on the Rust core.

Code written for msgflo-python runs unchanged::

    class Repeat(msgflo.Participant):
        def __init__(self, role):
            d = {'component': 'PythonRepeat', 'label': 'Repeat input data without change'}
            msgflo.Participant.__init__(self, d, role)

        def process(self, inport, msg):
            self.send('out', msg.data)
            self.ack(msg)

    if __name__ == '__main__':
        msgflo.main(Repeat)

Differences from the original, all deliberate: queues default to
``role.PORT`` (the MsgFlo convention; set ``queue_naming = 'slash'`` on the
class, or ``MSGFLO_PYTHON_QUEUE_NAMING=slash``, for the original Python
``role/port``); ``main`` takes the role from the first command-line argument
(the original took the script path); AMQP works on Python 3; an exception in
``process`` nacks the message and the participant keeps running.
"""

import json
import logging
import os
import signal
import sys
import threading
from optparse import OptionParser

from . import _msgflo
from .message import Message, encode

logger = logging.getLogger("msgflo")

#: Deliveries taken from the core per call: one GIL round trip per batch.
BATCH = 256


def _default_port(port_id):
    return {"id": port_id, "type": "any"}


def normalize_definition(d, role, naming=None, component=None):
    """A copy of definition ``d`` with msgflo-python's defaults applied."""
    d = dict(d or {})
    naming = naming or os.environ.get("MSGFLO_PYTHON_QUEUE_NAMING") or "dot"
    if naming not in ("dot", "slash"):
        raise ValueError("queue_naming must be 'dot' or 'slash', not %r" % (naming,))
    d.setdefault("role", role)
    d.setdefault("component", component or "PythonParticipant")
    d.setdefault("label", "")
    ports = {}
    for kind, default in (("inports", "in"), ("outports", "out")):
        given = d.get(kind)
        plist = [dict(p) for p in (given if given is not None else [_default_port(default)])]
        for p in plist:
            p.setdefault("type", "any")
            if naming == "slash" and not p.get("hidden") and not p.get("queue"):
                p["queue"] = "%s/%s" % (role, p["id"])
        ports[kind] = plist
    d.update(ports)
    return d


class Participant(object):
    """Subclass this and implement ``process(self, inport, msg)``."""

    #: 'dot' (role.PORT, default) or 'slash' (role/port, as msgflo-python 0.4.1).
    queue_naming = None

    def __init__(self, d, role):
        self.definition = normalize_definition(d, role, self.queue_naming, type(self).__name__)
        self._core = None
        self._unsettled = set()

    def send(self, outport, outdata):
        """Send ``outdata`` (JSON-serialisable, or bytes sent as they are)."""
        if self._core is None:
            logger.warning("send(%r) before the participant is connected: dropped", outport)
            return
        self._core.send(outport, encode(outdata))

    def process(self, inport, msg):
        raise NotImplementedError("Participant.process()")

    def ack(self, msg):
        msg.ack()

    def nack(self, msg):
        msg.nack()


class Engine(object):
    """Runs one participant on the core: connect, announce, deliver."""

    def __init__(self, participant, broker=None, iips=None, prefetch=None, heartbeat=None):
        self.participant = participant
        self.iips = iips or {}
        d = participant.definition
        self.core = _msgflo.CoreParticipant.connect(d, d["role"], broker, prefetch, heartbeat)
        participant._core = self.core
        #: Set by request_stop() (main's SIGTERM/SIGINT handler): serving
        #: ends after the message being handled.
        self._stop_requested = threading.Event()
        # Show the participant what the core made of its definition.
        disc = json.loads(self.core.discovery)
        d["id"] = disc["id"]
        queues = {(k, p["id"]): p["queue"] for k in ("inports", "outports") for p in disc[k]}
        for k in ("inports", "outports"):
            for p in d[k]:
                if (k, p["id"]) in queues:
                    p["queue"] = queues[(k, p["id"])]
        self._thread = None

    @property
    def broker(self):
        return self.core.broker

    def announce(self):
        self.core.announce()
        for port, data in self.iips.items():
            self._deliver(Message(data, port))

    def _deliver(self, msg):
        p = self.participant
        try:
            p.process(msg.inport, msg)
        except Exception as e:  # the participant keeps running
            logger.exception("process() failed on inport %r; message nacked", msg.inport)
            # nack + {"error": ...} on an `error` outport: the core's rule.
            self.core.complete(msg._delivery, [], str(e) or type(e).__name__)
        else:
            if not msg.settled:
                # Like the original: it waits for an explicit ack/nack.
                p._unsettled.add(msg)

    def request_stop(self):
        """Finish the message being handled, then stop serving (what is not
        handled yet goes back to the queue). Safe in a signal handler."""
        self._stop_requested.set()

    def serve_once(self, timeout=0.5):
        """Handle one batch; False once the participant is stopped (or
        request_stop() was called: the rest of the batch is requeued)."""
        batch = self.core.recv_batch(BATCH, timeout)
        for d in batch:
            if self._stop_requested.is_set():
                return False  # the rest is dropped unsettled: requeued
            self._deliver(Message(d.payload, d.inport, d))
        unsettled = self.participant._unsettled
        if unsettled:
            unsettled.difference_update([m for m in unsettled if m.settled])
        return (bool(batch) or not self.core.stopped) and not self._stop_requested.is_set()

    def serve_forever(self):
        while self.serve_once():
            pass

    def start(self):
        """Serve on a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="msgflo-%s" % self.core.role, daemon=True)
        self._thread.start()
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.core.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


def run(participants, broker=None, done_cb=None, iips=None):
    """Connect, announce and serve each participant on a background thread
    (the original's ``msgflo.run``). Returns the engines."""
    engines = []
    for p in participants:
        e = Engine(p, broker=broker, iips=iips)
        e.announce()
        engines.append(e.start())
    return engines if len(engines) != 1 else engines[0]


def parse(argv, defaults=None):
    parser = OptionParser(usage="%prog [options] ROLE")
    parser.add_option("-i", "--iips", dest="iips", default="{}",
                      help="Data as initial information packets", metavar='{"inportA": "inA-data", ...}')
    parser.add_option("--broker", dest="broker", default=None,
                      help="Broker URL (default: MSGFLO_BROKER, CLOUDAMQP_URL, amqp://localhost)")
    (options, args) = parser.parse_args(argv)
    for k, v in (defaults or {}).items():
        if getattr(options, k, None) is None:
            setattr(options, k, v)
    options.iips = json.loads(options.iips)
    options.role = args[0] if args else None
    return [options, parser]


def main(Participant, role=None, argv=None):
    """Run a participant class as a program: ``python file.py ROLE``.

    Prints one line on stdout when connected (before the first discovery
    message), serves until SIGTERM or Ctrl-C (SIGINT), then stops cleanly:
    the message being handled is finished (the signal only sets a flag the
    serving loop reads between messages), unhandled ones go back to the
    queue, outputs and acks are flushed, and it returns 0.
    """
    [config, parser] = parse(sys.argv[1:] if argv is None else argv)
    if role:
        config.role = role
    if not config.role:
        parser.error("role not specified")
    participant = Participant(config.role)
    d = participant.definition
    engine = Engine(participant, broker=config.broker, iips=config.iips)
    # Listening before the readiness line: a tool may signal right after it.
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: engine.request_stop())
    print(engine.core.readiness_line)
    sys.stdout.flush()
    try:
        engine.announce()
        engine.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        engine.stop()
    return 0
