// Baseline: a plain amqplib relay with a confirm channel: consume (prefetch
// 256), publish persistently, ack the input in the publish's confirm
// callback. Same declarations as a msgflo participant.
// Usage: node amqplib_relay.js ROLE (MSGFLO_BROKER; amqplib from interop/).
'use strict';
const path = require('path');
const amqp = require(path.join(__dirname, '..', 'interop', 'node_modules', 'amqplib', 'callback_api'));

const role = process.argv[2];
const inq = role + '.IN';
const outx = role + '.OUT';
const fail = (err) => { if (err) { console.error(err); process.exit(1); } };
amqp.connect(process.env.MSGFLO_BROKER || 'amqp://localhost', (err, conn) => {
  fail(err);
  conn.createChannel((err, inCh) => {
    fail(err);
    inCh.prefetch(256);
    conn.createConfirmChannel((err, outCh) => {
      fail(err);
      inCh.assertQueue(inq, { durable: true, deadLetterExchange: 'dead-' + inq }, (err) => {
        fail(err);
        outCh.assertExchange(outx, 'fanout', { durable: true }, (err) => {
          fail(err);
          inCh.consume(inq, (msg) => {
            outCh.publish(outx, '', msg.content, { persistent: true }, (err) => {
              if (err) inCh.nack(msg, false, true); else inCh.ack(msg);
            });
          }, {}, (err) => {
            fail(err);
            console.log('amqplib relay ' + role + ' ready');
          });
        });
      });
    });
  });
});
