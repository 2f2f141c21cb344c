'use strict';
const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
const { spawn } = require('child_process');
const msgflo = require('..');
const { AMQP, MQTT, BROKERS, unique, tap, cleanup, portNames } = require('./helpers');

const repeatDef = {
  component: 'Repeat',
  icon: 'file-word-o',
  label: 'Repeats in data without changes',
  inports: [{ id: 'in', type: 'any' }],
  outports: [{ id: 'out', type: 'any' }],
};

const start = (p) => new Promise((resolve, reject) => p.start((err) => (err ? reject(err) : resolve(p))));
const stop = (p) => new Promise((resolve, reject) => p.stop((err) => (err ? reject(err) : resolve())));

for (const [name, broker] of BROKERS) {
  test(`msgflo-nodejs participant repeats JSON, text and binary on ${name}`, async () => {
    const role = unique('jsrep');
    const p = new msgflo.participant.Participant(broker, repeatDef, (inport, data, cb) => cb('out', null, data), role);
    const events = [];
    p.on('data', (port, data) => events.push(port));
    await start(p);
    assert.strictEqual(p.definition.inports[0].queue, `${role}.IN`);
    assert.strictEqual(p.definition.outports[0].hidden, false);
    const t = await tap(broker, `${role}.OUT`);
    try {
      await t.send(`${role}.IN`, { a: [1, 2.5, 'x'] });
      assert.deepStrictEqual((await t.next()).data, { a: [1, 2.5, 'x'] });
      await t.send(`${role}.IN`, Buffer.from('plain text'));
      assert.strictEqual((await t.next()).data, 'plain text');
      await t.send(`${role}.IN`, Buffer.from([0, 255, 254]));
      // Invalid UTF-8 reaches the handler as a Buffer and is sent as it is.
      assert.deepStrictEqual((await t.next()).payload, Buffer.from([0, 255, 254]));
      assert.deepStrictEqual(events, ['out', 'out', 'out']);
    } finally {
      await t.close();
      await stop(p);
      if (name === 'amqp') await cleanup(portNames(role, 'in', 'out'));
    }
  });
}

test('errors nack to the dead-letter route; a throw does not stop the participant', async () => {
  const role = unique('jsnack');
  const func = (inport, data, cb) => {
    if (data === 'throw') throw new Error('user bug');
    if (data === 'fail') return cb('out', new Error('bad input'));
    if (data === 'fail-with-data') return cb('out', new Error('partial'), { partial: true });
    return cb('out', null, data);
  };
  const p = await start(new msgflo.participant.Participant(AMQP, repeatDef, func, role));
  const out = await tap(AMQP, `${role}.OUT`);
  const dead = await tap(AMQP, `dead-${role}.IN`);
  const origError = console.error;
  console.error = () => {};
  try {
    for (const d of ['throw', 'fail', 'fail-with-data', 'ok']) await out.send(`${role}.IN`, d);
    const deadData = [(await dead.next()).data, (await dead.next()).data, (await dead.next()).data].sort();
    assert.deepStrictEqual(deadData, ['fail', 'fail-with-data', 'throw']);
    const outs = [(await out.next()).data, (await out.next()).data];
    assert.deepStrictEqual(outs, [{ partial: true }, 'ok']);
  } finally {
    console.error = origError;
    await out.close();
    await dead.close();
    await stop(p);
    await cleanup(portNames(role, 'in', 'out'));
  }
});

test('errors carry codes', async () => {
  await assert.rejects(msgflo.connect(repeatDef, 'x', { broker: 'http://nope' }), (e) => e.code === 'INVALID_URL');
  await assert.rejects(msgflo.connect(repeatDef, 'x', { broker: 'amqp://127.0.0.1:1' }), (e) => e.code === 'CONNECTION' && e instanceof Error);
  const p = await msgflo.connect(repeatDef, unique('jscode'), { broker: MQTT });
  await assert.rejects(p.send('nope', 1), (e) => e.code === 'UNKNOWN_PORT');
  await p.stop();
  await assert.rejects(p.send('out', 1), (e) => e.code === 'CLOSED');
});

test('outcomes of one turn reach the core in one call, in order; flush hands over the rest at once', async () => {
  const { Completions } = require('../lib/completions');
  const calls = [];
  const core = { completeAllInOrder: (d, o, e) => calls.push([d, o, e]) };
  const c = new Completions(core);
  c.add('d1', [{ port: 'out', payload: Buffer.from('1') }], null);
  c.add('d2', [], 'boom');
  c.add('d3', [], null);
  assert.strictEqual(calls.length, 0, 'handed over in the same turn');
  await Promise.resolve();
  assert.deepStrictEqual(calls.map(([d]) => d), [['d1', 'd2', 'd3']]);
  assert.deepStrictEqual(calls[0][2], [null, 'boom', null]);
  c.add('d4', [], null);
  c.flush(); // what stop() does before stopping the core
  assert.deepStrictEqual(calls.map(([d]) => d), [['d1', 'd2', 'd3'], ['d4']]);
  await Promise.resolve();
  assert.strictEqual(calls.length, 2, 'nothing handed over twice');
  // A mismatched call is a usage error with a code, not a crash.
  const p = await msgflo.connect(repeatDef, unique('jsbatch'), { broker: MQTT });
  try {
    assert.throws(() => p._core.completeAllInOrder([], [[]], []), (e) => /completeAllInOrder/.test(e.message));
  } finally {
    await p.stop();
  }
});

test('Promise API: for await, explicit ack, Buffers; second ack throws', async () => {
  const role = unique('jsaio');
  const p = await msgflo.connect({ component: 'Upper', inports: [{ id: 'in' }], outports: [{ id: 'out' }] }, role, { broker: MQTT });
  const t = await tap(MQTT, `${role}.OUT`);
  for (let i = 0; i < 5; i++) await t.send(`${role}.IN`, Buffer.from(`abc${i}`));
  let n = 0;
  for await (const msg of p) {
    await p.send('out', Buffer.from(msg.payload.toString().toUpperCase()));
    msg.ack();
    assert.throws(() => msg.ack(), (e) => e.code === 'ALREADY_COMPLETED');
    if (++n === 5) break;
  }
  const got = [];
  for (let i = 0; i < 5; i++) got.push((await t.next()).payload.toString());
  assert.deepStrictEqual(got.sort(), ['ABC0', 'ABC1', 'ABC2', 'ABC3', 'ABC4']);
  await t.close();
  await p.stop();
});

test('the event loop keeps running while the core waits', async () => {
  // A timer, which runs only after recvBatch() has been called, sends the
  // message that ends the wait. Were the event loop blocked while the core
  // waits, the timer could not run until recvBatch gave up at its deadline,
  // with an empty batch.
  const role = unique('jsloop');
  const p = await msgflo.connect(repeatDef, role, { broker: MQTT });
  const t = await tap(MQTT, `${role}.OUT`);
  try {
    let sent = null;
    setTimeout(() => { sent = t.send(`${role}.IN`, 'wake'); }, 0);
    const batch = await p.recvBatch(1, 10000);
    assert.ok(sent, 'the timer ran while recvBatch waited');
    await sent;
    assert.deepStrictEqual(batch.map((m) => m.data), ['wake']);
    batch[0].ack();
  } finally {
    await t.close();
    await p.stop();
  }
});

for (const [name, broker] of BROKERS) {
  test(`msgflo-nodejs bin runs an unchanged msgflo-nodejs module on ${name}; SIGTERM exits cleanly`, async () => {
    const role = unique('jsbin');
    const bin = path.join(__dirname, '..', 'bin', 'msgflo-nodejs');
    const child = spawn(process.execPath, [bin, '--name', role, path.join(__dirname, 'fixtures', 'Repeat.js')], {
      env: Object.assign({}, process.env, { MSGFLO_BROKER: broker }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    try {
      const line = await new Promise((resolve, reject) => {
        child.stdout.once('data', (d) => resolve(d.toString()));
        child.once('exit', (code) => reject(new Error('exited ' + code + ': ' + stderr)));
      });
      // The core's readiness line, the same in every language.
      assert.match(line, new RegExp(`^${role}\\(\\w+\\) ready on `));
      const t = await tap(broker, `${role}.OUT`);
      await t.send(`${role}.IN`, { n: 1 });
      assert.deepStrictEqual((await t.next()).data, { n: 1 });
      await t.close();
      const exit = new Promise((resolve) => child.once('exit', (code, signal) => resolve([code, signal])));
      child.kill('SIGTERM');
      assert.deepStrictEqual(await exit, [0, null]);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      if (name === 'amqp') await cleanup(portNames(role, 'in', 'out'));
    }
  });
}

test('getBroker: roundrobin edges with a dead-letter route, and discovery for several observers (AMQP)', async () => {
  const p = (fn) => new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
  const [src, work, dead] = [unique('nsrc'), unique('nwork'), unique('ndead')];
  const broker = msgflo.transport.getBroker(AMQP);
  await p((cb) => broker.connect(cb));
  await p((cb) => broker.createQueue('outqueue', src + '.OUT', cb));
  await p((cb) => broker.createQueue('inqueue', work + '.IN', cb));
  await p((cb) => broker.createQueue('inqueue', dead + '.IN', cb));
  await p((cb) => broker.addBinding({ type: 'roundrobin', src: src + '.OUT', tgt: work + '.IN', deadletter: dead + '.IN' }, cb));
  // A worker nacks "bad" and acks the rest; the dead-letter queue gets "bad".
  const seen = [];
  const deadSeen = [];
  await p((cb) => broker.subscribeToQueue(work + '.IN', (msg) => {
    seen.push(msg.data);
    if (msg.data === 'bad') broker.nackMessage(msg); else broker.ackMessage(msg);
  }, cb));
  await p((cb) => broker.subscribeToQueue(dead + '.IN', (msg) => { deadSeen.push(msg.data); broker.ackMessage(msg); }, cb));
  for (const d of ['a', 'bad', 'b']) await p((cb) => broker.sendTo('outqueue', src + '.OUT', d, cb));
  const until = async (f) => { for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 50)); };
  await until(() => seen.length === 3 && deadSeen.length === 1);
  assert.deepStrictEqual(seen.sort(), ['a', 'b', 'bad']);
  assert.deepStrictEqual(deadSeen, ['bad']);
  // Removing the edge: nothing more arrives.
  await p((cb) => broker.removeBinding({ type: 'roundrobin', src: src + '.OUT', tgt: work + '.IN' }, cb));
  await p((cb) => broker.sendTo('outqueue', src + '.OUT', 'late', cb));
  await new Promise((r) => setTimeout(r, 500));
  assert.strictEqual(seen.length, 3);
  // Two observers of discovery both see one announcement.
  const role = unique('nobs');
  const observers = [msgflo.transport.getBroker(AMQP), msgflo.transport.getBroker(AMQP)];
  const got = [[], []];
  for (const [i, o] of observers.entries()) {
    await p((cb) => o.connect(cb));
    await p((cb) => o.subscribeParticipantChange((msg) => {
      if (msg.data.payload && msg.data.payload.role === role) got[i].push(msg.data.payload.id);
      o.ackMessage(msg);
    }, cb));
  }
  await p((cb) => broker.registerParticipant({ id: role + '-1', role, component: 'X', label: 'x', icon: 'x', inports: [], outports: [] }, cb));
  await until(() => got[0].length === 1 && got[1].length === 1);
  assert.deepStrictEqual(got, [[role + '-1'], [role + '-1']]);
  // Disconnect first: a client whose queue is deleted under it reconnects
  // and declares it again.
  for (const c of [broker, ...observers]) await p((cb) => c.disconnect(cb));
  await cleanup([src + '.OUT', 'out-' + src + '.OUT', work + '.IN', 'dead-' + work + '.IN', dead + '.IN']);
});

test('a failure nacks and sends exactly the core error body, in both APIs (AMQP)', async () => {
  const def = {
    component: 'Failing', inports: [{ id: 'in' }], outports: [{ id: 'out' }, { id: 'error' }],
  };
  const origError = console.error;
  console.error = () => {};
  const roleA = unique('jserrbody');
  const roleB = unique('jserrbody');
  const compat = await start(new msgflo.participant.Participant(AMQP, def, (inport, data, cb) => {
    if (data === 'throw') throw new Error('thrown "æ"');
    return cb('out', new Error('callback error'));
  }, roleA));
  const modern = await msgflo.connect(def, roleB, { broker: AMQP });
  const serving = modern.serve(async (msg) => {
    if (msg.data === 'reject') throw new Error('rejected');
    return { out: msg.data };
  });
  const errA = await tap(AMQP, `${roleA}.ERROR`);
  const deadA = await tap(AMQP, `dead-${roleA}.IN`);
  const errB = await tap(AMQP, `${roleB}.ERROR`);
  const outB = await tap(AMQP, `${roleB}.OUT`);
  try {
    await errA.send(`${roleA}.IN`, 'throw');
    assert.strictEqual((await errA.next()).payload.toString(), '{"error":"thrown \\"æ\\""}');
    await errA.send(`${roleA}.IN`, 'fail');
    assert.strictEqual((await errA.next()).payload.toString(), '{"error":"callback error"}');
    assert.deepStrictEqual([(await deadA.next()).data, (await deadA.next()).data].sort(), ['fail', 'throw']);
    await errB.send(`${roleB}.IN`, 'reject');
    assert.strictEqual((await errB.next()).payload.toString(), '{"error":"rejected"}');
    await errB.send(`${roleB}.IN`, 'fine');
    assert.strictEqual((await outB.next()).data, 'fine');
  } finally {
    console.error = origError;
    for (const t of [errA, deadA, errB, outB]) await t.close();
    await stop(compat);
    await modern.stop();
    await serving;
    await cleanup(portNames(roleA, 'in', 'out', 'error').concat(portNames(roleB, 'in', 'out', 'error')));
  }
});

test('JSON rule for returned values: UTF-8 unescaped, NaN/Infinity refused, bytes unchanged', () => {
  const { encode } = require('../lib/message');
  assert.strictEqual(encode({ text: 'æ€𝄞', n: [1, 2.5, null] }).toString(), '{"text":"æ€𝄞","n":[1,2.5,null]}');
  assert.deepStrictEqual(encode(Buffer.from([0, 255])), Buffer.from([0, 255]));
  for (const bad of [NaN, Infinity, { x: [-Infinity] }]) {
    assert.throws(() => encode(bad), (e) => e.code === 'INVALID_PAYLOAD' && /not JSON numbers/.test(e.message));
  }
});

test('bad seconds are usage errors, never a panic', async () => {
  for (const bad of [NaN, Infinity, -1, 1e30, 1e-300]) {
    await assert.rejects(msgflo.connect(repeatDef, unique('jshb'), { broker: MQTT, heartbeat: bad }),
      (e) => e.code === 'INVALID_DEFINITION' && /heartbeat must be a number of seconds/.test(e.message));
  }
});

test('definitions cross typed; the core names queues; prefetch 0 is refused', async () => {
  await assert.rejects(msgflo.connect(repeatDef, unique('jsprefetch'), { broker: MQTT, prefetch: 0 }),
    (e) => e.code === 'INVALID_DEFINITION' && /prefetch must be at least 1/.test(e.message));
  const role = unique('jstyped');
  const def = {
    component: 'Typed', extra: 'ignored',
    inports: [{ id: 'in', schema: { not: 'a string' } }],
    outports: [{ id: 'out', hidden: true }, { id: 'tmp', persistent: false }],
  };
  const p = new msgflo.participant.Participant(MQTT, def, (inport, data, cb) => cb('tmp', null, data), role);
  assert.strictEqual(p.definition.inports[0].queue, `${role}.IN`);
  assert.strictEqual(p.definition.outports[0].queue, undefined);
  await start(p);
  try {
    const disc = JSON.parse(p._core.discovery);
    assert.ok(disc.id.startsWith(`${role}-`));
    assert.strictEqual(p.definition.id, disc.id);
    assert.deepStrictEqual(disc.outports.map((o) => o.id), ['tmp']);
  } finally {
    await stop(p);
  }
});
