'use strict';
// The msgflo-nodejs 0.11.1 participant API, on the Rust core.
//
//   new Participant(clientOrBrokerUrl, definition, func, role)
//   func(inport, indata, callback(outport, err, data))
//
// callback(outport, null, data): data is sent on outport, then the input is
// acked (the ack reaches the broker only once the output is confirmed).
// callback(outport, err): the input is nacked (dead-letter route).
// callback(outport, err, data): data is sent, and the input is nacked.
// A throw in func, or an unknown outport, nacks the input and is logged;
// the participant keeps running.

const { EventEmitter } = require('events');
const native = require('./native');
const { wait, call, errorText } = require('./errors');
const { Message, encode } = require('./message');
const { Completions } = require('./completions');

const BATCH = 256;
const POLL_MS = 500;

function brokerUrl(client) {
  if (!client) return undefined;
  if (typeof client === 'string') return client;
  return client.address || client.url || client.broker;
}

// msgflo-nodejs's instantiateDefinition: role, queues (the core's default
// names), hidden:false. The id is the core's once started.
function instantiateDefinition(d, role) {
  const def = JSON.parse(JSON.stringify(d));
  def.role = role;
  const addQueues = (ports) => (ports || []).map((p) => {
    if (p.hidden === undefined) p.hidden = false;
    if (!p.queue && !p.hidden) p.queue = native.defaultQueue(role, String(p.id));
    return p;
  });
  def.inports = addQueues(def.inports);
  def.outports = addQueues(def.outports);
  return def;
}

function findPort(def, kind, id) {
  return (kind === 'inport' ? def.inports : def.outports).find((p) => p.id === id) || null;
}

class Participant extends EventEmitter {
  constructor(client, definition, func, role, options) {
    super();
    this.broker = brokerUrl(client);
    this.func = func;
    this.options = options || {};
    role = role || 'unknown';
    this.definition = instantiateDefinition(definition, role);
    this.running = false;
    this._core = null;
    this._loop = null;
  }

  // Connect, declare, announce, start consuming. callback(err)
  start(callback) {
    const done = callback || ((err) => { if (err) throw err; });
    this._start().then(() => done(null), (err) => done(err));
  }

  async _start() {
    const opts = this.options;
    this._core = await wait(native.CoreParticipant.connect(
      this.definition, this.definition.role, this.broker, opts.prefetch, opts.heartbeat,
    ));
    this.definition.id = this._core.id;
    this._completions = new Completions(this._core);
    this.running = true;
    if (opts.beforeAnnounce) opts.beforeAnnounce(this);
    await wait(this._core.announce());
    this._loop = this._consume();
  }

  stop(callback) {
    const done = callback || (() => {});
    this._stop().then(() => done(null), (err) => done(err));
  }

  async _stop() {
    this.running = false;
    if (!this._core) return;
    this._completions.flush();
    await wait(this._core.stop());
    if (this._loop) await this._loop;
  }

  async _consume() {
    while (this.running) {
      let batch;
      try {
        batch = await this._core.recvBatch(BATCH, POLL_MS);
      } catch (e) {
        if (!this.running) return;
        console.error('msgflo: receiving failed:', e.message);
        continue;
      }
      if (batch.length === 0 && this._core.stopped) return;
      for (const d of batch) this._onDelivery(new Message(d));
    }
  }

  // Hand the handler's outcome to the core, which sends the outputs and
  // acks, or nacks and applies the error-port rule (in message order).
  _onDelivery(msg) {
    let answered = false;
    const complete = (outputs, err) => {
      if (err) console.error('msgflo: %s failed on %s: %s; message nacked', this.definition.role, msg.inport, errorText(err));
      this._completions.add(msg._delivery, outputs, err ? errorText(err) : null);
    };
    const callback = (outport, err, data) => {
      if (answered) {
        // The original acked again (a channel error); we only send.
        if (!err && data !== undefined) {
          try {
            const p = this._emitOut(outport, data);
            if (p) p.catch((e) => console.error('msgflo:', e.message));
          } catch (e) {
            console.error('msgflo:', e.message);
          }
        }
        return;
      }
      answered = true;
      const hasData = data !== undefined && data !== null;
      // callback() with no outport and no data: a sink is done; ack.
      const nothing = (outport === undefined || outport === null) && !hasData;
      let outputs = [];
      if (!nothing && (!err || hasData)) {
        try {
          // Input that was not JSON, handed back as it came: its bytes
          // unchanged (JSON-encoding the text would change the payload).
          const raw = (data === msg.data && !msg.isJson) ? msg.payload : undefined;
          outputs = [this._output(outport, data, raw)];
        } catch (e) {
          return complete([], e);
        }
      }
      complete(outputs, err || null);
    };
    try {
      this.func(msg.inport, msg.data, callback);
    } catch (e) {
      console.error('msgflo: %s threw on %s: %s', this.definition.role, msg.inport, e && e.stack ? e.stack : e);
      if (!answered) {
        answered = true;
        complete([], e);
      }
    }
  }

  // An output for the core: the 'data' event, and the bytes (`raw` when
  // given, else `data` encoded). The core refuses unknown ports.
  _output(outport, data, raw) {
    const port = findPort(this.definition, 'outport', outport);
    if (port) this.emit('data', port.id, data);
    return { port: String(outport), payload: raw || encode(data) };
  }

  // Emit on an outport now (not completing a delivery): 'data' event, and
  // publish when it has a queue. Returns null when done, or a Promise when
  // the core applies backpressure. Throws for an unknown outport.
  _emitOut(outport, data) {
    const port = findPort(this.definition, 'outport', outport);
    if (!port) {
      const e = new Error('role ' + this.definition.role + ' has no outport ' + JSON.stringify(outport));
      e.code = 'UNKNOWN_PORT';
      throw e;
    }
    this.emit('data', port.id, data);
    if (!port.queue) return null;
    const buf = encode(data);
    if (call(() => this._core.trySend(port.id, buf))) return null;
    return wait(this._core.send(port.id, buf));
  }

  // Process data as if it arrived on inport (for sources). callback(err)
  send(inport, data, callback) {
    const done = callback || (() => {});
    this.func(inport, data, (outport, err, outdata) => {
      if (err) return done(err);
      let pending;
      try {
        pending = this._emitOut(outport, outdata);
      } catch (e) {
        return done(e);
      }
      if (pending) pending.then(() => done(null), done);
      else done(null);
    });
  }
}

function startParticipant(library, client, componentName, id, callback) {
  const component = library[componentName];
  if (!component) return callback(new Error('No Participant factory in library for ' + componentName));
  const part = component(client, id);
  part.start((err) => callback(err, part));
}

module.exports = { Participant, instantiateDefinition, startParticipant };
