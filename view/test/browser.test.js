// The live view in a real browser against the real thing: headless Chromium
// (Debian's, /usr/bin/chromium) drives the page served by `msgflo run` for
// the README's example (scripts/example --port 0: sensor in Rust, formatter
// in Python, display in Node.js, on the embedded MQTT broker). The broker
// wiring is checked from outside with an MQTT client. A screenshot of every
// step goes to view/test-output/ (gitignored), plus readme.png.
//
// Everything this file starts (the example in its own process group, its
// participants, the browser) is stopped in `after`, even when a test fails.
// Waits are on conditions, each with a time limit; no sleeps.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import mqtt from 'mqtt';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const outDir = path.resolve(here, '../test-output');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// The first run may build the coordinator and the bindings.
const START_LIMIT = 20 * 60 * 1000;

let example = null;
let browser = null;
let urls = null;

/** Lines of a child's output, and a way to wait for one. */
function lineWatcher(child) {
  const lines = [];
  const waiters = [];
  let exited = null;
  const feed = (chunk) => {
    for (const line of chunk.toString().split('\n')) {
      if (!line) continue;
      lines.push(line);
      for (const w of [...waiters]) {
        const m = w.re.exec(line);
        if (m) {
          waiters.splice(waiters.indexOf(w), 1);
          clearTimeout(w.timer);
          w.resolve(m);
        }
      }
    }
  };
  let pending = { out: '', err: '' };
  const split = (key) => (chunk) => {
    const text = pending[key] + chunk.toString();
    const cut = text.lastIndexOf('\n');
    pending[key] = text.slice(cut + 1);
    if (cut >= 0) feed(text.slice(0, cut + 1));
  };
  child.stdout.on('data', split('out'));
  child.stderr.on('data', split('err'));
  child.on('exit', (code, signal) => {
    exited = `exited (code ${code}, signal ${signal})`;
    for (const w of waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error(`scripts/example ${exited} before printing ${w.re}; last lines:\n${lines.slice(-30).join('\n')}`));
    }
  });
  return {
    lines,
    get exited() {
      return exited;
    },
    wait(re, ms) {
      for (const line of lines) {
        const m = re.exec(line);
        if (m) return Promise.resolve(m);
      }
      if (exited) return Promise.reject(new Error(`scripts/example ${exited}; last lines:\n${lines.slice(-30).join('\n')}`));
      return new Promise((resolve, reject) => {
        const w = { re, resolve, reject };
        w.timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`no line matching ${re} within ${ms} ms; last lines:\n${lines.slice(-30).join('\n')}`));
        }, ms);
        waiters.push(w);
      });
    },
  };
}

/** Every process below `pid`, from /proc. */
function descendants(pid) {
  const children = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  const out = [];
  const queue = [pid];
  while (queue.length) {
    for (const c of children.get(queue.shift()) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function stopExample() {
  if (!example) return;
  await stopTree(example.child);
  example = null;
}

/** SIGTERM to the child's process group, then SIGKILL to whatever of its tree is left. */
async function stopTree(child) {
  const all = [child.pid, ...descendants(child.pid)];
  const exited = new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', resolve)));
  try {
    process.kill(-child.pid, 'SIGTERM'); // the whole process group
  } catch {
    // already gone
  }
  let timer;
  const limit = new Promise((resolve) => (timer = setTimeout(resolve, 15000)));
  await Promise.race([exited, limit]);
  clearTimeout(timer);
  for (const pid of all) {
    if (alive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
  }
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // the group is empty
  }
  children.delete(child);
}

// Last resort if the runner itself is ended: never leave the example running.
const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    for (const pid of [child.pid, ...descendants(child.pid)]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
});

for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => process.exit(130));

before(async () => {
  mkdirSync(outDir, { recursive: true });
  const child = spawn(path.join(repo, 'scripts/example'), ['--port', '0'], {
    cwd: repo,
    detached: true, // its own process group, stopped as a whole
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  example = { child, out: lineWatcher(child) };
  const [, live] = await example.out.wait(/^live view: (http:\/\/\S+)$/, START_LIMIT);
  const [, broker] = await example.out.wait(/^msgflo: running .* on (mqtt:\/\/127\.0\.0\.1:\d+) \(embedded broker\)/, 60000);
  urls = { live, broker };
  console.log(`live view at ${live}, broker ${broker}`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});

after(async () => {
  if (session) await session.context.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  browser = null;
  await stopExample();
});

async function openPage(url) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 760 } });
  const page = await context.newPage();
  const errors = [];
  const logs = [];
  page.on('console', (m) => {
    logs.push(m.text());
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  const bytes = { total: 0, files: {} };
  page.on('response', async (r) => {
    if (!r.url().startsWith(urls.live)) return;
    try {
      const body = await r.body();
      bytes.files[new URL(r.url()).pathname] = body.length;
      bytes.total += body.length;
    } catch {
      // not a body (e.g. the WebSocket upgrade)
    }
  });
  await page.goto(url);
  return { page, errors, logs, bytes, context };
}

const shot = (page, name) => page.screenshot({ path: path.join(outDir, name) });

async function firstRenderMs(page) {
  await page.waitForFunction(() => document.body.dataset.rendered === 'yes', null, { timeout: 30000 });
  return page.evaluate(() => performance.getEntriesByName('msgflo:first-render')[0].startTime);
}

/** Watch MQTT topics from outside: counts per topic and a condition wait. */
async function mqttWatch(url, topics) {
  const client = await mqtt.connectAsync(url, { clientId: `view-test-${process.pid}`, reconnectPeriod: 0 });
  const counts = Object.fromEntries(topics.map((t) => [t, 0]));
  const listeners = new Set();
  client.on('message', (topic) => {
    if (topic in counts) counts[topic]++;
    for (const l of [...listeners]) l(topic);
  });
  await client.subscribeAsync(topics);
  return {
    counts,
    /** Resolves when `check(topic)` returns true after a message, or fails after `ms`. */
    until(check, ms, what) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          listeners.delete(l);
          reject(new Error(`${what} did not happen within ${ms} ms (counts ${JSON.stringify(counts)})`));
        }, ms);
        const l = (topic) => {
          if (check(topic)) {
            clearTimeout(timer);
            listeners.delete(l);
            resolve();
          }
        };
        listeners.add(l);
      });
    },
    end: () => client.endAsync(),
  };
}

// The steps below share one page on the example graph, in this order; each
// is its own test so that one failing step does not hide the others.
let session = null;
const target = 'formatter.out>display.in';

test('the example graph: three roles, two edges, live state, text view, Flowhub link', { timeout: START_LIMIT }, async () => {
  session = await openPage(urls.live);
  const { page, bytes } = session;
  const rendered = await firstRenderMs(page);
  await page.waitForFunction(() => document.querySelectorAll('g.node').length === 3 && document.querySelectorAll('g.edge').length === 2, null, { timeout: 30000 });
  const roles = await page.$$eval('g.node', (ns) => ns.map((n) => n.dataset.role).sort());
  assert.deepEqual(roles, ['display', 'formatter', 'sensor']);
  const edges = await page.$$eval('g.edge', (es) => es.map((e) => e.dataset.key).sort());
  assert.deepEqual(edges, [target, 'sensor.temperature>formatter.in']);
  console.log(`first render of the example graph: ${rendered.toFixed(0)} ms after navigation`);
  // Live: every participant up and both edges wired.
  await page.waitForFunction(
    () =>
      [...document.querySelectorAll('g.node')].every((n) => n.dataset.status === 'alive') &&
      [...document.querySelectorAll('g.edge')].every((e) => e.dataset.state === 'wired'),
    null,
    { timeout: 90000 },
  );
  // The participant's label from its discovery message: on the box after
  // the component (cut to the box), whole in the tooltip and aria-label.
  await page.waitForFunction(() => document.querySelector('g.node[data-role="formatter"] text.component')?.textContent.startsWith('examples/Formatter · F'), null, { timeout: 10000 });
  assert.match(await page.getAttribute('g.node[data-role="formatter"]', 'aria-label'), /Formats temperature readings as text/);
  assert.match(await page.$eval('g.node[data-role="formatter"] > title', (t) => t.textContent), /Formats temperature readings as text/);
  // Ports with their queues, and the IIPs of the graph file.
  assert.ok(await page.getAttribute('g.port[data-node="display"][data-port="in"]', 'data-queue'));
  await page.waitForSelector('g.iip[data-port="sensor.interval"]');
  await page.waitForSelector('g.iip[data-port="formatter.unit"]');
  // The text alternative lists the same.
  const text = await page.textContent('#text-alt');
  for (const s of ['sensor: examples/Sensor', 'formatter: examples/Formatter', 'display: examples/Display', 'formatter.out → display.in', 'sensor.temperature → formatter.in']) {
    assert.ok(text.includes(s), `text view lacks ${s}: ${text}`);
  }
  const label = await page.getAttribute(`g.edge[data-key="${target}"]`, 'aria-label');
  assert.match(label, /^edge formatter out to display in, pubsub, wired/);
  const flowhub = await page.getAttribute('#flowhub', 'href');
  assert.match(flowhub, /#runtime\/endpoint\?protocol%3Dwebsocket%26address%3Dws%3A%2F%2F127\.0\.0\.1%3A\d+%26id%3D[0-9a-f-]+$/);
  await shot(page, '01-graph.png');
  const sizes = Object.entries(bytes.files).map(([f, n]) => `${f} ${n}`).join(', ');
  console.log(`page over the wire: ${bytes.total} bytes (${sizes})`);
});

test('watch formatter -> display by keyboard: Temperature messages scroll in', { timeout: 120000 }, async () => {
  assert.ok(session, 'the page is open');
  const { page } = session;
  let found = false;
  for (let i = 0; i < 80 && !found; i++) {
    await page.keyboard.press('Tab');
    found = await page.evaluate((k) => document.activeElement?.dataset?.key === k, target);
  }
  assert.ok(found, 'the formatter -> display edge is reachable with Tab');
  await page.keyboard.press('Enter');
  await page.waitForSelector(`g.edge.watched[data-key="${target}"]`, { timeout: 10000 });
  await page.waitForSelector('#messages li.message:has-text("Temperature:")', { timeout: 30000 });
  // Its rate is shown on the edge (the sensor sends one reading a second).
  await page.waitForFunction((k) => {
    const m = /([\d.]+)\/s$/.exec(document.querySelector(`g.edge[data-key="${k}"] .edge-label`)?.textContent ?? '');
    return m && parseFloat(m[1]) > 0;
  }, target, { timeout: 15000 });
  // Only the watched edge's messages are listed.
  const others = await page.$$eval('#messages li.message', (ls, k) => ls.filter((l) => l.dataset.edge && l.dataset.edge !== k).length, target);
  assert.equal(others, 0);
  await shot(page, '02-watch.png');
});

test('send a reading into the formatter inport: it shows on the watched edge', { timeout: 120000 }, async () => {
  assert.ok(session, 'the page is open');
  const { page } = session;
  await page.click('g.port[data-node="formatter"][data-port="in"][data-dir="in"]');
  await page.waitForSelector('#send-form:not([hidden])');
  await page.fill('#send-value', '{"celsius": 99.5}');
  await page.click('#send');
  await page.waitForSelector('#messages li.message:has-text("Temperature: 99.5 C")', { timeout: 30000 });
  await page.waitForSelector('g.iip[data-port="formatter.in"]', { timeout: 10000 });
  await shot(page, '03-send.png');
  await page.keyboard.press('Escape');
  await page.screenshot({ path: path.join(outDir, 'readme.png'), clip: { x: 0, y: 0, width: 1280, height: 420 } });
});

let killed = [];

test('kill the display participant: its box turns gone', { timeout: 120000 }, async () => {
  assert.ok(session, 'the page is open');
  const { page } = session;
  await page.waitForSelector('g.node[data-role="display"][data-status="alive"]', { timeout: 60000 });
  killed = descendants(example.child.pid).filter((pid) => cmdline(pid).includes('display.js'));
  assert.ok(killed.length > 0, 'found the display participant among the coordinator descendants');
  for (const pid of killed) process.kill(pid, 'SIGKILL');
  await page.waitForSelector('g.node[data-role="display"][data-status="gone"]', { timeout: 20000 });
  await shot(page, '04-gone.png');
});

test('the supervisor restarts the display: a new process, its box alive', { timeout: 120000 }, async () => {
  assert.ok(session, 'the page is open');
  const { page } = session;
  assert.ok(killed.length > 0, 'the display was killed');
  const deadline = Date.now() + 60000;
  let fresh = [];
  while (fresh.length === 0) {
    assert.ok(Date.now() < deadline, 'no new display process within 60 s');
    fresh = descendants(example.child.pid).filter((pid) => cmdline(pid).includes('display.js') && !killed.includes(pid));
    if (fresh.length === 0) await page.waitForTimeout(200); // polling /proc: nothing to wait on
  }
  await page.waitForSelector('g.node[data-role="display"][data-status="alive"]', { timeout: 60000 });
  await shot(page, '05-back.png');
});

test('remove and re-add formatter -> display from the page: the broker wiring follows', { timeout: 240000 }, async () => {
  assert.ok(session, 'the page is open');
  const { page } = session;
  await page.waitForSelector('g.node[data-role="display"][data-status="alive"]', { timeout: 90000 });
  await page.waitForSelector(`g.edge[data-key="${target}"][data-state="wired"]`, { timeout: 60000 });
  const outTopic = await page.getAttribute('g.port[data-node="formatter"][data-port="out"]', 'data-queue');
  const inTopic = await page.getAttribute('g.port[data-node="display"][data-port="in"]', 'data-queue');
  assert.ok(outTopic && inTopic, `queues of formatter.out (${outTopic}) and display.in (${inTopic})`);
  const mq = await mqttWatch(urls.broker, [outTopic, inTopic]);
  try {
    await mq.until((t) => t === inTopic, 30000, `a message on ${inTopic} while wired`);
    await page.click(`g.edge[data-key="${target}"]`);
    await page.click('#remove-edge');
    await page.waitForSelector(`g.edge[data-key="${target}"]`, { state: 'detached', timeout: 10000 });
    // Unwired: the formatter goes on publishing (3 in a row) while nothing reaches the display.
    let streak = 0;
    let seen = mq.counts[inTopic];
    await mq.until(
      (t) => {
        if (t !== outTopic) return false;
        streak = mq.counts[inTopic] === seen ? streak + 1 : 0;
        seen = mq.counts[inTopic];
        return streak >= 3;
      },
      30000,
      `three messages on ${outTopic} with none on ${inTopic}`,
    );
    await shot(page, '06-removed.png');
    // Re-add it: outport, then inport.
    await page.click('g.port[data-node="formatter"][data-port="out"][data-dir="out"]');
    await page.click('g.port[data-node="display"][data-port="in"][data-dir="in"]');
    await page.waitForSelector(`g.edge[data-key="${target}"][data-state="wired"]`, { timeout: 20000 });
    const before = mq.counts[inTopic];
    await mq.until(() => mq.counts[inTopic] > before, 30000, `a message on ${inTopic} after re-adding the edge`);
    await shot(page, '07-readded.png');
  } finally {
    await mq.end();
  }
});

test('add a role from the component list, then remove it', { timeout: 120000 }, async () => {
  assert.ok(session, 'the page is open');
  const { page } = session;
  await page.selectOption('#component', 'examples/Display');
  await page.fill('#role-name', 'extra');
  await page.click('#add-node button[type="submit"]');
  await page.waitForSelector('g.node[data-role="extra"]', { timeout: 10000 });
  // A real participant: started by the coordinator, discovered, alive.
  await page.waitForSelector('g.node[data-role="extra"][data-status="alive"]', { timeout: 60000 });
  await shot(page, '08-added.png');
  await page.click('g.node[data-role="extra"]');
  await page.click('#remove-node');
  await page.waitForSelector('g.node[data-role="extra"]', { state: 'detached', timeout: 10000 });
  const deadline = Date.now() + 30000;
  while (descendants(example.child.pid).some((pid) => cmdline(pid).includes('--name extra'))) {
    assert.ok(Date.now() < deadline, 'the removed role\'s participant still runs after 30 s');
    await page.waitForTimeout(200); // polling /proc: nothing to wait on
  }
});

test('no console errors on the example graph page', async () => {
  assert.ok(session, 'the page is open');
  assert.deepEqual(session.errors, []);
  await session.context.close();
  session = null;
});

test('a generated 100-node graph, loaded through the protocol, renders (time printed)', { timeout: 5 * 60 * 1000 }, async () => {
  const { page, errors, context } = await openPage(urls.live);
  try {
    await firstRenderMs(page);
    const N = 100;
    // Build graph `big` over the protocol from the page's origin, with the
    // browser's own WebSocket. Its components are not in the library, so
    // nothing is started: the roles show as missing, the edges as pending.
    const edgeCount = await page.evaluate(async (n) => {
      const ws = new WebSocket(`ws://${location.host}/`, 'noflo');
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error('no connection'));
      });
      let next = 1;
      const waiting = new Map();
      ws.onmessage = (ev) => {
        const f = JSON.parse(ev.data);
        const w = waiting.get(f.responseTo);
        if (!w) return;
        waiting.delete(f.responseTo);
        if (f.command === 'error') w.reject(new Error(f.payload.message));
        else w.resolve(f);
      };
      const send = (protocol, command, payload) =>
        new Promise((resolve, reject) => {
          const requestId = `big${next++}`;
          waiting.set(requestId, { resolve, reject });
          ws.send(JSON.stringify({ protocol, command, payload, requestId }));
        });
      await send('graph', 'clear', { id: 'big', name: 'big', main: false });
      let seed = 11;
      const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
      const adds = [];
      for (let i = 0; i < n; i++) adds.push(send('graph', 'addnode', { id: `n${i}`, component: 'generated/Step', metadata: {}, graph: 'big' }));
      await Promise.all(adds);
      const edges = new Set();
      for (let i = 1; i < n; i++) edges.add(`${Math.floor(rnd() * i)}>${i}`);
      for (let k = 0; k < 30; k++) edges.add(`${Math.floor(rnd() * n)}>${Math.floor(rnd() * n)}`);
      const sends = [...edges].map((e) => {
        const [a, b] = e.split('>');
        return send('graph', 'addedge', { src: { node: `n${a}`, port: 'out' }, tgt: { node: `n${b}`, port: 'in' }, metadata: {}, graph: 'big' });
      });
      await Promise.all(sends);
      ws.close();
      return edges.size;
    }, N);
    await page.goto(`${urls.live}?graph=big`);
    const ms = await firstRenderMs(page);
    await page.waitForFunction(
      ([n, e]) => document.querySelectorAll('g.node').length === n && document.querySelectorAll('g.edge').length === e,
      [N, edgeCount],
      { timeout: 30000 },
    );
    const layoutMs = await page.evaluate(() => performance.getEntriesByName('msgflo:layout')[0]?.duration ?? -1);
    console.log(`first render of a generated graph of ${N} roles and ${edgeCount} edges: ${ms.toFixed(0)} ms after navigation (layout ${layoutMs.toFixed(1)} ms)`);
    await page.waitForSelector('g.node[data-role="n0"][data-status="missing"]', { timeout: 10000 });
    if (await page.isVisible('#zoom')) {
      await page.click('#zoom');
      await page.waitForFunction(() => document.querySelector('#zoom').textContent === 'Zoom 100%');
    }
    await shot(page, '09-hundred.png');
    // Another client's edits show up at once: a node and an edge added, an edge removed.
    await page.evaluate(async () => {
      const ws = new WebSocket(`ws://${location.host}/`, 'noflo');
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error('no connection'));
      });
      const replies = [];
      ws.onmessage = (ev) => replies.push(JSON.parse(ev.data));
      const frames = [
        ['graph', 'addnode', { id: 'remote', component: 'generated/Step', metadata: {}, graph: 'big' }],
        ['graph', 'addedge', { src: { node: 'n0', port: 'out' }, tgt: { node: 'remote', port: 'in' }, metadata: {}, graph: 'big' }],
        ['graph', 'removeedge', { src: { node: 'n0', port: 'out' }, tgt: { node: 'n1', port: 'in' }, graph: 'big' }],
      ];
      frames.forEach(([protocol, command, payload], i) => ws.send(JSON.stringify({ protocol, command, payload, requestId: `remote${i}` })));
      const deadline = Date.now() + 10000;
      while (replies.filter((f) => String(f.responseTo).startsWith('remote')).length < frames.length) {
        if (Date.now() > deadline) throw new Error(`replies: ${JSON.stringify(replies)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const errors = replies.filter((f) => f.command === 'error');
      if (errors.length) throw new Error(JSON.stringify(errors));
      ws.close();
    });
    await page.waitForSelector('g.node[data-role="remote"]', { timeout: 10000 });
    await page.waitForSelector('g.edge[data-key="n0.out>remote.in"]', { timeout: 10000 });
    await page.waitForSelector('g.edge[data-key="n0.out>n1.in"]', { state: 'detached', timeout: 10000 });
    assert.deepEqual(errors, [], 'no console errors');
  } finally {
    await context.close();
  }
});

test('with a secret: the page asks for it, refuses a wrong one, takes it from the address, never logs it', { timeout: 120000 }, async () => {
  const SECRET = 'view-test-secret-4711';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'msgflo-view-'));
  // No graph: an empty graph named after the folder, nothing to start.
  const child = spawn(path.join(repo, 'target/release/msgflo'), ['run', '--port', '0', '--secret', SECRET], {
    cwd: dir,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const out = lineWatcher(child);
  let context = null;
  try {
    const [, live] = await out.wait(/^live view: (http:\/\/\S+)$/, 60000);
    const opened = await openPage(live);
    context = opened.context;
    const { page, errors, logs } = opened;
    await page.waitForSelector('#secret-dialog[open]', { timeout: 10000 });
    assert.equal(await page.isVisible('#secret-wrong'), false);
    await page.fill('#secret-input', 'not-the-secret');
    await page.click('#secret-dialog button[type="submit"]');
    await page.waitForSelector('#secret-dialog[open] #secret-wrong:not([hidden])', { timeout: 10000 });
    await page.fill('#secret-input', SECRET);
    await page.click('#secret-dialog button[type="submit"]');
    await firstRenderMs(page);
    assert.equal(await page.textContent('#graph-name'), path.basename(dir));
    await page.waitForSelector('#empty:not([hidden])');
    const link = await page.getAttribute('#flowhub', 'href');
    assert.ok(link.endsWith(encodeURIComponent(`&secret=${SECRET}`)), `Flowhub link carries the secret: ${link}`);
    // From the address: no prompt, and the secret leaves the address bar.
    const second = await context.newPage();
    second.on('console', (m) => {
      logs.push(m.text());
      if (m.type() === 'error') errors.push(m.text());
    });
    await second.goto(`${live}#secret=${encodeURIComponent(SECRET)}`);
    await firstRenderMs(second);
    assert.equal(await second.isVisible('#secret-dialog'), false);
    assert.ok(!second.url().includes(SECRET), `the address still holds the secret: ${second.url()}`);
    assert.deepEqual(errors, []);
    assert.ok(!logs.some((l) => l.includes(SECRET)), 'the secret appeared in the console');
  } finally {
    if (context) await context.close().catch(() => {});
    await stopTree(child);
    rmSync(dir, { recursive: true, force: true });
  }
});
