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

// The text of a handler's failure, for the core's error body: an Error's
// message, else the thrown value as a string.
function errorText(err) {
  return String(err && err.message !== undefined ? err.message : err);
}

class MsgfloError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

module.exports = { fromCore, call, wait, errorText, MsgfloError };
