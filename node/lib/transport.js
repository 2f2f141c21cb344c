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
  // Pubsub edges. (Roundrobin edges come with the coordinator.)
  addBinding(binding, callback) {
    if (binding.type && binding.type !== 'pubsub') {
      const e = new Error('Unsupported binding type: ' + binding.type);
      e.code = 'UNSUPPORTED';
      return callback && callback(e);
    }
    cb(wait(this._core.bind(binding.src, binding.tgt)), callback);
  }

  removeBinding(binding, callback) {
    cb(wait(this._core.unbind(binding.src, binding.tgt)), callback);
  }
}

function getClient(address, options) { return new Client(address, options); }
function getBroker(address, options) { return new MessageBroker(address, options); }

module.exports = { Client, MessageBroker, getClient, getBroker };
