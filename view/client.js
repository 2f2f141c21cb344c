// A client of the FBP runtime protocol over WebSocket (subprotocol `noflo`),
// used by the live view and testable in node (the WebSocket constructor is
// injected).
//
// send(protocol, command, payload) returns a Promise of the reply. Every
// request carries a `requestId`; a frame whose `responseTo` names it belongs
// to that request. A runtime that does not echo `requestId` is served by a
// fallback: a frame without `responseTo` that has the command expected as the
// reply (or `error`) goes to the oldest waiting request of its protocol. The
// fallback is switched off as soon as the runtime has shown that it echoes
// `responseTo`, so broadcasts (graph edits by other clients) are never taken
// for replies.
//
// A request resolves with its final reply frame; frames that belong to it but
// are not the final one (component:component before componentsready, the
// graph:removeedge frames before graph:removenode) are collected in
// `reply.parts`. `*:error` rejects with an Error carrying `.frame`.
//
// Listeners get every frame except the error frames that rejected a request:
// replies too, so a view can apply its own edits and everybody else's in one
// place (applying a frame twice must be harmless).
//
// The secret is put into every payload and never logged or kept elsewhere.

/** The command that ends a request, when it is not the request's own. */
const FINAL = {
  'runtime:getruntime': 'runtime',
  'runtime:packet': 'packetsent',
  'component:list': 'componentsready',
  'component:getsource': 'source',
  'network:getstatus': 'status',
  'network:start': 'started',
  'network:stop': 'stopped',
  'msgflo:subscribe': 'status',
};

export function finalCommand(protocol, command) {
  return FINAL[`${protocol}:${command}`] ?? command;
}

export class ProtocolError extends Error {
  constructor(frame) {
    const message = frame?.payload?.message ?? `${frame?.protocol}:${frame?.command}`;
    super(String(message));
    this.name = 'ProtocolError';
    this.frame = frame;
  }
}

export class Client {
  /**
   * @param {string} url ws://host:port/
   * @param {object} [options]
   * @param {Function} [options.WebSocket] constructor (default: the global one)
   * @param {string} [options.secret]
   * @param {number} [options.timeout] ms to wait for a reply (default 10000)
   */
  constructor(url, options = {}) {
    this.url = url;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.timeout = options.timeout ?? 10000;
    this.secret = options.secret ?? '';
    this.socket = null;
    this.nextId = 1;
    this.pending = new Map(); // requestId -> request, in send order
    this.listeners = new Set();
    this.closeListeners = new Set();
    this.echoesRequestId = false;
    this.closed = false;
  }

  /** Open the socket; resolves once it is open. */
  connect() {
    return new Promise((resolve, reject) => {
      let opened = false;
      const ws = new this.WebSocket(this.url, 'noflo');
      this.socket = ws;
      ws.onopen = () => {
        opened = true;
        resolve(this);
      };
      ws.onmessage = (event) => this.receive(event.data);
      ws.onerror = () => {
        if (!opened) reject(new Error(`cannot connect to ${this.url}`));
      };
      ws.onclose = (event) => {
        this.closed = true;
        if (!opened) reject(new Error(`cannot connect to ${this.url}`));
        this.failAll(new Error('connection closed'));
        for (const l of this.closeListeners) l(event);
      };
    });
  }

  /** Listen to frames: fn({protocol, command, payload, responseTo?}). Returns an unsubscribe function. */
  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onClose(fn) {
    this.closeListeners.add(fn);
    return () => this.closeListeners.delete(fn);
  }

  send(protocol, command, payload = {}) {
    if (!this.socket || this.closed) return Promise.reject(new Error('not connected'));
    const requestId = `r${this.nextId++}`;
    const body = { ...payload };
    if (this.secret) body.secret = this.secret;
    const frame = { protocol, command, payload: body, requestId };
    return new Promise((resolve, reject) => {
      const request = {
        requestId,
        protocol,
        command,
        final: finalCommand(protocol, command),
        parts: [],
        resolve,
        reject,
        timer: setTimeout(() => {
          this.pending.delete(requestId);
          reject(new Error(`no reply to ${protocol}:${command} within ${this.timeout} ms`));
        }, this.timeout),
      };
      this.pending.set(requestId, request);
      try {
        this.socket.send(JSON.stringify(frame));
      } catch (e) {
        this.settle(request);
        reject(e);
      }
    });
  }

  close() {
    this.closed = true;
    this.failAll(new Error('connection closed'));
    if (this.socket) this.socket.close();
  }

  /** Handle one incoming frame (text). Exposed for tests. */
  receive(text) {
    let frame;
    try {
      frame = JSON.parse(typeof text === 'string' ? text : String(text));
    } catch {
      return; // not ours to interpret; the runtime never sends this
    }
    if (!frame || typeof frame !== 'object' || typeof frame.protocol !== 'string') return;
    const request = this.requestFor(frame);
    if (request) {
      if (frame.command === 'error') {
        this.settle(request);
        request.reject(new ProtocolError(frame));
        return; // the requester handles it
      }
      if (frame.command === request.final) {
        this.settle(request);
        request.resolve({ ...frame, parts: request.parts });
      } else {
        request.parts.push(frame);
      }
    }
    this.emit(frame);
  }

  requestFor(frame) {
    if (frame.responseTo !== undefined && frame.responseTo !== null) {
      this.echoesRequestId = true;
      return this.pending.get(frame.responseTo);
    }
    if (this.echoesRequestId) return undefined;
    for (const r of this.pending.values()) {
      if (r.protocol !== frame.protocol) continue;
      // The oldest waiting request of this protocol, if this frame can end it
      // (or is one of the frames that come before its end).
      if (frame.command === 'error' || frame.command === r.final) return r;
      if (r.command === 'list' && frame.command === 'component') return r;
      return undefined;
    }
    return undefined;
  }

  settle(request) {
    clearTimeout(request.timer);
    this.pending.delete(request.requestId);
  }

  emit(frame) {
    for (const l of this.listeners) {
      try {
        l(frame);
      } catch (e) {
        // A listener's bug must not stop the others; report it where a
        // developer looks, without the frame (it may carry user data).
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  failAll(error) {
    for (const r of [...this.pending.values()]) {
      this.settle(r);
      r.reject(error);
    }
  }
}
