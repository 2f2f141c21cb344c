// A deliberately broken participant, for testing the runner itself:
// its discovery has the wrong keys; on AMQP it declares its inport queue
// without the dead-letter argument and never acks (prefetch 10); it crashes
// on input that is not JSON; it has no error port; SIGTERM kills it.
// Usage: node broken.js ROLE (MSGFLO_BROKER). Uses interop/node_modules.
'use strict';
const path = require('path');
const lib = (name) => require(path.join(__dirname, '..', '..', '..', 'interop', 'node_modules', name));

const role = process.argv[2];
const broker = process.env.MSGFLO_BROKER;
const inq = role + '.IN';
const outq = role + '.OUT';
const discovery = JSON.stringify({
  protocol: 'discovery',
  command: 'participant',
  payload: {
    id: role + '-broken', role, component: 'Broken', foo: 'not a discovery key',
    inports: [{ id: 'in', type: 'any', queue: inq }],
    outports: [{ id: 'out', type: 'any', queue: outq }],
  },
});

if (broker.startsWith('amqp')) {
  lib('amqplib/callback_api').connect(broker, (err, conn) => {
    if (err) throw err;
    conn.createChannel((err, ch) => {
      if (err) throw err;
      ch.prefetch(10);
      ch.assertQueue(inq, { durable: true }, () => {
        ch.assertExchange(outq, 'fanout', { durable: true }, () => {
          ch.consume(inq, (msg) => {
            const data = JSON.parse(msg.content.toString()); // throws on non-JSON: crash
            ch.publish(outq, '', Buffer.from(JSON.stringify(data)));
            // never acked
          });
          ch.assertQueue('fbp', { durable: true }, () => {
            console.log(role + ' ready');
            ch.sendToQueue('fbp', Buffer.from(discovery));
          });
        });
      });
    });
  });
} else {
  const client = lib('mqtt').connect(broker);
  client.on('connect', () => {
    client.subscribe(inq, () => {
      console.log(role + ' ready');
      client.publish('fbp', discovery);
    });
  });
  client.on('message', (topic, payload) => {
    const data = JSON.parse(payload.toString()); // throws on non-JSON: crash
    client.publish(outq, JSON.stringify(data));
  });
}
