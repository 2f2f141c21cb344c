#!/usr/bin/env python
# A participant written for msgflo-python 0.4.1, unchanged: it runs on the
# Rust core. `python repeat.py ROLE` or `msgflo-python repeat.py ROLE`.
import msgflo


class Repeat(msgflo.Participant):
    def __init__(self, role):
        d = {
            'component': 'PythonRepeat',
            'label': 'Repeat input data without change',
        }
        msgflo.Participant.__init__(self, d, role)

    def process(self, inport, msg):
        self.send('out', msg.data)
        self.ack(msg)


if __name__ == '__main__':
    msgflo.main(Repeat)
