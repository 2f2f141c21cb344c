'use strict';
// Promise API: `for await (const msg of participant)`, explicit ack/nack,
// Buffers for binary payloads, errors with `code`.
//
//   const p = await msgflo.connect({ component: 'Upper', inports: [{ id: 'in' }],
//                                    outports: [{ id: 'out' }] }, 'upper');
//   for await (const msg of p) { await p.send('out', msg.payload); msg.ack(); }

const native = require('./native');
const { wait, call, errorText } = require('./errors');
const { Message, encode } = require('./message');
const { Completions } = require('./completions');
const { instantiateDefinition } = require('./participant');

class AsyncParticipant {
  constructor(core, definition) {
    this._core = core;
    this.definition = definition;
    this._completions = new Completions(core);
  }

  get id() { return this._core.id; }
  get role() { return this._core.role; }
  get broker() { return this._core.broker; }
  get readinessLine() { return this._core.readinessLine; }
  get stopped() { return this._core.stopped; }

  announce() {
    return wait(this._core.announce());
  }

  // Up to `max` messages; waits up to timeoutMs for the first.
  async recvBatch(max = 256, timeoutMs = 500) {
    const batch = await wait(this._core.recvBatch(max, timeoutMs));
    return batch.map((d) => new Message(d));
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      const batch = await this.recvBatch(256, 500);
      if (batch.length === 0 && this._core.stopped) return;
      for (const m of batch) yield m;
    }
  }

  // Buffers as they are, anything else as JSON. Resolves at once unless
  // there is backpressure.
  async send(port, data) {
    const buf = encode(data);
    if (!call(() => this._core.trySend(port, buf))) await wait(this._core.send(port, buf));
  }

  // Serve with an (async) handler returning {outport: data, ...} or nothing.
  // The core completes each message: outputs sent then ack, or on a throw
  // or rejection nack and {"error": message} to an `error` outport if there
  // is one. Serving goes on; resolves when stopped.
  async serve(handler) {
    for await (const msg of this) {
      let outputs = [];
      let error = null;
      try {
        const out = await handler(msg);
        outputs = Object.entries(out || {}).map(([port, data]) => ({ port, payload: encode(data) }));
      } catch (e) {
        error = errorText(e);
      }
      this._completions.add(msg._delivery, outputs, error);
    }
  }

  stop() {
    this._completions.flush();
    return wait(this._core.stop());
  }
}

async function connect(definition, role, options = {}) {
  const def = instantiateDefinition(definition, role);
  const core = await wait(native.CoreParticipant.connect(
    def, role, options.broker, options.prefetch, options.heartbeat,
  ));
  def.id = core.id;
  const p = new AsyncParticipant(core, def);
  if (options.announce !== false) await p.announce();
  return p;
}

module.exports = { AsyncParticipant, connect };
