'use strict';
// Errors from the core arrive as "[CODE] message"; give them `err.code`.

const PATTERN = /^\[([A-Z_]+)\] ([\s\S]*)$/;

function fromCore(err) {
  if (err && typeof err.message === 'string') {
    const m = PATTERN.exec(err.message);
    if (m) {
      err.code = m[1];
      err.message = m[2];
    }
  }
  return err;
}

// Call fn; rethrow core errors with their code.
function call(fn) {
  try {
    return fn();
  } catch (e) {
    throw fromCore(e);
  }
}

// Await a Promise from the core; rethrow core errors with their code.
async function wait(promise) {
  try {
    return await promise;
  } catch (e) {
    throw fromCore(e);
  }
}

class MsgfloError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

module.exports = { fromCore, call, wait, MsgfloError };
