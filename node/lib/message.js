'use strict';
const { call } = require('./errors');
const native = require('./native');

// JSON.stringify writes null for NaN and Infinity; they are marked instead
// and handed to the core as the bare tokens, which its JSON rule refuses.
const NON_FINITE = 'msgflo:non-finite:';
const NON_FINITE_TEXT = /"\\u0000msgflo:non-finite:(NaN|-?Infinity)"/g;
const markNonFinite = (key, v) => (typeof v === 'number' && !Number.isFinite(v) ? '\u0000' + NON_FINITE + v : v);

// JSON if it parses, else the text, else (invalid UTF-8) the Buffer.
function decode(buf) {
  const text = buf.toString('utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    return Buffer.from(text, 'utf8').equals(buf) ? text : buf;
  }
}

function isJsonText(buf) {
  try {
    JSON.parse(buf.toString('utf8'));
    return true;
  } catch (e) {
    return false;
  }
}

// Buffers as they are, anything else as JSON by the core's rule (UTF-8
// unescaped; NaN and Infinity throw INVALID_PAYLOAD and nothing is sent).
function encode(data) {
  if (Buffer.isBuffer(data)) return data;
  if (data instanceof Uint8Array) return Buffer.from(data);
  const value = data === undefined ? null : data;
  // JSON.stringify writes JSON; the only case the core's rule decides is
  // a non-finite number, which JSON.stringify turns into null. Text
  // without null is therefore taken as it is (no native call); text with
  // null is written again with the non-finite numbers marked, and the core
  // judges it.
  const plain = JSON.stringify(value);
  if (plain !== undefined && !plain.includes('null')) return Buffer.from(plain, 'utf8');
  const text = JSON.stringify(value, markNonFinite);
  return call(() => native.jsonPayload(text === undefined ? 'null' : text.replace(NON_FINITE_TEXT, '$1')));
}

class Message {
  constructor(delivery) {
    this._delivery = delivery;
    this.inport = delivery.inport;
    this.payload = delivery.payload;
    this._data = undefined;
  }

  // Parsed JSON, else text, else the Buffer.
  get data() {
    if (this._data === undefined) this._data = decode(this.payload);
    return this._data;
  }

  // Whether the payload is JSON (else `data` is its text or the Buffer).
  get isJson() {
    const d = this.data;
    return !(typeof d === 'string' && d === this.payload.toString('utf8') && !isJsonText(this.payload)) && !Buffer.isBuffer(d);
  }

  get redelivered() {
    return this._delivery.redelivered;
  }

  get settled() {
    return this._delivery.settled;
  }

  ack() {
    call(() => this._delivery.ack());
  }

  nack() {
    call(() => this._delivery.nack());
  }
}

module.exports = { Message, decode, encode };
