"""The core's log lines reach Python's logging (loggers msgflo.*)."""

import logging
import time

import pytest

import msgflo
from conftest import AMQP, role_names, unique


class Collect(logging.Handler):
    def __init__(self):
        logging.Handler.__init__(self, level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


class Repeat(msgflo.Participant):
    def __init__(self, role):
        msgflo.Participant.__init__(self, {"component": "PythonRepeat"}, role)

    def process(self, inport, msg):
        self.send("out", msg.data)
        self.ack(msg)


def test_core_log_lines_are_logging_records(cleanup):
    handler = Collect()
    logger = logging.getLogger("msgflo")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        msgflo.init_logging("debug")
        role = unique("pylog")
        cleanup(role_names(role, "in", "out"))
        engine = msgflo.Engine(Repeat(role), broker=AMQP)
        engine.announce()
        engine.start()
        deadline = time.monotonic() + 10
        mine = []
        while time.monotonic() < deadline and not any(r.levelno == logging.INFO for r in mine):
            mine = [r for r in handler.records if r.name == "msgflo.participant" and role in r.getMessage()]
            time.sleep(0.05)
        engine.stop()
        messages = [r.getMessage() for r in mine]
        assert any(m.startswith("participant announced") for m in messages), messages
        assert any(r.levelno == logging.DEBUG and "participant connected" in r.getMessage() for r in mine), messages
    finally:
        msgflo.init_logging("info")
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_an_unknown_level_is_a_value_error():
    with pytest.raises(ValueError, match="debug"):
        msgflo.init_logging("loud")
