"""The asyncio API never blocks the event loop, even while the broker is
away (a private Mosquitto, stopped mid-test; the shared brokers are never
touched)."""

import asyncio
import socket
import subprocess
import threading

import msgflo
from conftest import unique


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mosquitto(port):
    proc = subprocess.Popen(["mosquitto", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):  # until it accepts connections (at most 10 s)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
            return proc
        except OSError:
            threading.Event().wait(0.05)
    proc.kill()
    raise AssertionError("private mosquitto did not start on port %d" % port)


def test_timer_keeps_ticking_while_a_send_waits_for_the_broker():
    port = _free_port()
    broker = _mosquitto(port)
    result = {}

    async def scenario():
        url = "mqtt://127.0.0.1:%d" % port
        d = {"component": "AioDown", "inports": [], "outports": [{"id": "out"}]}
        p = await msgflo.aio.connect(d, unique("pyaiodown"), broker=url, heartbeat=3600)
        broker.terminate()
        broker.wait()
        ticks = 0
        sent = 0

        async def timer():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async def sender():
            nonlocal sent
            while True:
                await p.send("out", {"n": sent})
                sent += 1

        t = asyncio.create_task(timer())
        s = asyncio.create_task(sender())
        # The condition: the timer on the same loop ticks 50 times while no
        # send completes (one is waiting for the broker).

        async def stuck():
            last_sent, at_tick = sent, ticks
            while ticks - at_tick < 50:
                await asyncio.sleep(0.01)
                if sent != last_sent:
                    last_sent, at_tick = sent, ticks

        await asyncio.wait_for(stuck(), 30)
        result["stuck_sends"] = sent
        result["ticks"] = ticks
        s.cancel()
        t.cancel()
        # Bring the broker back so stop() can flush and close.
        restarted = _mosquitto(port)
        try:
            await asyncio.wait_for(p.stop(), 30)
        finally:
            restarted.terminate()
            restarted.wait()
        result["done"] = True

    runner = threading.Thread(target=lambda: asyncio.run(scenario()), daemon=True)
    runner.start()
    runner.join(60)
    if broker.poll() is None:
        broker.kill()
    assert result.get("done"), "the event loop was blocked: %r" % (result,)
    assert result["ticks"] >= 50
