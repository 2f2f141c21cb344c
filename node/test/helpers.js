'use strict';
const crypto = require('crypto');
const msgflo = require('..');

const AMQP = process.env.MSGFLO_TEST_AMQP || 'amqp://127.0.0.1:5672';
const MQTT = process.env.MSGFLO_TEST_MQTT || 'mqtt://127.0.0.1:1883';
const BROKERS = [['amqp', AMQP], ['mqtt', MQTT]];

const unique = (p) => `${p}-${crypto.randomBytes(5).toString('hex')}`;

// Receive what is published to `exchange` (an outport): a transient queue
// bound to it on AMQP, the topic itself on MQTT.
async function tap(broker, exchange) {
  const client = msgflo.transport.getBroker(broker);
  const p = (fn) => new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
  await p((cb) => client.connect(cb));
  const got = [];
  let waiter = null;
  const handler = (msg) => {
    client.ackMessage(msg);
    got.push(msg);
    if (waiter) { const w = waiter; waiter = null; w(); }
  };
  let queue = exchange;
  if (broker.startsWith('amqp')) {
    queue = unique('tap');
    // The exchange as an outport declares it (it may not exist yet).
    await p((cb) => client.createQueue('outqueue', exchange, cb));
    await p((cb) => client.createQueue('inqueue', queue, { persistent: false }, cb));
    await p((cb) => client.addBinding({ type: 'pubsub', src: exchange, tgt: queue }, cb));
  }
  await p((cb) => client.subscribeToQueue(queue, handler, cb));
  return {
    client,
    async next(timeoutMs = 10000) {
      if (!got.length) {
        await new Promise((resolve, reject) => {
          const t = setTimeout(() => reject(new Error('nothing on ' + exchange)), timeoutMs);
          waiter = () => { clearTimeout(t); resolve(); };
        });
      }
      return got.shift();
    },
    send(queueName, data) { return p((cb) => client.sendTo('inqueue', queueName, data, cb)); },
    close() { return p((cb) => client.disconnect(cb)); },
  };
}

// Delete what tests declared on RabbitMQ (amqplib from interop/).
async function cleanup(names) {
  let amqp;
  try { amqp = require('../../interop/node_modules/amqplib'); } catch (e) { throw new Error('run scripts/setup (installs interop/node_modules) first'); }
  const conn = await amqp.connect(AMQP);
  for (const n of names) {
    for (const op of ['deleteQueue', 'deleteExchange']) {
      const ch = await conn.createChannel();
      ch.on('error', () => {});
      try { await ch[op](n); } catch (e) { /* gone already */ }
      try { await ch.close(); } catch (e) { /* closed by error */ }
    }
  }
  await conn.close();
}

const portNames = (role, ...ports) => ports.flatMap((p) => [`${role}.${p.toUpperCase()}`, `dead-${role}.${p.toUpperCase()}`]);

module.exports = { AMQP, MQTT, BROKERS, unique, tap, cleanup, portNames };
