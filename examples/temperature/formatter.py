#!/usr/bin/env python3
# The formatter of the example graph, in Python, written for the msgflo-python
# API (it runs unchanged on the original library): turns a reading
# {"celsius": 22.3} into the text "Temperature: 22.3 C". Inport `unit` ("C"
# or "F", usually an IIP) picks the unit. `python3 formatter.py ROLE`.
import msgflo


class Formatter(msgflo.Participant):
    def __init__(self, role):
        d = {
            'component': 'examples/Formatter',
            'label': 'Formats temperature readings as text',
            'icon': 'font',
            'inports': [
                {'id': 'in', 'type': 'object'},
                {'id': 'unit', 'type': 'string'},
            ],
            'outports': [
                {'id': 'out', 'type': 'string'},
                {'id': 'error', 'type': 'object'},
            ],
        }
        msgflo.Participant.__init__(self, d, role)
        self.unit = 'C'

    def process(self, inport, msg):
        if inport == 'unit':
            if msg.data not in ('C', 'F'):
                raise ValueError('unit must be "C" or "F", got %r' % (msg.data,))
            self.unit = msg.data
            self.ack(msg)
            return
        celsius = float(msg.data['celsius'])  # a bad reading raises: nack + error port
        value = celsius if self.unit == 'C' else celsius * 9 / 5 + 32
        self.send('out', 'Temperature: %.1f %s' % (value, self.unit))
        self.ack(msg)


if __name__ == '__main__':
    msgflo.main(Formatter)
