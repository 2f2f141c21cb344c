"""msgflo: MsgFlo participants in Python, on the shared Rust core.

- ``msgflo.Participant``, ``msgflo.main``, ``msgflo.run``: the msgflo-python
  0.4.1 API (code written for it runs unchanged, on AMQP and MQTT).
- ``msgflo.aio``: asyncio (``async for msg in participant``).
- ``msgflo.Error`` and subclasses, each with ``.code``.
- The core's log lines are records of the ``msgflo.*`` loggers of
  ``logging`` (``msgflo.transport.amqp``, ...); ``msgflo.init_logging("debug")``
  changes what the core hands over (default: ``RUST_LOG``, else info).
"""

from . import aio
from ._msgflo import DEFAULT_PREFETCH, init_logging
from .errors import (
    ConnectionError,
    DeclarationConflict,
    Error,
    HandlerError,
    ProtocolError,
    TimeoutError,
    UsageError,
)
from .message import Message
from .participant import Engine, Participant, main, normalize_definition, parse, run

init_logging()

__all__ = [
    "Participant", "Engine", "Message", "main", "run", "parse", "normalize_definition", "aio",
    "Error", "ConnectionError", "ProtocolError", "DeclarationConflict", "UsageError",
    "TimeoutError", "HandlerError", "DEFAULT_PREFETCH", "init_logging",
]
