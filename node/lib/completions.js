'use strict';
// Handlers' outcomes on their way to the core. They are handed over in one
// native call per turn of the event loop (a microtask queued by the first
// outcome of the turn), so the core's completing task is woken once per
// batch instead of once per message, and nothing waits for a batch to
// fill. The core completes them in the order they were added.
const { call } = require('./errors');

class Completions {
  constructor(core) {
    this._core = core;
    this._clear();
    this._scheduled = false;
  }

  _clear() {
    this._deliveries = [];
    this._outputs = [];
    this._errors = [];
  }

  // outputs: [{port, payload}]; error: the failure's text, or null.
  add(delivery, outputs, error) {
    this._deliveries.push(delivery);
    this._outputs.push(outputs);
    this._errors.push(error);
    if (!this._scheduled) {
      this._scheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  // Hand over what was added (also before stopping).
  flush() {
    this._scheduled = false;
    if (this._deliveries.length === 0) return;
    const [deliveries, outputs, errors] = [this._deliveries, this._outputs, this._errors];
    this._clear();
    try {
      call(() => this._core.completeAllInOrder(deliveries, outputs, errors));
    } catch (e) {
      console.error('msgflo:', e.message);
    }
  }
}

module.exports = { Completions };
