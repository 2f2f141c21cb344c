"""Exceptions raised by msgflo. Every one has ``.code``, the core's error code.

``msgflo.Error`` is the base class. ``ConnectionError`` and ``TimeoutError``
also derive from Python's built-in exceptions of the same name, so code that
catches those keeps working.
"""

import builtins


class Error(Exception):
    """Base class of every msgflo error."""

    code = "ERROR"

    def __init__(self, message="", code=None):
        super().__init__(message)
        if code is not None:
            self.code = code


class ConnectionError(Error, builtins.ConnectionError):
    """The broker cannot be reached or refused the login."""

    code = "CONNECTION"


class ProtocolError(Error):
    """The broker refused an operation."""

    code = "BROKER"


class DeclarationConflict(ProtocolError):
    """A queue or exchange exists with other options (AMQP 406)."""

    code = "DECLARATION_CONFLICT"


class UsageError(Error, ValueError):
    """Wrong use of the API: unknown port, second ack, bad definition or URL,
    participant closed, participant used after fork."""

    code = "USAGE"


class TimeoutError(Error, builtins.TimeoutError):
    """An operation did not finish in time."""

    code = "TIMEOUT"


class HandlerError(Error):
    """User code failed while processing a message."""

    code = "HANDLER"


__all__ = [
    "Error",
    "ConnectionError",
    "ProtocolError",
    "DeclarationConflict",
    "UsageError",
    "TimeoutError",
    "HandlerError",
]
