"""The msgflo-python compatible API on both brokers."""

import builtins
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import msgflo
from conftest import AMQP, EXAMPLES, MQTT, PahoDriver, PikaDriver, observer, role_names, unique


class Repeat(msgflo.Participant):
    def __init__(self, role):
        d = {"component": "PythonRepeat", "label": "Repeat input data without change"}
        msgflo.Participant.__init__(self, d, role)

    def process(self, inport, msg):
        self.send("out", msg.data)
        self.ack(msg)


class Picky(msgflo.Participant):
    """Doubles numbers; raises on anything else."""

    def __init__(self, role):
        d = {"component": "Picky", "outports": [{"id": "out"}, {"id": "error"}]}
        msgflo.Participant.__init__(self, d, role)

    def process(self, inport, msg):
        self.send("out", msg.data * 2 if isinstance(msg.data, int) else 1 / 0)
        self.ack(msg)


def start(cls, broker, role):
    engine = msgflo.Engine(cls(role), broker=broker)
    engine.announce()
    return engine.start()


def test_repeat_json_text_binary(broker, cleanup):
    role = unique("pyrep")
    cleanup(role_names(role, "in", "out"))
    engine = start(Repeat, broker, role)
    assert engine.participant.definition["inports"][0]["queue"] == role + ".IN"
    drv = observer(broker, role, role + ".IN", [role + ".OUT"])
    try:
        drv.send(b'{"a": [1, 2.5, "x"]}')
        assert json.loads(drv.receive(role + ".OUT")) == {"a": [1, 2.5, "x"]}
        drv.send(b"plain text")  # not JSON: msg.data is the bytes, sent as they are
        assert drv.receive(role + ".OUT") == b"plain text"
        drv.send(bytes([0, 255, 254, 1]))
        assert drv.receive(role + ".OUT") == bytes([0, 255, 254, 1])
    finally:
        drv.stop()
        engine.stop()


def test_exception_nacks_sends_error_and_keeps_running(cleanup):
    role = unique("pypicky")
    cleanup(role_names(role, "in", "out", "error") + ["dead-" + role + ".IN"])
    engine = start(Picky, AMQP, role)
    drv = PikaDriver(role, role + ".IN", [role + ".OUT", role + ".ERROR", "dead-" + role + ".IN"])
    try:
        drv.send(b'"not a number"')
        drv.send(b"21")
        assert drv.receive(role + ".OUT") == b"42"
        assert drv.receive(role + ".ERROR") == b'{"error":"division by zero"}'  # the core's body: str(exception)
        assert drv.receive("dead-" + role + ".IN") == b'"not a number"'  # nacked: dead-lettered
    finally:
        drv.stop()
        engine.stop()


def test_errors_are_native_with_codes(cleanup):
    role = unique("pyerr")
    cleanup(role_names(role, "in", "out"))
    engine = start(Repeat, AMQP, role)
    try:
        with pytest.raises(msgflo.UsageError) as e:
            engine.participant.send("nope", 1)
        assert e.value.code == "UNKNOWN_PORT"
    finally:
        engine.stop()
    with pytest.raises(msgflo.UsageError) as e:
        msgflo.Engine(Repeat("x"), broker="http://nope")
    assert e.value.code == "INVALID_URL"
    with pytest.raises(msgflo.ConnectionError) as e:
        msgflo.Engine(Repeat("x"), broker="amqp://127.0.0.1:1")
    assert e.value.code == "CONNECTION"
    assert isinstance(e.value, builtins.ConnectionError) and isinstance(e.value, msgflo.Error)


def test_second_ack_is_an_error_not_a_crash(broker, cleanup):
    role = unique("pyack")
    cleanup(role_names(role, "in", "out"))
    seen = []

    class Twice(Repeat):
        def process(self, inport, msg):
            self.ack(msg)
            try:
                self.ack(msg)
            except msgflo.UsageError as e:
                seen.append(e.code)
            self.send("out", msg.data)

    engine = start(Twice, broker, role)
    drv = observer(broker, role, role + ".IN", [role + ".OUT"])
    try:
        drv.send(b"1")
        assert drv.receive(role + ".OUT") == b"1"
        drv.send(b"2")
        assert drv.receive(role + ".OUT") == b"2"
        assert seen == ["ALREADY_COMPLETED", "ALREADY_COMPLETED"]
    finally:
        drv.stop()
        engine.stop()


def test_slash_naming_keeps_original_python_queues(cleanup):
    role = unique("pyslash")
    cleanup(["%s/in" % role, "%s/out" % role, "dead-%s/in" % role])

    class Old(Repeat):
        queue_naming = "slash"

    engine = start(Old, MQTT, role)
    drv = PahoDriver(MQTT, role + "/in", [role + "/out"])
    try:
        drv.send(b'"x"')
        assert drv.receive(role + "/out") == b'"x"'
    finally:
        drv.stop()
        engine.stop()


def _spawn(args, broker):
    env = dict(os.environ, MSGFLO_BROKER=broker)
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=EXAMPLES)


@pytest.mark.parametrize("how", ["main", "cli"])
def test_process_readiness_line_and_sigterm(how, broker, cleanup):
    role = unique("pyproc")
    cleanup(role_names(role, "in", "out"))
    repeat = os.path.join(EXAMPLES, "repeat.py")
    if how == "main":
        args = [sys.executable, repeat, role]
    else:
        # The console script installed with the package.
        args = [os.path.join(os.path.dirname(sys.executable), "msgflo-python"), repeat, role]
    proc = _spawn(args, broker)
    try:
        line = proc.stdout.readline().decode()
        # The core's readiness line, the same in every language.
        assert line.startswith("%s(PythonRepeat) ready on " % role), line
        drv = observer(broker, role, role + ".IN", [role + ".OUT"])
        drv.send(b'{"n": 1}')
        assert json.loads(drv.receive(role + ".OUT")) == {"n": 1}
        drv.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_iips_are_processed(cleanup):
    role = unique("pyiip")
    cleanup(role_names(role, "in", "out"))
    drv = PahoDriver(MQTT, role + ".IN", [role + ".OUT"])
    proc = _spawn([sys.executable, os.path.join(EXAMPLES, "repeat.py"), role, "--iips", '{"in": {"hello": 1}}'], MQTT)
    try:
        assert json.loads(drv.receive(role + ".OUT")) == {"hello": 1}
    finally:
        drv.stop()
        proc.kill()
        proc.wait()


def test_engine_is_a_context_manager():
    with msgflo.Engine(Repeat(unique("pyctx")), broker=MQTT) as engine:
        assert not engine.core.stopped
    assert engine.core.stopped
    with pytest.raises(msgflo.UsageError) as e:
        engine.core.send("out", b"1")
    assert e.value.code == "CLOSED"


def test_gil_released_while_waiting(cleanup):
    """Another Python thread sends the message that ends recv_batch's wait.
    With a switch interval longer than the test, that thread gets the GIL
    only when this one releases it: were it held while recv_batch waits,
    the thread could not send until recv_batch gave up at its deadline
    with an empty batch."""
    role = unique("pygil")
    cleanup(role_names(role, "in", "out"))
    engine = msgflo.Engine(Repeat(role), broker=MQTT)
    drv = PahoDriver(MQTT, role + ".IN", [])
    waiting = threading.Event()

    def send_while_waiting():
        waiting.wait()
        drv.send(b'"wake"')

    interval = sys.getswitchinterval()
    t = threading.Thread(target=send_while_waiting)
    t.start()
    sys.setswitchinterval(1000.0)
    try:
        waiting.set()
        batch = engine.core.recv_batch(1, 10.0)
    finally:
        sys.setswitchinterval(interval)
        t.join()
        drv.stop()
        engine.stop()
    assert [d.payload for d in batch] == [b'"wake"'], "the other thread did not run while recv_batch waited"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
def test_fork_refuses_inherited_and_allows_new(cleanup):
    role = unique("pyfork")
    cleanup(role_names(role, "in", "out") + role_names(role + "c", "in", "out"))
    engine = msgflo.Engine(Repeat(role), broker=AMQP)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            try:
                engine.core.send("out", b"1")
            except msgflo.UsageError:
                child = msgflo.Engine(Repeat(role + "c"), broker=AMQP)
                child.participant.send("out", 1)
                child.stop()
                code = 0
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    result = os.read(r, 1)
    os.waitpid(pid, 0)
    engine.stop()
    assert result == bytes([0])


def test_asyncio_api():
    import asyncio

    async def scenario():
        role = unique("pyaio")
        d = {"component": "Upper", "inports": [{"id": "in"}], "outports": [{"id": "out"}]}
        p = await msgflo.aio.connect(d, role, broker=MQTT)
        drv = PahoDriver(MQTT, role + ".IN", [role + ".OUT"])
        for i in range(5):
            drv.send(b"abc%d" % i)
        got = []
        async with p:
            async for msg in p:
                await p.send("out", msg.buffer.upper())
                msg.ack()
                got.append(msg.inport)
                if len(got) == 5:
                    break
        outs = sorted(drv.receive(role + ".OUT") for _ in range(5))
        drv.stop()
        return got, outs

    got, outs = asyncio.run(scenario())
    assert got == ["in"] * 5
    assert outs == [b"ABC%d" % i for i in range(5)]


def test_json_rule_for_returned_values():
    """The core's rule: compact, UTF-8 unescaped; NaN/Infinity refused, bytes unchanged."""
    from msgflo.message import encode

    assert encode({"text": "æ€𝄞", "n": [1, 2.5, None]}) == '{"text":"æ€𝄞","n":[1,2.5,null]}'.encode("utf-8")
    assert encode(b"\x00\xff") == b"\x00\xff"
    for bad in (float("nan"), float("inf"), {"x": [float("-inf")]}):
        with pytest.raises(msgflo.UsageError) as e:
            encode(bad)
        assert e.value.code == "INVALID_PAYLOAD"
        assert "NaN, Infinity and -Infinity are not JSON numbers" in str(e.value)


def test_definition_is_typed_and_prefetch_zero_refused():
    """The dict crosses typed (a non-string schema is left out, not an
    error); the core fills queues and the id; prefetch 0 is refused."""

    class Typed(msgflo.Participant):
        def __init__(self, role):
            d = {"component": "Typed", "inports": [{"id": "in", "schema": {"not": "a string"}}],
                 "outports": [{"id": "out", "hidden": True}, {"id": "tmp", "persistent": False}]}
            msgflo.Participant.__init__(self, d, role)

    role = unique("pytyped")
    engine = msgflo.Engine(Typed(role), broker=MQTT)
    try:
        disc = json.loads(engine.core.discovery)
        assert disc["id"].startswith(role + "-")
        assert [p["queue"] for p in disc["inports"]] == [role + ".IN"]
        assert [p["id"] for p in disc["outports"]] == ["tmp"]  # hidden: not announced
        assert "schema" not in disc["inports"][0]
    finally:
        engine.stop()
    with pytest.raises(msgflo.UsageError) as e:
        msgflo.Engine(Repeat(unique("pyprefetch")), broker=MQTT, prefetch=0)
    assert e.value.code == "INVALID_DEFINITION" and "prefetch must be at least 1" in str(e.value)


SIGTERM_IN_PROCESS = """
import os, signal, sys
import msgflo

class SelfStop(msgflo.Participant):
    def __init__(self, role):
        msgflo.Participant.__init__(self, {"component": "SelfStop"}, role)

    def process(self, inport, msg):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while this message is handled
        self.send("out", {"finished": msg.data})
        self.ack(msg)

sys.exit(msgflo.main(SelfStop))
"""


def test_sigterm_finishes_the_message_being_handled(cleanup):
    """main's docstring: on SIGTERM the message being handled is finished,
    then the process exits 0."""
    role = unique("pyterm")
    cleanup(role_names(role, "in", "out"))
    proc = _spawn([sys.executable, "-c", SIGTERM_IN_PROCESS, role], AMQP)
    try:
        assert role in proc.stdout.readline().decode()
        drv = PikaDriver(role, role + ".IN", [role + ".OUT"])
        try:
            drv.send(b"1")
            assert json.loads(drv.receive(role + ".OUT")) == {"finished": 1}
        finally:
            drv.stop()
        assert proc.wait(timeout=10) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_seconds_are_usage_errors():
    """Seconds go through the core's checked parser: infinity, NaN,
    negatives and overflow are usage errors, never a panic."""
    for bad in (float("inf"), float("nan"), -1.0, 1e30, 1e-300):
        with pytest.raises(msgflo.UsageError) as e:
            msgflo.Engine(Repeat(unique("pyhb")), broker=MQTT, heartbeat=bad)
        assert e.value.code == "INVALID_DEFINITION" and "heartbeat" in str(e.value)
    engine = msgflo.Engine(Repeat(unique("pytimeout")), broker=MQTT)
    try:
        for bad in (float("inf"), float("nan"), -1.0, 1e30):
            with pytest.raises(msgflo.UsageError) as e:
                engine.core.recv_batch(1, bad)
            assert "timeout" in str(e.value)
        assert engine.core.recv_batch(1, 0.0) == []
    finally:
        engine.stop()
