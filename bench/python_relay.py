#!/usr/bin/env python
"""A msgflo Python participant relaying payload bytes unchanged (no JSON
round trip): the Python binding's own cost. Usage: python_relay.py ROLE."""
import msgflo


class Relay(msgflo.Participant):
    def __init__(self, role):
        msgflo.Participant.__init__(self, {"component": "PythonRelay"}, role)

    def process(self, inport, msg):
        self.send("out", msg.buffer)
        self.ack(msg)


if __name__ == "__main__":
    msgflo.main(Relay)
