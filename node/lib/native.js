'use strict';
// The native addon: msgflo.node when built in the source repository, else
// the prebuilt one for this platform that a packed tarball carries.
const fs = require('fs');
const path = require('path');
const { prebuiltName } = require('./platform');

const root = path.join(__dirname, '..');
const built = path.join(root, 'msgflo.node');
const file = fs.existsSync(built) ? built : path.join(root, prebuiltName());
let addon;
try {
  addon = require(file);
} catch (e) {
  e.message = `msgflo: cannot load the native addon ${path.basename(file)} (in the source repository run \`npm install\` in node/, which needs cargo): ` + e.message;
  throw e;
}

// The core's log lines go to `console` (warn and error to stderr), as
// "msgflo.transport.amqp WARN lost connection ...": warnings and errors by
// default, or what RUST_LOG says; msgflo.initLogging('info') shows more.
const method = { error: 'error', warn: 'warn', info: 'info', debug: 'debug', trace: 'debug' };
addon.forwardLogs(process.env.RUST_LOG ? null : 'warn', ({ level, logger, message }) => {
  console[method[level] || 'log'](`${logger} ${level.toUpperCase()} ${message}`);
});

module.exports = addon;
