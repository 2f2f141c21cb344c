'use strict';
// The core's log lines reach console (in a child process, to read them).
const { test } = require('node:test');
const assert = require('node:assert');
const { execFile } = require('node:child_process');
const path = require('node:path');
const { unique } = require('./helpers');

const AMQP = process.env.MSGFLO_TEST_AMQP || 'amqp://127.0.0.1:5672';

function run(script, env) {
  return new Promise((resolve) => {
    execFile(process.execPath, ['-e', script], { env: { ...process.env, ...env }, timeout: 30000 },
      (err, stdout, stderr) => resolve({ err, stdout, stderr }));
  });
}

test('core log lines go to console, at the level asked for; an unknown level throws with a code', async () => {
  const role = unique('nodelog');
  const script = `
    const msgflo = require(${JSON.stringify(path.join(__dirname, '..'))});
    try { msgflo.initLogging('loud'); } catch (e) { console.log('bad level:', e.code, e.message); }
    msgflo.initLogging('info');
    (async () => {
      const p = await msgflo.connect({ component: 'LogTest', inports: [{ id: 'in' }], outports: [{ id: 'out' }] },
                                     ${JSON.stringify(role)}, { broker: ${JSON.stringify(AMQP)} });
      await p.stop();
    })().catch((e) => { console.error('failed', e); process.exit(1); });`;
  const { err, stdout, stderr } = await run(script, { RUST_LOG: '' });
  assert.ifError(err);
  assert.match(stdout, /bad level: INVALID_DEFINITION .*log level "loud".*debug/);
  assert.match(stdout, new RegExp(`msgflo\\.participant INFO participant announced role=${role}`), stdout + stderr);
  // Nothing at debug was handed over.
  assert.doesNotMatch(stdout, /participant connected/);
});

test('by default only warnings and errors reach console', async () => {
  const role = unique('nodelog');
  const script = `
    const msgflo = require(${JSON.stringify(path.join(__dirname, '..'))});
    (async () => {
      const p = await msgflo.connect({ component: 'LogTest', inports: [{ id: 'in' }], outports: [{ id: 'out' }] },
                                     ${JSON.stringify(role)}, { broker: ${JSON.stringify(AMQP)} });
      await p.send('nope', 'x').catch((e) => console.log('send failed:', e.code));
      await p.stop();
    })().catch((e) => { console.error('failed', e); process.exit(1); });`;
  const { err, stdout, stderr } = await run(script, { RUST_LOG: '' });
  assert.ifError(err);
  assert.match(stdout, /send failed: UNKNOWN_PORT/);
  assert.doesNotMatch(stdout + stderr, /INFO/);
});
