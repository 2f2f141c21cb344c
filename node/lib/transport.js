'use strict';
// msgflo-nodejs's transport.getClient(url) / getBroker(url): what
// participants and tests use of them, on the core's transport.

const native = require('./native');
const { wait, call } = require('./errors');
const { Message, encode } = require('./message');

function cb(promise, callback) {
  promise.then((v) => callback && callback(null, v), (e) => callback && callback(e));
}

class Client {
  constructor(address, options) {
    this.address = address;
    this.options = options || {};
    this._core = null;
    this._handlers = new Map();
    this._pumping = false;
  }

  connect(callback) {
    cb(wait(native.CoreClient.connect(this.address)).then((c) => { this._core = c; }), callback);
  }

  disconnect(callback) {
    this._pumping = false;
    if (!this._core) return callback && callback(null);
    cb(wait(this._core.close()), callback);
  }

  // type: 'inqueue' (queue + shadow exchange) or 'outqueue' (exchange).
  createQueue(type, name, options, callback) {
    if (typeof options === 'function') { callback = options; options = {}; }
    const persistent = options && options.persistent === false ? false : undefined;
    cb(wait(this._core.createQueue(type, name, persistent)), callback);
  }

  sendTo(type, name, data, callback) {
    cb(wait(this._core.sendTo(type, name, encode(data))), callback);
  }

  // handler({data, payload}) for every message; ack/nack with ackMessage/nackMessage.
  subscribeToQueue(name, handler, callback) {
    this._handlers.set(name, handler);
    cb(wait(this._core.subscribe(name)).then(() => this._pump()), callback);
  }

  _pump() {
    if (this._pumping) return;
    this._pumping = true;
    (async () => {
      while (this._pumping) {
        const batch = await this._core.recvBatch(256, 500).catch(() => []);
        for (const d of batch) {
          const msg = new Message(d);
          const h = this._handlers.get(d.inport);
          msg.amqp = msg; // the original's handlers check `msg.amqp` on AMQP
          if (h) h(msg);
        }
      }
    })();
  }

  ackMessage(msg) { if (!msg.settled) call(() => msg.ack()); }
  nackMessage(msg) { if (!msg.settled) call(() => msg.nack()); }

  registerParticipant(definition, callback) {
    const envelope = { protocol: 'discovery', command: 'participant', payload: definition };
    cb(wait(this._core.announce(encode(envelope))), callback);
  }
}

class MessageBroker extends Client {
  // Edges as the original's coordinator makes them: {type: 'pubsub', src,
  // tgt} or {type: 'roundrobin', src, tgt, deadletter}.
  addBinding(binding, callback) { this._edges(binding, true, callback); }
  removeBinding(binding, callback) { this._edges(binding, false, callback); }

  _edges(binding, add, callback) {
    const type = binding.type || 'pubsub';
    const steps = [];
    if (type === 'pubsub') {
      steps.push(['pubsub', binding.src, binding.tgt]);
    } else if (type === 'roundrobin') {
      if (binding.src && binding.tgt) steps.push(['roundrobin', binding.src, binding.tgt]);
      if (binding.tgt && binding.deadletter) steps.push(['deadletter', binding.tgt, binding.deadletter]);
    } else {
      const e = new Error('Unsupported binding type: ' + type);
      e.code = 'UNSUPPORTED';
      return callback && callback(e);
    }
    cb(steps.reduce((p, [k, s, t]) => p.then(() => wait(this._core.edge(k, s, t, add))), Promise.resolve()), callback);
  }

  // handler(msg) for every discovery message on the broker (msg.data is
  // the parsed envelope); ack with ackMessage. Several observers each get
  // every message (the original's shared queue split them).
  subscribeParticipantChange(handler, callback) {
    this._handlers.set('fbp', handler);
    cb(wait(this._core.subscribeDiscovery()).then(() => this._pump()), callback);
  }
}

function getClient(address, options) { return new Client(address, options); }
function getBroker(address, options) { return new MessageBroker(address, options); }

module.exports = { Client, MessageBroker, getClient, getBroker };
