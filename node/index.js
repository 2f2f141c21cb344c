'use strict';
// msgflo for Node.js on the shared Rust core.
//   msgflo.participant.Participant, msgflo.transport.getClient/getBroker:
//     the msgflo-nodejs 0.11.1 API (drop-in);
//   msgflo.connect(definition, role, options): Promise API, for await;
//   errors carry `err.code` (the core's code).

const participant = require('./lib/participant');
const transport = require('./lib/transport');
const modern = require('./lib/modern');
const { Message } = require('./lib/message');
const native = require('./lib/native');
const errors = require('./lib/errors');

module.exports = {
  participant,
  transport,
  Participant: participant.Participant,
  connect: modern.connect,
  AsyncParticipant: modern.AsyncParticipant,
  Message,
  // Which of the core's log lines reach console: 'debug', 'info', 'warn' (default), ...
  initLogging: (level) => errors.call(() => native.initLogging(level ?? (process.env.RUST_LOG ? undefined : 'warn'))),
};
