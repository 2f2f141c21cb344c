'use strict';
const path = require('path');
let addon;
try {
  addon = require(path.join(__dirname, '..', 'msgflo.node'));
} catch (e) {
  e.message = 'msgflo: native addon not built (run `npm install` in the package, needs cargo): ' + e.message;
  throw e;
}
module.exports = addon;
