"""asyncio API: ``async for msg in participant``, explicit ack/nack.

No call blocks the event loop: a send that must wait (backpressure, the
broker away) is a future the core's runtime completes; deliveries cross
from the core in batches on a worker thread (one awaitable per batch, not
per message); the GIL is released while waiting.

    async with await msgflo.aio.connect(definition, "repeat") as p:
        async for msg in p:
            await p.send("out", msg.buffer)
            msg.ack()
"""

import asyncio
import functools

from . import _msgflo
from .message import Message, encode
from .participant import BATCH, normalize_definition


def _resolver(loop, future):
    """A callable for the core's runtime threads: settles `future` on its
    loop (None: done; an exception: raised by the await)."""

    def settle(error):
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    return lambda error: loop.call_soon_threadsafe(settle, error)


class AsyncParticipant(object):
    def __init__(self, core, definition):
        self._core = core
        self.definition = definition

    @property
    def id(self):
        return self._core.id

    @property
    def role(self):
        return self._core.role

    @property
    def broker(self):
        return self._core.broker

    async def _call(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args))

    async def announce(self):
        await self._call(self._core.announce)

    async def recv_batch(self, max=BATCH, timeout=None):
        """Up to ``max`` messages; waits up to ``timeout`` s for the first."""
        batch = await self._call(self._core.recv_batch, max, timeout)
        return [Message(d.payload, d.inport, d) for d in batch]

    def __aiter__(self):
        return self._messages()

    async def _messages(self):
        while True:
            batch = await self.recv_batch(BATCH, 0.5)
            if not batch and self._core.stopped:
                return
            for m in batch:
                yield m

    async def send(self, port, data):
        """Publish (bytes as they are, anything else as JSON by the core's
        rule). Returns at once unless the core applies backpressure or the
        broker is away; then it awaits the core without blocking the loop."""
        payload = encode(data)
        if self._core.try_send(port, payload):
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._core.send_async(port, payload, _resolver(loop, done))
        await done

    async def stop(self):
        await self._call(self._core.stop)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.stop()


async def connect(definition, role, broker=None, prefetch=None, heartbeat=None, announce=True):
    """Connect a participant; announce it unless ``announce=False`` (then
    call ``await p.announce()`` after printing a readiness line)."""
    d = normalize_definition(definition, role, component=definition.get("component"))
    loop = asyncio.get_running_loop()
    core = await loop.run_in_executor(
        None, functools.partial(_msgflo.CoreParticipant.connect, d, role, broker, prefetch, heartbeat)
    )
    p = AsyncParticipant(core, d)
    if announce:
        await p.announce()
    return p
