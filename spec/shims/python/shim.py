#!/usr/bin/env python
"""The conformance shim written with the Python API (msgflo-python style):
repeats in -> out; {"command":"nack"} nacks, {"command":"error"} raises in
process (nack + error outport), {"command":"whoami"} answers {"pid": N},
{"command":"unicode"} returns {"text": "æ€𝄞"}, {"command":"nan"} returns NaN.
Usage: shim.py ROLE (MSGFLO_BROKER)."""
import os

import msgflo


class SpecShim(msgflo.Participant):
    def __init__(self, role):
        d = {
            "component": "SpecShim",
            "inports": [{"id": "in", "type": "any"}],
            "outports": [{"id": "out", "type": "any"}, {"id": "error", "type": "object"}],
        }
        msgflo.Participant.__init__(self, d, role)

    def process(self, inport, msg):
        command = msg.data.get("command") if isinstance(msg.data, dict) else None
        if command == "nack":
            self.nack(msg)
        elif command == "error":
            raise RuntimeError("error requested")
        elif command == "unicode":
            self.send("out", {"text": "æ€𝄞"})
            self.ack(msg)
        elif command == "nan":
            self.send("out", float("nan"))  # refused: raises, so nack + error body
            self.ack(msg)
        elif command == "whoami":
            self.send("out", {"pid": os.getpid()})
            self.ack(msg)
        else:
            self.send("out", msg.buffer)
            self.ack(msg)


if __name__ == "__main__":
    msgflo.main(SpecShim)
