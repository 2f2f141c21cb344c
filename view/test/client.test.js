// Unit tests of the page's protocol client, in-process: a small stand-in
// socket records what the client sends and lets the test deliver frames.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Client, ProtocolError, finalCommand } from '../client.js';

class Socket {
  static last = null;
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.sent = [];
    this.closed = false;
    Socket.last = this;
    queueMicrotask(() => this.onopen?.({}));
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.closed = true;
    queueMicrotask(() => this.onclose?.({ code: 1000 }));
  }
  deliver(frame) {
    this.onmessage({ data: JSON.stringify(frame) });
  }
  lastSent() {
    return this.sent[this.sent.length - 1];
  }
}

async function open(options = {}) {
  const client = new Client('ws://127.0.0.1:1/', { WebSocket: Socket, ...options });
  await client.connect();
  return { client, socket: Socket.last };
}

test('connects with the noflo subprotocol', async () => {
  const { socket } = await open();
  assert.equal(socket.url, 'ws://127.0.0.1:1/');
  assert.equal(socket.protocol, 'noflo');
});

test('every request carries a fresh requestId and the secret in its payload', async () => {
  const { client, socket } = await open({ secret: 's3cret' });
  client.send('runtime', 'getruntime', {}).catch(() => {});
  client.send('graph', 'addnode', { id: 'a', graph: 'g' }).catch(() => {});
  const [a, b] = socket.sent;
  assert.equal(a.protocol, 'runtime');
  assert.equal(a.command, 'getruntime');
  assert.equal(a.payload.secret, 's3cret');
  assert.equal(b.payload.secret, 's3cret');
  assert.equal(b.payload.id, 'a');
  assert.ok(a.requestId && b.requestId && a.requestId !== b.requestId);
  client.close();
});

test('no secret key when no secret is set', async () => {
  const { client, socket } = await open();
  client.send('runtime', 'getruntime').catch(() => {});
  assert.equal('secret' in socket.lastSent().payload, false);
  client.close();
});

test('replies are matched by responseTo, whatever their order', async () => {
  const { client, socket } = await open();
  const first = client.send('graph', 'addnode', { id: 'a', graph: 'g' });
  const second = client.send('graph', 'addnode', { id: 'b', graph: 'g' });
  const [r1, r2] = socket.sent;
  socket.deliver({ protocol: 'graph', command: 'addnode', payload: { id: 'b', graph: 'g' }, responseTo: r2.requestId });
  socket.deliver({ protocol: 'graph', command: 'addnode', payload: { id: 'a', graph: 'g' }, responseTo: r1.requestId });
  assert.equal((await first).payload.id, 'a');
  assert.equal((await second).payload.id, 'b');
});

test('the reply command may differ from the request command', async () => {
  assert.equal(finalCommand('runtime', 'getruntime'), 'runtime');
  assert.equal(finalCommand('graph', 'addedge'), 'addedge');
  const { client, socket } = await open();
  const p = client.send('runtime', 'getruntime');
  socket.deliver({ protocol: 'runtime', command: 'runtime', payload: { type: 'msgflo' }, responseTo: socket.lastSent().requestId });
  assert.equal((await p).payload.type, 'msgflo');
});

test('component:list collects components until componentsready', async () => {
  const { client, socket } = await open();
  const p = client.send('component', 'list');
  const id = socket.lastSent().requestId;
  socket.deliver({ protocol: 'component', command: 'component', payload: { name: 'x/A' }, responseTo: id });
  socket.deliver({ protocol: 'component', command: 'component', payload: { name: 'x/B' }, responseTo: id });
  socket.deliver({ protocol: 'component', command: 'componentsready', payload: 2, responseTo: id });
  const reply = await p;
  assert.equal(reply.command, 'componentsready');
  assert.deepEqual(reply.parts.map((f) => f.payload.name), ['x/A', 'x/B']);
});

test('fallback: a reply without responseTo goes to the oldest waiting request of its protocol', async () => {
  const { client, socket } = await open();
  const a = client.send('graph', 'addnode', { id: 'a', graph: 'g' });
  const b = client.send('graph', 'addnode', { id: 'b', graph: 'g' });
  const n = client.send('network', 'getstatus', { graph: 'g' });
  socket.deliver({ protocol: 'network', command: 'status', payload: { running: true } });
  socket.deliver({ protocol: 'graph', command: 'addnode', payload: { id: 'a' } });
  socket.deliver({ protocol: 'graph', command: 'addnode', payload: { id: 'b' } });
  assert.equal((await n).payload.running, true);
  assert.equal((await a).payload.id, 'a');
  assert.equal((await b).payload.id, 'b');
});

test('fallback: component:list without responseTo', async () => {
  const { client, socket } = await open();
  const p = client.send('component', 'list');
  socket.deliver({ protocol: 'component', command: 'component', payload: { name: 'x/A' } });
  socket.deliver({ protocol: 'component', command: 'componentsready', payload: 1 });
  assert.equal((await p).parts.length, 1);
});

test('once the runtime echoes requestId, frames without responseTo are broadcasts, not replies', async () => {
  const { client, socket } = await open();
  const seen = [];
  client.on((f) => seen.push(f));
  const first = client.send('graph', 'addnode', { id: 'a', graph: 'g' });
  socket.deliver({ protocol: 'graph', command: 'addnode', payload: { id: 'a' }, responseTo: socket.lastSent().requestId });
  await first;
  let settled = false;
  const second = client.send('graph', 'addnode', { id: 'b', graph: 'g' }).then(() => (settled = true));
  // Another client's edit, broadcast while ours waits.
  socket.deliver({ protocol: 'graph', command: 'addnode', payload: { id: 'remote' } });
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false);
  socket.deliver({ protocol: 'graph', command: 'addnode', payload: { id: 'b' }, responseTo: socket.lastSent().requestId });
  await second;
  assert.deepEqual(seen.map((f) => f.payload.id), ['a', 'remote', 'b']);
});

test('*:error rejects the request with the runtime message, and is not passed to listeners', async () => {
  const { client, socket } = await open();
  const seen = [];
  client.on((f) => seen.push(f));
  const p = client.send('graph', 'addnode', { id: 'a' });
  socket.deliver({ protocol: 'graph', command: 'error', payload: { message: 'No graph specified' }, responseTo: socket.lastSent().requestId });
  await assert.rejects(p, (e) => e instanceof ProtocolError && e.message === 'No graph specified' && e.frame.protocol === 'graph');
  assert.equal(seen.length, 0);
});

test('an error without responseTo rejects the oldest request of its protocol (fallback)', async () => {
  const { client, socket } = await open();
  const p = client.send('component', 'getsource', { name: 'main' });
  socket.deliver({ protocol: 'component', command: 'error', payload: { message: 'not permitted' } });
  await assert.rejects(p, /not permitted/);
});

test('other frames reach every listener; unsubscribe works', async () => {
  const { client, socket } = await open();
  const a = [];
  const b = [];
  client.on((f) => a.push(f.command));
  const off = client.on((f) => b.push(f.command));
  socket.deliver({ protocol: 'network', command: 'data', payload: { data: 1 } });
  off();
  socket.deliver({ protocol: 'msgflo', command: 'status', payload: {} });
  assert.deepEqual(a, ['data', 'status']);
  assert.deepEqual(b, ['data']);
});

test('a listener that throws does not stop the others', async () => {
  const { client, socket } = await open();
  const seen = [];
  const origin = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  const thrown = new Promise((resolve) => process.once('uncaughtException', resolve));
  client.on(() => {
    throw new Error('listener bug');
  });
  client.on((f) => seen.push(f.command));
  socket.deliver({ protocol: 'network', command: 'data', payload: {} });
  assert.deepEqual(seen, ['data']);
  assert.match((await thrown).message, /listener bug/);
  for (const l of origin) process.on('uncaughtException', l);
});

test('a request without reply times out, and a late reply is then only a frame', async () => {
  const { client, socket } = await open({ timeout: 30 });
  const seen = [];
  client.on((f) => seen.push(f.command));
  const p = client.send('network', 'getstatus', { graph: 'g' });
  const id = socket.lastSent().requestId;
  await assert.rejects(p, /no reply to network:getstatus within 30 ms/);
  socket.deliver({ protocol: 'network', command: 'status', payload: {}, responseTo: id });
  assert.deepEqual(seen, ['status']);
  assert.equal(client.pending.size, 0);
});

test('closing rejects what is waiting, and sending afterwards fails at once', async () => {
  const { client, socket } = await open();
  const closed = new Promise((r) => client.onClose(r));
  const p = client.send('runtime', 'getruntime');
  socket.close();
  await assert.rejects(p, /connection closed/);
  await closed;
  await assert.rejects(client.send('runtime', 'getruntime'), /not connected/);
});

test('a socket that never opens rejects connect', async () => {
  class Refused {
    constructor() {
      queueMicrotask(() => {
        this.onerror?.({});
        this.onclose?.({ code: 1006 });
      });
    }
  }
  const client = new Client('ws://127.0.0.1:1/', { WebSocket: Refused });
  await assert.rejects(client.connect(), /cannot connect/);
});

test('garbage frames are ignored', async () => {
  const { client, socket } = await open();
  const seen = [];
  client.on((f) => seen.push(f));
  socket.onmessage({ data: 'not json' });
  socket.onmessage({ data: '42' });
  socket.onmessage({ data: 'null' });
  assert.equal(seen.length, 0);
});

test('removenode: the removeedge frames before the final reply are parts, and reach listeners', async () => {
  const { client, socket } = await open();
  const seen = [];
  client.on((f) => seen.push(f.command));
  const p = client.send('graph', 'removenode', { id: 'b', graph: 'g' });
  const id = socket.lastSent().requestId;
  socket.deliver({ protocol: 'graph', command: 'removeedge', payload: { src: { node: 'a', port: 'out' }, tgt: { node: 'b', port: 'in' }, graph: 'g' }, responseTo: id });
  socket.deliver({ protocol: 'graph', command: 'removenode', payload: { id: 'b', graph: 'g' }, responseTo: id });
  const reply = await p;
  assert.equal(reply.command, 'removenode');
  assert.deepEqual(reply.parts.map((f) => f.command), ['removeedge']);
  assert.deepEqual(seen, ['removeedge', 'removenode']);
});
